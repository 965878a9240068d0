"""Speed on CUDA: the training step recorded as a CUDA graph and replayed (graphed_on_cuda). Elsewhere the
step runs as it is."""
import functools
import sys
import warnings

import torch

from plumbing import stops


def graphed_on_cuda(sgd_step, model, loss_fn, optimizer):
    """step(images, labels) -> loss: sgd_step(model, loss_fn, optimizer, images, labels), recorded as a CUDA
    graph and replayed when the model is on CUDA (CudaGraphStep says what that assumes); elsewhere, as is."""
    if next(model.parameters()).device.type == 'cuda':
        return CudaGraphStep(sgd_step, model, loss_fn, optimizer)
    return functools.partial(sgd_step, model, loss_fn, optimizer)


class CudaGraphStep:
    """The training step, recorded as a CUDA graph and replayed: one replay a step, not one launch per op.

    At batch size 10 a step is far too small to keep a GPU busy: launching its kernels one by one from
    Python is what takes the time. A replay runs the recorded kernels on the same memory, so:

    - Steps before a recording run as they are, on a side stream (WARM_UP of them at first, one before
      each later recording). They are real steps, nothing is undone, and they create the optimizer's
      state (momentum, Adam's averages) that the graph then updates in place.
    - A replay reads each batch from fixed input tensors. Only batches of the first batch's shape are
      replayed; another shape (the last, smaller batch of an epoch) runs as it is.
    - A recording bakes in the plain values the step read. Before each replay these are compared with
      the recording's: every optimizer setting (lr, momentum, ...; a tensor setting by identity, since a
      replay reads it where it lies), which parameters require gradients, and which modules are in
      training mode (dropout). When one has changed (an lr scheduler stepped, model.eval()), the step is
      recorded anew; when they change again within MIN_STEPS_BETWEEN_RECORDINGS steps, recording costs
      more than it saves, and training goes on without the graph. Anything else the step reads from
      Python (a layer's attribute such as Dropout.p) is not checked: make a new step after changing it.
    - Only torch.optim.SGD and optimizers created with capturable=True are recorded, and the step must not
      wait for the GPU (no .item(), no printed tensor). Otherwise, or when a recording fails for any other
      reason, training goes on with plain steps, and one line on stderr says why.
    """

    WARM_UP = 3
    MIN_STEPS_BETWEEN_RECORDINGS = 20

    def __init__(self, sgd_step, model, loss_fn, optimizer):
        self.sgd_step, self.model, self.loss_fn, self.optimizer = sgd_step, model, loss_fn, optimizer
        self.steps = 0                  # steps taken
        self.warm_ups_left = self.WARM_UP
        self.shape = None               # the batch shape that is replayed: the first batch's
        self.graph = None               # the recording, once made
        self.settings = None            # the values it baked in
        self.recorded_at = None         # the step it was made at
        self.off_because = None         # why training goes on without the graph, once it does
        self.images = self.labels = self.loss = None    # the recording's inputs and output
        self.side_stream = None

    def __call__(self, images, labels):
        self.shape = self.shape or images.shape
        action, reason = self.next_action(images)
        if reason:
            self.turn_off(reason)
        if action in ('warm-up', 'record'):
            self.drop_recording()
        if action == 'record':
            self.settings, self.recorded_at = baked_in_settings(self.model, self.optimizer), self.steps
            try:
                self.graph = self.record(images, labels)
            except Exception as e:  # noqa: BLE001 -- whatever stops the recording, training goes on without it
                self.turn_off(f'the step could not be recorded ({stops.first_line(stops.innermost_cause(e))})')
                action = 'eager'
        self.steps += 1
        if action == 'warm-up':
            self.warm_ups_left = max(self.warm_ups_left - 1, 0)
            return self.warm_up(images, labels)
        if action == 'eager':
            return self.sgd_step(self.model, self.loss_fn, self.optimizer, images, labels)
        return self.replay(images, labels)

    def next_action(self, images):
        """How to take the next step, and why the graph must be turned off if it must:
        ('warm-up' | 'record' | 'replay' | 'eager', reason or None). Changes nothing."""
        if self.off_because or images.shape != self.shape:
            return 'eager', None
        if self.warm_ups_left:
            return 'warm-up', None
        if self.graph is None:
            reason = why_not_recordable(self.optimizer)
            return ('eager', reason) if reason else ('record', None)
        if not same_settings(baked_in_settings(self.model, self.optimizer), self.settings):
            if self.steps - self.recorded_at < self.MIN_STEPS_BETWEEN_RECORDINGS:
                return 'eager', (f'the optimizer settings or the model mode changed within '
                                 f'{self.MIN_STEPS_BETWEEN_RECORDINGS} steps of the last recording')
            return 'warm-up', None  # then record: a setting may need state that only a real step creates
        return 'replay', None

    def turn_off(self, reason):
        self.off_because = reason
        self.drop_recording()
        print(f'CUDA graph off: {reason}; training goes on with plain steps', file=sys.stderr, flush=True)

    def drop_recording(self):
        self.graph = self.images = self.labels = self.loss = None

    def warm_up(self, images, labels):
        """A real step on a side stream, as PyTorch asks before a recording."""
        self.side_stream = self.side_stream or torch.cuda.Stream()
        self.side_stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side_stream), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*capturable=True.*')  # Adam's note about eager steps
            loss = self.sgd_step(self.model, self.loss_fn, self.optimizer, images, labels)
        torch.cuda.current_stream().wait_stream(self.side_stream)
        return loss

    def record(self, images, labels):
        """The graph of one step on fixed inputs; recording runs nothing, so the replay after it takes the step."""
        self.optimizer.zero_grad(set_to_none=True)  # the gradients will live in the recording's memory
        self.images, self.labels = images.clone(), labels.clone()
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph):
                self.loss = self.sgd_step(self.model, self.loss_fn, self.optimizer, self.images, self.labels)
        finally:
            torch.cuda.set_stream(stream)  # a failed recording can leave its own stream current
        return graph

    def replay(self, images, labels):
        self.images.copy_(images)
        self.labels.copy_(labels)
        self.graph.replay()
        return self.loss.clone()    # the next replay overwrites self.loss


def baked_in_settings(model, optimizer):
    """The plain values a recording made now would bake in: each optimizer setting, which parameters
    require gradients, and which modules are in training mode."""
    settings = [(key, value) for group in optimizer.param_groups for key, value in group.items() if key != 'params']
    settings += [('requires_grad', tuple(p.requires_grad for group in optimizer.param_groups for p in group['params']))]
    return settings + [('training', tuple(module.training for module in model.modules()))]


def same_settings(now, recorded):
    """Tensors compare by identity (a replay reads a tensor where it lies), everything else by value."""
    return len(now) == len(recorded) and all(
        key == old_key and (value is old if isinstance(value, torch.Tensor) or isinstance(old, torch.Tensor)
                            else value == old)
        for (key, value), (old_key, old) in zip(now, recorded))


def why_not_recordable(optimizer):
    """Why this optimizer's step cannot be recorded as a CUDA graph, or None."""
    name = type(optimizer).__name__
    if any(group.get('capturable') is False for group in optimizer.param_groups):
        return f'{name} with capturable=False cannot be recorded (create it with {name}(..., capturable=True))'
    if not isinstance(optimizer, torch.optim.SGD) and not all(group.get('capturable') for group in optimizer.param_groups):
        return f'{name} is not known to be safe to record (only SGD and optimizers with capturable=True are)'
    return None
