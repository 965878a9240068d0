"""The toolbox the training scripts share. Each script holds its own nets, recipe, training loop and step;
what they all need is here, teaching core first and plumbing after:

    the data, whole on the device     load_data, Data.normalize, with_shifted_copies
    its batches                       Batches: `for images, labels in batches:`
    the test accuracy                 predict, test_accuracy, stop_if_diverged
    speed on CUDA                     graphed_on_cuda: the training step recorded as a CUDA graph, replayed
    device                            choose_device, memory_format_for
    flags                             make_parser, parse_args
    going on with a stopped run       resume_point, resume_into (--resume)
    saving and loading                save_outputs (model and picture, with a fallback), load_weights_into
    reading the files                 read_split, through torchvision's dataset classes
    errors and stops                  UserError, Interrupted, STOP (signals), run_as_command
    normalization figures             python common.py stats

The data path is where the speed comes from. Each split is read once through torchvision's dataset class
and kept whole on the device as one uint8 tensor; a batch is an index slice of a fresh random permutation:
no DataLoader, no worker processes, no per-image PIL transform. A batch is converted and normalized as it is
taken, with the same arithmetic as torchvision's ToTensor + Normalize, so uint8 storage costs nothing in
fidelity and keeps even the 5x extended training set small (235 MB instead of 940 MB).

Recompute the normalization figures of data_normalization_calculations.md:

    python common.py stats --dataset mnist
    python common.py stats --dataset fashion-mnist --data-dir /path/to/data
"""
import argparse
import contextlib
import copy
import errno
import functools
import io
import math
import os
import pickle
import signal
import sys
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets import cifar, mnist
from tqdm import tqdm

MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
               't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


@dataclass(frozen=True)
class DatasetInfo:
    cls: type          # torchvision's dataset class: it downloads, checks and parses the files
    folder: str        # where that class looks, under --data-dir
    files: tuple       # what a user without network places in that folder
    mean: tuple        # per channel, of pixel values scaled to [0, 1]
    std: tuple
    classes: tuple


DATASETS = {
    # MNIST: the published recipe normalizes training and test data with the extended training set's
    # figures (data_normalization_calculations.md).
    'mnist': DatasetInfo(datasets.MNIST, 'MNIST/raw', MNIST_FILES, (0.1305,), (0.3081,),
                         tuple(str(d) for d in range(10))),
    # Fashion-MNIST: its own figures, measured the same way (extended training set) with `stats`.
    'fashion-mnist': DatasetInfo(datasets.FashionMNIST, 'FashionMNIST/raw', MNIST_FILES,
                                 (0.2847,), (0.3531,),
                                 ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                                  'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')),
    # CIFAR-10: the walk-through's 0.5/0.5 for every channel.
    'cifar10': DatasetInfo(datasets.CIFAR10, 'cifar-10-batches-py',
                           ('data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5',
                            'test_batch', 'batches.meta (the extracted cifar-10-python.tar.gz)'),
                           (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                           ('plane', 'car', 'bird', 'cat', 'deer',
                            'dog', 'frog', 'horse', 'ship', 'truck')),
}


# ----------------------------------------------------------------------------------------------
# The data, whole on the device

@dataclass
class Split:
    images: torch.Tensor    # uint8, N x C x H x W, on the device
    labels: torch.Tensor    # int64, N, on the device

    def __len__(self):
        return len(self.labels)


@dataclass
class Data:
    name: str
    train: Split
    test: Split
    mean: torch.Tensor      # 1 x C x 1 x 1, on the device
    std: torch.Tensor
    classes: tuple = field(default=())

    def normalize(self, images):
        """uint8 images -> float (torch's default dtype), the arithmetic of ToTensor (x / 255) then Normalize
        ((x - mean) / std)."""
        layout = memory_format_for(images.device)
        return images.to(torch.get_default_dtype(), memory_format=layout).div_(255).sub_(self.mean).div_(self.std)


def load_data(name, data_dir, device, limit=None, extend=False, pad=0):
    """Both splits of a dataset, whole on the device.

    limit: keep the first N images of each split. extend: grow the training split 5x by one-pixel
    shifts. pad: add that many black (0) pixels on every side of each image.
    """
    info = DATASETS[name]
    splits = []
    for train in (True, False):
        images, labels = read_split(name, data_dir, train)
        images, labels = images[:limit], labels[:limit]
        if train and extend:
            images, labels = with_shifted_copies(images), labels.repeat(5)
        if pad:
            images = torch.nn.functional.pad(images, (pad,) * 4)
        splits.append(Split(images.to(device), labels.to(device)))
    mean, std = normalization(name, device)
    return Data(name, *splits, mean=mean, std=std, classes=info.classes)


def normalization(name, device):
    """The dataset's per-channel mean and std, each 1 x C x 1 x 1 on the device, as Data.normalize uses them."""
    info = DATASETS[name]
    channels = (1, -1, 1, 1)
    return (torch.tensor(info.mean, device=device).view(channels),
            torch.tensor(info.std, device=device).view(channels))


def with_shifted_copies(images):
    """The images, then four copies of them moved one pixel right, left, up and down (5x as many);
    the vacated edge is 0.

    Written straight into one preallocated tensor: no intermediate copies, so peak memory is the result.
    """
    n = len(images)
    out = images.new_zeros((5 * n, *images.shape[1:]))
    original, right, left, up, down = out.split(n)
    original.copy_(images)
    right[..., :, 1:] = images[..., :, :-1]
    left[..., :, :-1] = images[..., :, 1:]
    up[..., :-1, :] = images[..., 1:, :]
    down[..., 1:, :] = images[..., :-1, :]
    return out


class Batches:
    """The training split in shuffled batches: `for images, labels in batches:` is one epoch.

    Each pass draws a fresh random order from its own generator (seeded, so a run repeats exactly) and
    takes every image once; a batch is an index slice of that order, normalized as it is taken. A
    progress bar on stderr shows the pass; `position()` says where training is, for an interruption.
    Each batch boundary is where a stop signal takes effect (STOP.check).
    """

    def __init__(self, data, batch_size, seed, epochs, progress=True):
        self.data, self.batch_size, self.epochs, self.progress = data, batch_size, epochs, progress
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0          # passes begun
        self.done = 0           # batches of this pass whose step has finished

    def __len__(self):
        return math.ceil(len(self.data.train) / self.batch_size)

    def __iter__(self):
        self.epoch, self.done = self.epoch + 1, 0
        STOP.training = True  # from now on a stop signal waits for a batch boundary (STOP.check)
        order = self.shuffled_order()
        with tqdm(total=len(self), desc=f'Epoch {self.epoch}/{self.epochs}', unit='batch', leave=False,
                  file=sys.stderr, disable=None if self.progress else True) as bar:
            for start in range(0, len(self.data.train), self.batch_size):
                STOP.check()
                yield self.batch(order[..., start:start + self.batch_size])
                self.done += 1  # the loop asks for the next batch: this one's step has finished
                bar.update()

    def shuffled_order(self):
        """This pass's order: a random permutation of the training images, on the device."""
        train = self.data.train
        return torch.randperm(len(train), generator=self.generator).to(train.labels.device)

    def batch(self, idx):
        """(images, labels) of these training images, normalized."""
        train = self.data.train
        return self.data.normalize(train.images[idx]), train.labels[idx]

    def position(self):
        return f'epoch {max(self.epoch, 1)}/{self.epochs} at batch {self.done}/{len(self)}'


# ----------------------------------------------------------------------------------------------
# The test accuracy, and what the loop checks after each epoch

@torch.no_grad()
def predict(model, data, split=None, batch_size=500):
    """The predicted class of every image of a split (default: the test split), on the device. The model
    runs in eval mode (no dropout), and is left in the mode it was in."""
    split = split or data.test
    was_training = model.training
    model.eval()
    predicted = torch.cat([model(data.normalize(split.images[i:i + batch_size])).argmax(1)
                           for i in range(0, len(split), batch_size)])
    model.train(was_training)
    return predicted


def test_accuracy(model, data):
    """The fraction of the test images the model classifies right."""
    return (predict(model, data) == data.test.labels).float().mean().item()


def stop_if_diverged(mean_loss, epoch):
    """A loss of nan or inf means training has diverged and nothing more can be learned: say so."""
    if not math.isfinite(mean_loss):
        raise UserError(f'training diverged at epoch {epoch} (loss is {mean_loss}); try a smaller --lr')


# ----------------------------------------------------------------------------------------------
# Speed on CUDA: the training step recorded as a CUDA graph and replayed

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
                self.turn_off(f'the step could not be recorded ({first_line(innermost_cause(e))})')
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


def innermost_cause(error):
    """The error that started a chain: a failed recording reports its own error on top of the real one."""
    while error.__context__ is not None:
        error = error.__context__
    return error


# ----------------------------------------------------------------------------------------------
# Device

def choose_device(name='auto'):
    """`auto`: the accelerator torch finds (CUDA, MPS, ...), else the CPU. A named one must exist."""
    if name == 'auto':
        accelerator = getattr(torch, 'accelerator', None)
        if accelerator is not None:
            if accelerator.is_available():
                return torch.device(accelerator.current_accelerator())
            return torch.device('cpu')
        if torch.cuda.is_available():
            return torch.device('cuda')
        if torch.backends.mps.is_available():
            return torch.device('mps')
        return torch.device('cpu')
    available = {'cpu': True,
                 'cuda': torch.cuda.is_available(),
                 'mps': torch.backends.mps.is_available()}[name]
    if not available:
        raise ValueError(f'--device {name}: no {name.upper()} device is available here; try --device auto')
    return torch.device(name)


def memory_format_for(device):
    """channels_last (N x H x W x C in memory) on the CPU: there its convolutions run about 1.5x faster."""
    return torch.channels_last if device.type == 'cpu' else torch.contiguous_format


# ----------------------------------------------------------------------------------------------
# Flags

def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {text}')
    return value


def positive_float(text):
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'must be a finite number above 0, got {text}')
    return value


def non_negative_float(text):
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f'must be a finite number of at least 0, got {text}')
    return value


def seed_number(text):
    value = int(text)
    if not -2 ** 63 <= value < 2 ** 64:
        raise argparse.ArgumentTypeError(f'must be from {-2 ** 63} to {2 ** 64 - 1} (what torch accepts), got {text}')
    return value


def output_path(text):
    """A file that can be written: not a folder, in a folder that exists and takes a new file (tried)."""
    if text.endswith(('/', os.sep)) or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f'{text} is a folder; give a file name in it')
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f'folder {folder} does not exist')
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f'cannot write in folder {folder} ({e.strerror})') from None
    return text


def picture_path(text):
    """An output_path whose extension names a format matplotlib writes (.png, .pdf, .svg, .jpg, ...)."""
    output_path(text)
    extension = os.path.splitext(text)[1].lower().lstrip('.')
    formats = picture_formats()
    if extension not in formats:
        raise argparse.ArgumentTypeError(f'{text}: the extension must name a picture format: .'
                                         + ', .'.join(sorted(formats)))
    return text


def picture_formats():
    """The file formats matplotlib can write here."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    from matplotlib.figure import Figure
    return Figure().canvas.get_supported_filetypes()


# argparse names the type function in its message; these names read well there
positive_int.__name__ = 'integer'
positive_float.__name__ = 'number'
non_negative_float.__name__ = 'number'
seed_number.__name__ = 'integer'
output_path.__name__ = picture_path.__name__ = 'path'

TRAINING_FLAGS = ('epochs', 'lr', 'wd', 'batch_size', 'extend_data', 'seed', 'seeds', 'save_model')


def plain_number(value):
    """40, 0.1, 0.00005 (not 5e-05): as a recipe writes it."""
    return str(value) if isinstance(value, int) else np.format_float_positional(value, trim='0')


def recipe_default(key, recipes):
    """'(default: 0.1)', or '(default: 0.1 for simple, 0.03 for relu)' when the nets' recipes differ."""
    values = {plain_number(recipe[key]) for recipe in recipes.values()}
    if len(values) == 1:
        return f'(default: {values.pop()})'
    return ('(default: ' + ', '.join(f'{plain_number(recipe[key])} for {net}' for net, recipe in recipes.items())
            + ')')


def make_parser(doc, nets, recipes, datasets=('mnist', 'fashion-mnist'), batch_size=10, extend=True):
    """The flags every training script shares. `recipes[net]` holds that net's default epochs, lr, wd."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    first = next(iter(nets))
    parser.add_argument('--net', choices=list(nets), help=f'which network (default: {first})')
    parser.add_argument('--epochs', type=positive_int, help='training epochs ' + recipe_default('epochs', recipes))
    parser.add_argument('--lr', type=positive_float, help='SGD learning rate ' + recipe_default('lr', recipes))
    parser.add_argument('--wd', type=non_negative_float, help='SGD weight decay ' + recipe_default('wd', recipes))
    parser.add_argument('--batch-size', type=positive_int,
                        help=f'training batch size (default: {batch_size})')
    if len(datasets) > 1:
        parser.add_argument('--dataset', choices=datasets, help=f'which data (default: {datasets[0]})')
    if extend:
        parser.add_argument('--extend_data', '--extend-data', action='store_true', default=None,
                            help='add the training images shifted one pixel right, left, up and down '
                                 '(5x the data) (default: off)')
    parser.add_argument('--data-dir', default='./data',
                        help='where the data is, or is downloaded to (default: ./data)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda', 'mps'), default='auto',
                        help='where to train; auto picks an accelerator when there is one (default: auto)')
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument('--seed', type=seed_number, help='random seed (default: 1)')
    seeds.add_argument('--seeds', type=seed_number, nargs='+', metavar='S',
                       help='train one net per seed, all at the same time as one stacked computation (net i '
                            'is the net --seed Si trains); prints each net\'s accuracy and their majority vote '
                            '(default: one net)')
    parser.add_argument('--limit', type=positive_int,
                        help='use only the first N training and N test images, for a quick try (default: all)')
    parser.add_argument('--no-progress', action='store_true', help='never show progress bars (default: off)')
    parser.add_argument('--save-model', metavar='PATH', type=output_path,
                        help='save the model there after training, or when training is stopped (Ctrl-C, kill, '
                             'a closed terminal), with what --resume needs to go on; stopped before its first '
                             'epoch ends, it keeps an existing PATH and saves beside it as NAME.interrupted.EXT '
                             '(default: not saved)')
    parser.add_argument('--plot', metavar='PATH.png', type=picture_path,
                        help='save a picture: curves per epoch, misclassified test images and, for a convnet, '
                             'the first layer\'s learned filters; the extension picks the format (.png, .pdf, '
                             '.svg, .jpg, ...) (default: none)')
    parser.add_argument('--predict', nargs='+', metavar='IMAGE',
                        help='classify your own images (photos or drawings) with the trained or --load-model net: '
                             'the top three classes of each; with --plot, a picture of them (default: none)')
    parser.add_argument('--resume', metavar='PATH',
                        help='go on with a run that --save-model saved (at its end, or when it was stopped): from '
                             'the start of the epoch it stopped in, printing the lines and reaching the result it '
                             'would have had it never stopped (to the last digit on the CPU). Its flags come from '
                             'the file (--epochs may raise the total), and it saves back to PATH unless '
                             '--save-model says otherwise (default: a new run)')
    parser.add_argument('--load-model', metavar='PATH',
                        help='test a saved model on the test set and train nothing; the training flags '
                             '(--epochs, --lr, --wd, --batch-size, --extend_data, --seed, --seeds, --save-model) '
                             'are then a usage error (default: train)')
    script = os.path.basename(sys.modules[nets[first].__module__].__file__)  # who saved a model file
    parser.set_defaults(recipes=recipes, script=script, first_net=first, first_dataset=datasets[0],
                        default_batch_size=batch_size)
    return parser


def parse_args(parser, argv=None):
    """Parse, then fill what the user left out from the chosen net's recipe, and pick the device."""
    args = parser.parse_args(argv)
    if args.load_model:
        given = [flag for flag in TRAINING_FLAGS if getattr(args, flag, None) is not None
                 and getattr(args, flag, None) is not False]  # given, even as 0 (0 == False in Python)
        if given:
            parser.error(f'argument --load-model: it tests a saved model and trains nothing, so '
                         f'{", ".join("--" + flag.replace("_", "-") for flag in given)} would be ignored; drop '
                         f'{"it" if len(given) == 1 else "them"}')
    if args.seeds and len(set(args.seeds)) < len(args.seeds):
        twice = next(seed for seed in args.seeds if args.seeds.count(seed) > 1)
        parser.error(f'argument --seeds: {twice} is given twice; two nets with one seed are the same net')
    if args.seeds and len(args.seeds) == 1:  # one net: the plain path, as --seed
        args.seed, args.seeds = args.seeds[0], None
    args.resume_point = adopt_saved_run(parser, args) if args.resume else None
    if args.save_model and args.plot and os.path.realpath(args.save_model) == os.path.realpath(args.plot):
        parser.error(f'argument --plot: {args.plot} is also the --save-model path; the picture would replace '
                     f'the model')
    args.net = args.net or args.first_net
    args.dataset = getattr(args, 'dataset', None) or args.first_dataset
    args.extend_data = bool(getattr(args, 'extend_data', False))
    for key, value in {**args.recipes[args.net], 'batch_size': args.default_batch_size, 'seed': 1}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    del args.recipes, args.default_batch_size, args.first_net, args.first_dataset
    args.saved_model = read_checkpoint(args.load_model, args) if args.load_model else None  # read once, now
    try:
        args.device = choose_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    return args


# ----------------------------------------------------------------------------------------------
# Going on with a stopped run: --resume

RUN_FLAGS = ('net', 'dataset', 'batch_size', 'lr', 'wd', 'epochs', 'extend_data', 'limit', 'seed')


def resume_point(args, model, optimizer, batches, history):
    """What --resume needs to go on exactly from here, an epoch boundary: the epochs done, a copy of the
    weights, the optimizer's state, the random generators of the batch order and of dropout, the history,
    and the flags that define the run."""
    return {'epoch': len(history['accuracy']),
            'weights': {k: v.detach().clone() for k, v in model.state_dict().items()},
            'optimizer': copy.deepcopy(optimizer.state_dict()),
            'batch_order': batches.generator.get_state(),
            'rng': torch.get_rng_state(),
            'cuda_rng': torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            'history': {key: list(values) for key, values in history.items()},
            'run': {flag: getattr(args, flag) for flag in RUN_FLAGS},
            'device': next(model.parameters()).device.type}


def resume_into(point, model, optimizer, batches, history):
    """Put a resume point back into the model, optimizer, batches, random generators and history; returns
    the first epoch to train (1 without a point)."""
    if point is None:
        return 1
    try:
        model.load_state_dict(point['weights'])
        optimizer.load_state_dict(point['optimizer'])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f'--resume: the saved run does not fit this net or optimizer, edited since? '
                        f'({last_line(e)}); start a new run') from None
    device = next(model.parameters()).device.type
    if point.get('device', device) != device:
        print(f'--resume: the run was on {point["device"]} and goes on on {device}: the same run, but not '
              f'the same numbers to the last digit', file=sys.stderr)
    batches.generator.set_state(point['batch_order'])
    batches.epoch = point['epoch']
    torch.set_rng_state(point['rng'])
    if point['cuda_rng'] and torch.cuda.is_available() and len(point['cuda_rng']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(point['cuda_rng'])
    history.update({key: list(values) for key, values in point['history'].items()})
    return point['epoch'] + 1


def adopt_saved_run(parser, args):
    """--resume PATH: the saved run's flags become this run's. A flag given that contradicts them is a usage
    error; --epochs may raise the total. Returns the resume point, its weights filled in."""
    for other in ('load_model', 'seeds'):
        if getattr(args, other):
            parser.error(f'argument --resume: not allowed with --{other.replace("_", "-")}')
    checkpoint = read_saved(args.resume, '--resume', args.script)
    point = checkpoint.get('resume')
    if point is None:
        raise UserError(f'--resume {args.resume}: it holds weights only (saved by --seeds, or before --resume '
                        f'existed), not the state of a run; --load-model tests it')
    run = point['run']
    for flag, saved in run.items():
        given = getattr(args, flag, None)
        if flag == 'epochs':  # the one flag that may differ: it may raise the total
            continue
        if given is not None and given != saved:
            parser.error(f'argument {flag_name(flag)}: the run in {args.resume} has '
                         f'{flag_as_given(flag, saved)}; drop the flag to go on with it, or start a new run')
        setattr(args, flag, saved)
    args.epochs = args.epochs or run['epochs']
    if args.epochs <= point['epoch']:
        parser.error(f'argument --epochs: the run in {args.resume} has done {point["epoch"]} epochs of '
                     f'{run["epochs"]}; give --epochs N with N above {point["epoch"]} to go on')
    args.save_model = args.save_model or args.resume
    print(f'Going on with the run in {args.resume}: epoch {point["epoch"] + 1} of {args.epochs}', file=sys.stderr)
    if point['weights'] is None:
        point['weights'] = checkpoint['state_dict']
    return point


def flag_name(flag):
    """batch_size -> --batch-size; extend_data keeps the name the published commands use."""
    return '--extend_data' if flag == 'extend_data' else '--' + flag.replace('_', '-')


def flag_as_given(flag, value):
    """--net relu, --extend_data, no --limit: a flag as a command line has it."""
    name = flag_name(flag)
    if value is None or value is False:
        return f'no {name}'
    return name if value is True else f'{name} {plain_number(value) if isinstance(value, float) else value}'


# ----------------------------------------------------------------------------------------------
# Saving and loading

def atomic_write(path, write):
    """write(file) into a temporary file beside `path`, then os.replace: a run stopped midway leaves
    the previous file (or none) at `path`, never half a file, and no temporary file. A stop signal that
    arrives meanwhile waits for the write to end (STOP.saving)."""
    folder = os.path.dirname(os.path.abspath(path))
    with STOP.saving():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
        umask = os.umask(0)
        os.umask(umask)
        try:
            with os.fdopen(fd, 'wb') as f:
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def save_outputs(args, model, data, history, resume=None, stopped=False):
    """Keep what the user asked for: --save-model (not after --load-model, which trains nothing), then --plot.

    A save that fails goes to a fallback file instead, and one line says why and where; after a finished
    run that ends in a UserError (exit status 1) once everything is saved. A run stopped before its first
    epoch ended does not replace an existing model file: it saves beside it (NAME.interrupted.EXT).
    """
    failures = []
    if args.save_model and not args.load_model:
        keep = stopped and not history['accuracy'] and os.path.exists(args.save_model)
        path = beside(args.save_model, 'interrupted') if keep else args.save_model
        checkpoint = model_checkpoint(args, model, data, resume)
        failures += save_with_fallback(path, 'model', lambda f: torch.save(checkpoint, f))
        if keep:
            print(f'Kept {args.save_model}: training stopped before its first epoch ended', file=sys.stderr)
    if args.plot and history['accuracy']:
        failures += save_plot(args.plot, history, model, data)
    if failures and stopped:
        print('\n'.join(failures), file=sys.stderr)
    elif failures:
        raise UserError('\n'.join(failures))


def model_checkpoint(args, model, data, resume=None):
    """The weights with what is needed to use them again: script, net, dataset, normalization; and `resume`,
    what --resume needs to go on with the run. Several nets trained at once (stacked.StackedNets) are saved
    as one state_dict per net, with their seeds."""
    info = DATASETS[data.name]
    checkpoint = {'script': args.script, 'net': args.net, 'dataset': data.name,
                  'mean': list(info.mean), 'std': list(info.std)}
    if hasattr(model, 'seeds'):
        checkpoint.update(seeds=list(model.seeds), state_dicts=model.state_dicts())
    else:
        checkpoint['state_dict'] = {k: v.cpu() for k, v in model.state_dict().items()}
    if resume is not None:
        checkpoint['resume'] = on_the_cpu(resume)
        weights = checkpoint['resume']['weights']
        if all(torch.equal(weights[k], v) for k, v in checkpoint['state_dict'].items()):
            checkpoint['resume']['weights'] = None  # the same as the model's: not saved twice
    return checkpoint


def on_the_cpu(value):
    """A copy of nested dicts and lists of tensors with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: on_the_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_the_cpu(v) for v in value)
    return value


def save_with_fallback(path, what, write):
    """Write `path` (atomic_write) and say so. When that fails, write a new file in the current folder (or
    the system's temporary folder) instead, and return the line that says why and where: [] when all went
    well."""
    try:
        atomic_write(path, write)
    except OSError as e:
        reason = e.strerror or last_line(e)
    else:
        print(f'{what.capitalize()} saved to {path}', file=sys.stderr)
        return []
    stem, extension = os.path.splitext(os.path.basename(path))
    for folder in (os.getcwd(), tempfile.gettempdir()):
        with STOP.saving():  # no empty fallback file is left behind, whatever arrives meanwhile
            try:
                fd, fallback = tempfile.mkstemp(dir=folder, prefix=f'{stem}-saved-', suffix=extension)
            except OSError:
                continue
            os.close(fd)
            try:
                atomic_write(fallback, write)
            except OSError:
                os.unlink(fallback)
                continue
        return [f'could not save the {what} to {path} ({reason}); saved it to {fallback} instead']
    return [f'could not save the {what} to {path} ({reason}), nor to {os.getcwd()} or {tempfile.gettempdir()}']


def beside(path, word):
    """m.pt -> m.interrupted.pt"""
    stem, extension = os.path.splitext(path)
    return f'{stem}.{word}{extension}'


def read_saved(path, flag, script):
    """The file save_outputs saved at `path`, for `flag` (--load-model, --resume): one clear UserError for a
    file that is missing, is not a model, or was saved by another script."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise UserError(f'{flag} {path}: no such file') from None
    except Exception as e:  # noqa: BLE001 -- torch.load raises many kinds for a file that is not a model
        raise UserError(f'{flag} {path}: not a model saved by these scripts ({torch_load_reason(e)})') from None
    if (not isinstance(checkpoint, dict) or not {'script', 'net', 'dataset'} <= checkpoint.keys()
            or not ('state_dict' in checkpoint or {'seeds', 'state_dicts'} <= checkpoint.keys())):
        raise UserError(f'{flag} {path}: not a model saved by these scripts')
    if checkpoint['script'] != script:
        how = f'--net {checkpoint["net"]}' if flag == '--load-model' else f'{flag} {path}'
        raise UserError(f'{flag} {path}: it holds the {checkpoint["net"]!r} net of {checkpoint["script"]}; '
                        f'run {checkpoint["script"]} {how}')
    return checkpoint


def read_checkpoint(path, args):
    """The --load-model file, checked against the flags: the same script, net and dataset."""
    checkpoint = read_saved(path, '--load-model', args.script)
    if checkpoint['net'] != args.net:
        raise UserError(f'--load-model {path}: it holds the {checkpoint["net"]!r} net of {checkpoint["script"]}; '
                        f'run {checkpoint["script"]} --net {checkpoint["net"]}')
    if checkpoint['dataset'] != args.dataset:
        raise UserError(f'--load-model {path}: it was trained on {checkpoint["dataset"]}; '
                        f'add --dataset {checkpoint["dataset"]}')
    return checkpoint


def holds_several_nets(args):
    """Was the --load-model file saved by a run with --seeds? (False without --load-model.)"""
    return args.saved_model is not None and 'state_dicts' in args.saved_model


def load_weights_into(model, state_dict, args):
    """Put weights of the --load-model file (parse_args read it) into `model`, as model.load_state_dict
    does; weights that do not fit are one UserError."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise UserError(f'--load-model {args.load_model}: the weights do not fit the {args.net!r} net '
                        f'({last_line(e)})') from None


def save_plot(path, history, model, data):
    """One picture: loss and test accuracy per epoch (left), up to 25 misclassified test images (right), in
    the format the extension names. Several nets trained at once (stacked.StackedNets): each net's curve and
    their vote's, and the images the vote gets wrong. Returns save_with_fallback's failure lines."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    several = hasattr(model, 'seeds')
    predicted = model.vote(data) if several else predict(model, data)
    wrong = (predicted != data.test.labels).nonzero().flatten()[:25].cpu()
    images = data.test.images[wrong].cpu().permute(0, 2, 3, 1).numpy()  # N x H x W x C, as matplotlib wants
    predicted, labels = predicted[wrong].tolist(), data.test.labels[wrong].tolist()

    filters = first_filters(model)
    fig = plt.figure(figsize=(13 if filters is None else 17, 6), layout='constrained')
    left, right, *rest = fig.subfigures(1, 2 if filters is None else 3,
                                        width_ratios=(1, 1) if filters is None else (1, 1, 0.55))
    if filters is not None:
        draw_filters(rest[0], filters, f'first layer\'s {len(filters)} filters'
                                       + (f' (seed {model.seeds[0]})' if several else ''))
    ax = left.subplots()
    epochs = range(1, len(history['accuracy']) + 1)
    if several:
        for seed, accuracies in zip(history['seeds'], history['per_net']):
            ax.plot(epochs, accuracies, '-', linewidth=1, alpha=0.6, label=f'seed {seed}')
        ax.plot(epochs, history['vote'], 'o-', color='black', label='majority vote')
        ax.legend(loc='lower right', fontsize=8)
    else:
        ax.plot(epochs, history['accuracy'], 'o-', color='tab:blue', label='test accuracy')
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel('test accuracy', color='tab:blue')
    if history['loss']:
        loss_ax = ax.twinx()
        loss_ax.plot(epochs, history['loss'], 's--', color='tab:red', label='training loss')
        loss_ax.set_ylabel('mean training loss', color='tab:red')
    if several:
        ax.set_title(f'{data.name}: {len(history["seeds"])} nets, mean test accuracy {history["accuracy"][-1]:.4f}, '
                     f'vote {history["vote"][-1]:.4f}')
    else:
        ax.set_title(f'{data.name}: test accuracy {history["accuracy"][-1]:.4f}')
    right.suptitle(f'misclassified test images{" (by the vote)" if several else ""} (predicted / true), '
                   f'{len(wrong)} shown')
    for i, cell in enumerate(right.subplots(5, 5).flatten()):
        cell.axis('off')
        if i < len(wrong):
            if images.shape[-1] == 1:
                cell.imshow(images[i].squeeze(-1), cmap='gray')
            else:
                cell.imshow(images[i])
            cell.set_title(f'{data.classes[predicted[i]]} / {data.classes[labels[i]]}', fontsize=8)
    return save_figure(fig, path, 'plot')


def save_figure(fig, path, what):
    """A matplotlib figure saved at `path` in the format its extension names (through save_with_fallback),
    then closed. Returns the failure lines."""
    import matplotlib.pyplot as plt
    picture_format = os.path.splitext(path)[1].lower().lstrip('.')
    failures = save_with_fallback(path, what, lambda f: fig.savefig(f, format=picture_format, dpi=80))
    plt.close(fig)
    return failures


def first_filters(model):
    """The first convolution's learned filters, O x C x kh x kw on the CPU (the first net's, when the model
    holds several), or None for a net without convolutions."""
    for module in model.modules():
        weight = getattr(module, 'weight', None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 4:
            return weight.detach().chunk(len(getattr(model, 'seeds', [1])))[0].float().cpu()
    return None


def draw_filters(subfigure, filters, title):
    """The filters as a grid of small pictures. Grey filters share one scale, white the largest weight, so
    that they can be compared; colour filters are each stretched to the full range."""
    count, channels = filters.shape[:2]
    columns = math.ceil(math.sqrt(count))
    scale = filters.abs().max().item() or 1
    for i, cell in enumerate(subfigure.subplots(math.ceil(count / columns), columns, squeeze=False).flatten()):
        cell.axis('off')
        if i >= count:
            continue
        if channels == 3:
            f = filters[i].permute(1, 2, 0)
            cell.imshow(((f - f.min()) / ((f.max() - f.min()) or 1)).numpy())
        else:
            cell.imshow(filters[i, 0].numpy(), cmap='gray', vmin=-scale, vmax=scale)
    subfigure.suptitle(title)


# ----------------------------------------------------------------------------------------------
# Reading the files, through torchvision

def read_split(name, data_dir, train):
    """One split through torchvision's class, as (uint8 N x C x H x W, int64 N) CPU tensors.

    Looks for the files first and downloads only when they are missing (a placed cifar-10-python.tar.gz is
    extracted without a download). torchvision's own messages are held back, so that stdout holds nothing
    but results and a failure is one line (a UserError) that names the real cause.
    """
    info = DATASETS[name]
    where = os.path.join(data_dir, info.folder)
    try:
        ds = info.cls(data_dir, train=train, download=False)
    except PermissionError as e:
        raise UserError(f'cannot read {e.filename or where} (permission denied)') from None
    except RuntimeError as e:
        if 'not found' not in str(e).lower():  # the files are there, but do not parse
            raise UserError(damaged_file_message(info, where, train, e)) from None
        if os.path.isdir(where) and not os.access(where, os.R_OK | os.X_OK):
            raise UserError(f'cannot read the folder {where} (permission denied)') from None
        corrupt = corrupt_cifar_file(where) if info.cls is datasets.CIFAR10 else None
        if corrupt:
            raise UserError(f'{corrupt} is damaged (its md5 sum is not CIFAR-10\'s); delete it and run again '
                            f'to download it anew') from None
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its progress bars still go to stderr
                ds = info.cls(data_dir, train=train, download=True)
        except PermissionError as e:
            raise UserError(f'{name} is missing in {where}, and cannot be downloaded there: cannot write '
                            f'{e.filename or where} (permission denied)') from None
        except (RuntimeError, OSError) as e:  # URLError is an OSError
            raise UserError(f'{name} is missing or incomplete in {where} and could not be downloaded '
                            f'({last_line(e)}). Place {", ".join(info.files)} there, or point '
                            f'--data-dir to a folder that has {info.folder}/') from None
    except (AssertionError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise UserError(damaged_file_message(info, where, train, e)) from None
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # N x H x W (x C)
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    if len(images) != len(labels):
        raise UserError(length_mismatch_message(info, where, train, len(images), len(labels)))
    return images.contiguous(), labels


def damaged_file_message(info, where, train, error):
    """The message for files that exist but do not parse, naming the file where torchvision's readers can."""
    path = where
    if issubclass(info.cls, datasets.MNIST):
        prefix = 'train' if train else 't10k'
        for file, reader in ((f'{prefix}-images-idx3-ubyte', mnist.read_image_file),
                             (f'{prefix}-labels-idx1-ubyte', mnist.read_label_file)):
            try:
                reader(os.path.join(where, file))
            except Exception:  # noqa: BLE001 -- any failure to parse marks this file
                path = os.path.join(where, file)
                break
    return (f'{path} is damaged or truncated ({last_line(error)}); '
            f'delete it and run again to download it anew')


def corrupt_cifar_file(where):
    """The first CIFAR-10 file in `where` that is there but fails torchvision's md5 check, or None."""
    cls = datasets.CIFAR10
    for filename, md5 in cls.train_list + cls.test_list + [(cls.meta['filename'], cls.meta['md5'])]:
        path = os.path.join(where, filename)
        if os.path.isfile(path) and not cifar.check_integrity(path, md5):
            return path
    return None


def length_mismatch_message(info, where, train, n_images, n_labels):
    if issubclass(info.cls, datasets.MNIST):
        prefix = 'train' if train else 't10k'
        return (f'{os.path.join(where, prefix + "-images-idx3-ubyte")} holds {n_images} images but '
                f'{os.path.join(where, prefix + "-labels-idx1-ubyte")} holds {n_labels} labels; '
                f'one of them is damaged: delete both and run again to download them anew')
    return (f'the {"training" if train else "test"} files in {where} hold {n_images} images but {n_labels} '
            f'labels; delete them and run again to download them anew')


# ----------------------------------------------------------------------------------------------
# Errors: one line on stderr and an exit status, never a traceback

class UserError(Exception):
    """A problem the user can fix (data, a model file, divergence, a failed save); its message is what we print."""


class Stopped(KeyboardInterrupt):
    """A stop asked for by a signal (Ctrl-C is SIGINT; SIGPIPE stands for a closed stdout)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupted(Exception):
    """Training stopped early: the message says how and where, `signum` gives the exit status."""

    def __init__(self, stop, batches, history):
        self.signum = getattr(stop, 'signum', signal.SIGINT)  # a plain KeyboardInterrupt is Ctrl-C
        last = (f'{history["accuracy"][-1]:.4f} after epoch {len(history["accuracy"])}' if history['accuracy']
                else 'none yet')
        super().__init__(f'{how_stopped(self.signum)} in {batches.position()}; last test accuracy: {last}')


def how_stopped(signum):
    return {signal.SIGINT: 'interrupted', signal.SIGPIPE: 'stopped (standard output was closed)'}.get(
        signum, f'stopped by {signal.Signals(signum).name}')


class StopRequests:
    """What Ctrl-C (SIGINT), kill (SIGTERM), a closed terminal (SIGHUP) or a closed stdout do while
    run_as_command runs a script. Once training has begun, a stop waits for a safe point: the next batch
    boundary (Batches calls check()), the end of a save, or the end of the script; the same signal again
    stops at once. Before training, nothing is lost by stopping at once. A signal that was ignored when
    the script started (nohup, `cmd &`) stays ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signum = None          # the stop asked for and not yet taken
        self.training = False       # has training begun?
        self.writing = 0            # saves under way

    def install(self):
        """Take over the stop signals that are not ignored; returns their handlers, for restore()."""
        self.signum, self.training, self.writing = None, False, 0
        return {signum: signal.signal(signum, self.request) for signum in self.SIGNALS
                if signal.getsignal(signum) is not signal.SIG_IGN}

    def restore(self, handlers):
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        self.signum, self.training = None, False

    def request(self, signum, frame=None):
        if self.writing or (self.training and self.signum is None):
            self.signum = self.signum or signum
            return
        raise Stopped(signum)

    def check(self):
        """At a safe point: stop here if a stop was asked for."""
        if self.signum is not None:
            raise Stopped(self.signum)

    @contextlib.contextmanager
    def saving(self):
        self.writing += 1
        try:
            yield
        finally:
            self.writing -= 1


STOP = StopRequests()


class ClosedPipeGuard(io.TextIOBase):
    """sys.stdout or sys.stderr for run_as_command. When the reader goes away (`... | head -1`, a closed
    terminal), later output goes to /dev/null instead of raising; for stdout, that asks for a stop (as
    SIGPIPE), taken at the next safe point."""

    GONE = (errno.EPIPE, errno.EIO)  # a closed pipe; a terminal that hung up

    def __init__(self, stream, asks_to_stop):
        super().__init__()
        self.stream, self.asks_to_stop = stream, asks_to_stop

    def write(self, text):
        try:
            return self.stream.write(text)
        except OSError as e:
            if e.errno not in self.GONE:
                raise
            self.reader_gone()
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except OSError as e:
            if e.errno not in self.GONE:
                raise
            self.reader_gone()

    def fileno(self):
        return self.stream.fileno()

    @property
    def encoding(self):
        return self.stream.encoding

    def reader_gone(self):
        os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())  # Python's own flush at exit too
        if self.asks_to_stop and STOP.signum is None:
            STOP.signum = signal.SIGPIPE


def run_as_command(main):
    """Run a script's main() as a command. A UserError is one line on stderr and exit status 1. A stop
    (Ctrl-C, SIGTERM, SIGHUP, a closed stdout) says where training was and exits with 128 + the signal's
    number (130, 143, 129, 141), after main() has saved what it was asked to."""
    handlers, stdout, stderr = STOP.install(), sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ClosedPipeGuard(stdout, asks_to_stop=True), ClosedPipeGuard(stderr, asks_to_stop=False)
    message, status = None, 0
    try:
        try:
            main()
            sys.stdout.flush()
        except UserError as e:
            message, status = str(e), 1
        except Interrupted as e:
            message, status = str(e), 128 + e.signum
        except KeyboardInterrupt as e:  # before training began: nothing to save
            signum = getattr(e, 'signum', signal.SIGINT)
            message, status = how_stopped(signum), 128 + signum
        for signum in handlers:  # the last words are not cut short
            signal.signal(signum, signal.SIG_IGN)
        if not status and STOP.signum is not None:  # asked for after the last batch: all is done and saved
            message, status = f'{how_stopped(STOP.signum)} after training had finished', 128 + STOP.signum
        if message:
            print(message, file=sys.stderr, flush=True)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        STOP.restore(handlers)
    if status:
        sys.exit(status)


def torch_load_reason(error):
    """The line of a torch.load error that says what was wrong, not its advice on how to load anyway."""
    text = str(error)
    if 'WeightsUnpickler error:' in text:
        after = text.split('WeightsUnpickler error:', 1)[1].strip().splitlines()
        if after:
            return after[0].strip()
    return first_line(error)


def first_line(error):
    """The first non-empty line of an error's message (its type's name when the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def last_line(error):
    """The last non-empty line of an error's message (its type's name when the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[-1].strip() if lines else type(error).__name__


# ----------------------------------------------------------------------------------------------
# python common.py stats

def mean_std(images):
    """Per-channel mean and (population) standard deviation of uint8 images scaled to [0, 1]."""
    x = images.double().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).tolist(), x.std(1, unbiased=False).tolist()


def stats(argv=None):
    parser = argparse.ArgumentParser(prog='common.py stats', description='Normalization figures of a dataset.')
    parser.add_argument('--dataset', choices=list(DATASETS), default='mnist', help='(default: mnist)')
    parser.add_argument('--data-dir', default='./data', help='(default: ./data)')
    args = parser.parse_args(argv)
    train_images, _ = read_split(args.dataset, args.data_dir, train=True)
    test_images, _ = read_split(args.dataset, args.data_dir, train=False)
    rows = [('training', train_images), ('extended training', with_shifted_copies(train_images)),
            ('test', test_images)]
    for label, images in rows:
        mean, std = mean_std(images)
        figures = ', '.join(f'mean {m:.4f} std {s:.4f}' for m, s in zip(mean, std))
        print(f'{args.dataset} {label} set ({len(images)} images): {figures}')


if __name__ == '__main__':
    if sys.argv[1:2] != ['stats']:
        sys.exit('usage: python common.py stats [--dataset NAME] [--data-dir DIR]')
    run_as_command(lambda: stats(sys.argv[2:]))
