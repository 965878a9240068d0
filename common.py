"""What the training scripts share: the data, whole on the device, its batches, the test accuracy, and the
device. Each script holds its own nets, recipe, training loop and step; everything a flag switches on
(saving, --resume, --seeds, --predict, --plot, stops, the CUDA graph) is in plumbing/, which you need not
open to follow a run.

The data path is where the speed comes from. Each split is read once through torchvision's dataset class
(data_files.read_split) and kept whole on the device as one uint8 tensor (load_data); a batch is an index slice of a
fresh random permutation (Batches): no DataLoader, no worker processes, no per-image PIL transform. A batch
is normalized as it is taken, with the arithmetic of torchvision's ToTensor + Normalize (Data.normalize),
so uint8 storage costs nothing in fidelity and keeps even the 5x extended training set small (235 MB
instead of 940 MB).

The normalization figures of data_normalization_calculations.md: `python common.py stats --dataset mnist`.
"""
import argparse
import contextlib
import math
import os
import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from data_files import DATASETS, UserError, read_split  # noqa: F401 -- (the scripts know them as common's)


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
    fixed_order: bool = False   # True: Batches walks the training split in the same order every epoch (--book)

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
    A list of seeds (--seeds: several nets trained as one) draws one order per seed, and batch i holds
    batch i of each: images B x K x C x H x W, labels B x K. Data with `fixed_order` (--book) is walked as
    network3 walks it: in the order it is stored, every epoch, leaving out a last batch that is not full.
    """

    at_batch_boundary = None  # while a script runs as a command, where plumbing.stops takes a stop signal

    def __init__(self, data, batch_size, seed, epochs, progress=True):
        self.data, self.batch_size, self.epochs, self.progress = data, batch_size, epochs, progress
        self.generators = [torch.Generator().manual_seed(s) for s in (seed if isinstance(seed, list) else [seed])]
        self.epoch = 0          # passes begun
        self.done = 0           # batches of this pass whose step has finished

    def __len__(self):
        if self.data.fixed_order:
            return len(self.data.train) // self.batch_size
        return math.ceil(len(self.data.train) / self.batch_size)

    def __iter__(self):
        self.epoch, self.done = self.epoch + 1, 0
        order = self.shuffled_order()
        threads = torch.get_num_threads()  # a training step may keep fewer for itself (plumbing/speed.py)
        with tqdm(total=len(self), desc=f'Epoch {self.epoch}/{self.epochs}', unit='batch', leave=False,
                  file=sys.stderr, disable=None if self.progress else True) as bar:
            try:
                for start in range(0, len(self) * self.batch_size, self.batch_size):
                    if self.at_batch_boundary:
                        self.at_batch_boundary()
                    yield self.batch(order[start:start + self.batch_size])
                    self.done += 1  # the loop asks for the next batch: this one's step has finished
                    bar.update()
            finally:
                torch.set_num_threads(threads)  # the test pass after it gets every core back

    def shuffled_order(self):
        """This pass's order, on the device: a random permutation of the training images, or with fixed_order
        the stored order (N x K: one per seed)."""
        train = self.data.train
        orders = [torch.arange(len(train)) if self.data.fixed_order else torch.randperm(len(train), generator=g)
                  for g in self.generators]
        return (orders[0] if len(orders) == 1 else torch.stack(orders, 1)).to(train.labels.device)

    def batch(self, idx):
        """(images, labels) of these training images, normalized."""
        train = self.data.train
        images = self.data.normalize(train.images[idx.flatten()])  # (idx B x K: one gather for all the nets)
        return images.view(*idx.shape, *images.shape[1:]), train.labels[idx]

    def position(self):
        return f'epoch {max(self.epoch, 1)}/{self.epochs} at batch {self.done}/{len(self)}'


# ----------------------------------------------------------------------------------------------
# The test accuracy, and what the loop checks after each epoch

@contextlib.contextmanager
def evaluating(model):
    """The model in eval mode (no dropout) while the block runs, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(model, data, split=None, batch_size=500):
    """The predicted class of every image of a split (default: the test split), on the device, in eval mode."""
    split = split or data.test
    with evaluating(model):
        return torch.cat([model(data.normalize(split.images[i:i + batch_size])).argmax(1)
                          for i in range(0, len(split), batch_size)])


class Accuracy(float):
    """A test accuracy that carries more of the same test pass: several nets' (the float is their mean; `per_net`,
    each net's, and `vote`, their majority vote's) or --book's `validation` accuracy (for several nets, itself an
    Accuracy). It prints as the epoch line shows it: `0.9812 (mean of 3 nets; min 0.9800, max 0.9830)`,
    `0.9876, validation 0.9880`."""

    def __new__(cls, value, seeds=None, per_net=None, vote=None, validation=None):
        self = super().__new__(cls, value)
        self.seeds, self.per_net, self.vote, self.validation = seeds, per_net, vote, validation
        return self

    def __format__(self, spec):
        text = f'{float(self):{spec}}'
        if self.per_net:
            text += (f' (mean of {len(self.per_net)} nets; min {min(self.per_net):{spec}}, '
                     f'max {max(self.per_net):{spec}})')
        if self.validation is not None:
            text += f', validation {float(self.validation):{spec}}'
        return text


def test_accuracy(model, data):
    """The fraction of the test images the model classifies right. (Several nets trained as one answer
    for themselves: each net's, and their vote's; data with a validation split, --book, gives both.)"""
    if hasattr(data, 'test_accuracy'):
        return data.test_accuracy(model)
    if nets_in(model) > 1:
        return model.test_accuracy(data)
    return (predict(model, data) == data.test.labels).float().mean().item()


def nets_in(model):
    """How many nets the model is: 1, or one per seed for --seeds' nets trained as one (plumbing/stacked.py)."""
    return len(getattr(model, 'seeds', [None]))


DIVERGED = 1e6  # a mean loss above this is no net learning: chance is about 2.3 (cross-entropy) or below 1


class Diverged(UserError):
    """Training has diverged: its loss is nan, inf, or above DIVERGED."""


def stop_if_diverged(mean_loss, epoch):
    """A loss of nan or inf, or one grown past any a learning net has (DIVERGED), means training has diverged
    and nothing more can be learned: say so."""
    if not mean_loss <= DIVERGED:  # (nan compares false with every number)
        raise Diverged(f'training diverged at epoch {epoch} (loss is {mean_loss:.3g}); try a smaller --lr')


# ----------------------------------------------------------------------------------------------
# Device

def choose_device(name='auto'):
    """`auto`: the accelerator torch finds (CUDA, MPS, ...), else the CPU. A named one must exist."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == 'auto':
        accelerator = getattr(torch, 'accelerator', None)  # (an older torch has none: CUDA, then MPS)
        if accelerator is not None:
            return torch.device(accelerator.current_accelerator() if accelerator.is_available() else 'cpu')
        return torch.device('cuda' if cuda else 'mps' if mps else 'cpu')
    if not {'cpu': True, 'cuda': cuda, 'mps': mps}[name]:
        raise ValueError(f'--device {name}: no {name.upper()} device is available here; try --device auto')
    return torch.device(name)


def memory_format_for(device):
    """channels_last (N x H x W x C in memory) on the CPU: there its convolutions run about 1.5x faster."""
    return torch.channels_last if device.type == 'cpu' else torch.contiguous_format

# ----------------------------------------------------------------------------------------------
# python common.py stats

def mean_std(images):
    """Per-channel mean and (population) standard deviation of uint8 images scaled to [0, 1]."""
    x = images.double().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return x.mean(1).tolist(), x.std(1, unbiased=False).tolist()


def stats(argv=None):
    parser = argparse.ArgumentParser(prog='common.py', description='What the training scripts share.')
    command = parser.add_subparsers(dest='command', required=True, metavar='stats')
    figures = command.add_parser('stats', description='Normalization figures of a dataset.',
                                 help='the normalization figures of a dataset')
    figures.add_argument('--dataset', choices=list(DATASETS), default='mnist', help='(default: mnist)')
    figures.add_argument('--data-dir', default='./data', help='(default: ./data)')
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
    try:
        stats(sys.argv[1:])
        sys.stdout.flush()
    except UserError as e:  # one line, never a traceback
        sys.exit(str(e))
    except KeyboardInterrupt:  # Ctrl-C: as the training scripts say it
        print('interrupted', file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `| head`: the reader has gone, and has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's own flush at exit too)
        sys.exit(0)
