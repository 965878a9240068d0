"""CUDA only (run where a GPU is present): the graphed training step takes the same steps as plain ones,
under a stateful optimizer and a learning-rate schedule too, and steps aside when it cannot."""
import functools

import pytest
import torch
import torch.nn.functional as F

import common
import pytorch_mnist_convnet
from plumbing import cuda_graph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.fixture(autouse=True)
def deterministic(monkeypatch):
    """cuDNN's deterministic kernels, so that graphed and plain steps can agree to float32 precision."""
    monkeypatch.setattr(torch.backends.cudnn, 'deterministic', True)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)


@pytest.fixture
def recordings(monkeypatch):
    """The step numbers at which CudaGraphStep records."""
    steps = []
    record = cuda_graph.CudaGraphStep.record

    def spy(self, images, labels):
        steps.append(self.steps)
        return record(self, images, labels)

    monkeypatch.setattr(cuda_graph.CudaGraphStep, 'record', spy)
    return steps


@pytest.fixture(scope='module')
def cuda_data(data_dir):
    return common.load_data('mnist', data_dir, torch.device('cuda'), limit=95)  # 9 full batches and 5


def trained(data, graphed, optimizer_for, scheduler_for=None, after_step=None,
            sgd_step=pytorch_mnist_convnet.sgd_step, steps=50):
    """The relu net after `steps` steps at batch 10, taken through the CUDA graph or plainly. The scheduler,
    if any, steps after every step; so does after_step(optimizer, i). Returns the parameters and the step."""
    torch.manual_seed(0)
    model = pytorch_mnist_convnet.relu().cuda()
    optimizer = optimizer_for(model)
    scheduler = scheduler_for(optimizer) if scheduler_for else None
    args = (sgd_step, model, F.cross_entropy, optimizer)
    step = cuda_graph.CudaGraphStep(*args) if graphed else functools.partial(*args)
    batches = common.Batches(data, 10, seed=0, epochs=1, progress=False)
    taken = 0
    while taken < steps:
        for images, labels in batches:
            step(images, labels)
            if scheduler:
                scheduler.step()
            if after_step:
                after_step(optimizer, taken)
            taken += 1
            if taken == steps:
                break
    torch.cuda.synchronize()
    return [p.detach().cpu() for p in model.parameters()], step


def same_training(data, optimizer_for, **kwargs):
    """Train plainly, then through the graph: both end with the same parameters. Returns the graph step."""
    eager, _ = trained(data, False, optimizer_for, **kwargs)
    graphed, step = trained(data, True, optimizer_for, **kwargs)
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(a, b)
    return step


def test_graph_with_weight_decay(cuda_data, recordings):
    step = same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.03, weight_decay=5e-5))
    assert step.off_because is None and recordings == [3]


def test_graph_with_momentum(cuda_data, recordings):
    step = same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9))
    assert step.off_because is None and recordings == [3]


def test_graph_with_a_step_lr_schedule(cuda_data, recordings):
    step = same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
                         scheduler_for=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=24, gamma=0.5))
    # the lr halves after steps 24 and 48: a real step, then a new recording (step 49 is a batch of 5)
    assert step.off_because is None and recordings == [3, 25]


def test_graph_when_momentum_is_switched_on(cuda_data, recordings):
    """The momentum buffer does not exist until a step with momentum: a real step creates it first."""
    def switch_on(optimizer, i):
        if i == 29:
            optimizer.param_groups[0]['momentum'] = 0.9

    step = same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.03), after_step=switch_on)
    assert step.off_because is None and recordings == [3, 31]


def test_graph_off_for_a_schedule_that_changes_every_step(cuda_data, capsys):
    step = same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
                         scheduler_for=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.98))
    assert step.off_because and 'CUDA graph off' in capsys.readouterr().err


def test_graph_with_capturable_adam(cuda_data, recordings):
    step = same_training(cuda_data, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True))
    assert step.off_because is None and recordings == [3]


def test_graph_off_for_plain_adam(cuda_data, capsys):
    step = same_training(cuda_data, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3))
    assert 'capturable=False' in step.off_because
    assert capsys.readouterr().err.startswith('CUDA graph off: Adam with capturable=False')


def test_graph_off_when_the_step_waits_for_the_gpu(cuda_data, capsys):
    """A learner's step that reads a value (.item()) cannot be recorded: plain steps, the same training."""
    def sgd_step_that_checks(model, loss_fn, optimizer, images, labels):
        loss = pytorch_mnist_convnet.sgd_step(model, loss_fn, optimizer, images, labels)
        assert loss.item() < 1e6
        return loss

    step = same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.03),
                         sgd_step=sgd_step_that_checks)
    assert step.off_because.startswith('the step could not be recorded')
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith('CUDA graph off: the step could not be recorded (')
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


def test_script_on_cuda(data_dir, monkeypatch, capsys):
    replays = []
    replay = cuda_graph.CudaGraphStep.replay
    monkeypatch.setattr(cuda_graph.CudaGraphStep, 'replay',
                        lambda self, *batch: replays.append(1) or replay(self, *batch))
    _, _, history = pytorch_mnist_convnet.main(['--device', 'cuda', '--net', 'final', '--data-dir', str(data_dir),
                                                '--epochs', '3', '--no-progress'])
    assert history['loss'][-1] < history['loss'][0]
    assert len(replays) == 3 * 30 - 3  # 30 batches an epoch: all but the three warm-up steps
    assert 'CUDA graph off' not in capsys.readouterr().err
