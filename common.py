"""What every script of the collection shares: flags, device, data, the training loop, the printed lines.

The data path is the whole speed story. Each split is read once through torchvision's dataset class,
kept whole on the device as one uint8 tensor, and batches are index slices of a fresh random permutation:
no DataLoader, no worker processes, no per-image PIL transform. A batch is converted and normalized as
it is taken, with the same arithmetic as torchvision's ToTensor + Normalize, so uint8 storage costs
nothing in fidelity and keeps even the 5x extended training set small (235 MB instead of 940 MB).

Recompute the normalization figures of data_normalization_calculations.md:

    python common.py stats --dataset mnist
    python common.py stats --dataset fashion-mnist --data-dir /path/to/data
"""
import argparse
import contextlib
import io
import math
import os
import pickle
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
from torchvision import datasets
from torchvision.datasets import mnist
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


class UserError(Exception):
    """A problem the user can fix (data, a model file, divergence); its message is the one line we print."""


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


def writable_path(text):
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f'folder {folder} does not exist')
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f'{text} is a folder; give a file name')
    return text


# argparse names the type function in its message; these names read well there
positive_int.__name__ = 'integer'
positive_float.__name__ = 'number'
non_negative_float.__name__ = 'number'
writable_path.__name__ = 'path'


def make_parser(doc, nets, recipes, datasets=('mnist', 'fashion-mnist'), batch_size=10, extend=True):
    """The flags every training script shares. `recipes[net]` holds that net's default epochs, lr, wd."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    first = next(iter(nets))

    def per_net(key):
        values = {recipes[n][key] for n in nets}
        if len(values) == 1:
            return f'(default: {values.pop()})'
        return '(default: ' + ', '.join(f'{recipes[n][key]} for {n}' for n in nets) + ')'

    parser.add_argument('--net', choices=list(nets), default=first, help=f'which network (default: {first})')
    parser.add_argument('--epochs', type=positive_int, help='training epochs ' + per_net('epochs'))
    parser.add_argument('--lr', type=positive_float, help='SGD learning rate ' + per_net('lr'))
    parser.add_argument('--wd', type=non_negative_float, help='SGD weight decay ' + per_net('wd'))
    parser.add_argument('--batch-size', type=positive_int, default=batch_size,
                        help=f'training batch size (default: {batch_size})')
    if len(datasets) > 1:
        parser.add_argument('--dataset', choices=datasets, default=datasets[0],
                            help=f'which data (default: {datasets[0]})')
    else:
        parser.set_defaults(dataset=datasets[0])
    if extend:
        parser.add_argument('--extend_data', '--extend-data', action='store_true',
                            help='add the training images shifted one pixel right, left, up and down '
                                 '(5x the data) (default: off)')
    else:
        parser.set_defaults(extend_data=False)
    parser.add_argument('--data-dir', default='./data',
                        help='where the data is, or is downloaded to (default: ./data)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda', 'mps'), default='auto',
                        help='where to train; auto picks an accelerator when there is one (default: auto)')
    parser.add_argument('--seed', type=int, default=1, help='random seed (default: 1)')
    parser.add_argument('--limit', type=positive_int,
                        help='use only the first N training and N test images, for a quick try (default: all)')
    parser.add_argument('--no-progress', action='store_true', help='never show progress bars (default: off)')
    parser.add_argument('--save-model', metavar='PATH', type=writable_path,
                        help='after training (or at Ctrl-C) save the model there (default: not saved)')
    parser.add_argument('--plot', metavar='PATH.png', type=writable_path,
                        help='save a picture: curves per epoch and misclassified test images (default: none)')
    parser.add_argument('--load-model', metavar='PATH',
                        help='test a saved model on the test set, without training (default: train)')
    script = os.path.basename(sys.modules[nets[first].__module__].__file__)  # who saved a model file
    parser.set_defaults(recipes=recipes, script=script)
    return parser


def parse_args(parser, argv=None):
    """Parse, then fill what the user left out from the chosen net's recipe."""
    args = parser.parse_args(argv)
    for key, value in args.recipes[args.net].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    del args.recipes
    try:
        args.device = choose_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    return args


# ----------------------------------------------------------------------------------------------
# Device and seeds

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


def seed_everything(seed):
    """Seed torch (every device) and return the generator that draws the batch order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Data

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
        """uint8 images -> float, the arithmetic of ToTensor (x / 255) then Normalize ((x - mean) / std)."""
        layout = memory_format(images.device)
        return images.to(torch.float32, memory_format=layout).div_(255).sub_(self.mean).div_(self.std)


def memory_format(device):
    """channels_last (N x H x W x C in memory) on the CPU: there its convolutions run about 1.5x faster."""
    return torch.channels_last if device.type == 'cpu' else torch.contiguous_format


def read_split(name, data_dir, train):
    """One split through torchvision's class, as (uint8 N x C x H x W, int64 N) CPU tensors.

    Looks for the files first and downloads only when they are missing. torchvision's own messages are
    held back, so that stdout holds nothing but results and a failure is one line (a UserError).
    """
    info = DATASETS[name]
    where = os.path.join(data_dir, info.folder)
    try:
        ds = info.cls(data_dir, train=train, download=False)
    except RuntimeError as e:
        if 'not found' not in str(e).lower():  # the files are there, but do not parse
            raise UserError(damaged(info, where, train, e)) from None
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its progress bars still go to stderr
                ds = info.cls(data_dir, train=train, download=True)
        except (RuntimeError, OSError) as e:  # URLError is an OSError
            raise UserError(f'{name} is missing or incomplete in {where} and could not be downloaded '
                            f'({first_line(e)}). Place {", ".join(info.files)} there, or point '
                            f'--data-dir to a folder that has {info.folder}/') from None
    except (AssertionError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise UserError(damaged(info, where, train, e)) from None
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # N x H x W (x C)
    return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)


def damaged(info, where, train, error):
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
    return (f'{path} is damaged or truncated ({first_line(error)}); '
            f'delete it and run again to download it anew')


def first_line(error):
    lines = str(error).strip().splitlines()
    return lines[-1].strip() if lines else type(error).__name__


def shifted(images):
    """The images plus four copies moved one pixel right, left, up and down; the vacated edge is 0.

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
            images, labels = shifted(images), labels.repeat(5)
        if pad:
            images = torch.nn.functional.pad(images, (pad,) * 4)
        splits.append(Split(images.to(device), labels.to(device)))
    channels = (1, -1, 1, 1)
    return Data(name, *splits,
                mean=torch.tensor(info.mean, device=device).view(channels),
                std=torch.tensor(info.std, device=device).view(channels),
                classes=info.classes)


# ----------------------------------------------------------------------------------------------
# Training and testing

def batches(n, batch_size, generator, device):
    """One epoch's batches: slices of a fresh random permutation, moved to the device once."""
    order = torch.randperm(n, generator=generator).to(device)
    return (order[i:i + batch_size] for i in range(0, n, batch_size))


@torch.no_grad()
def predict(model, data, split=None, batch_size=500):
    """The predicted class of every image of a split (default: the test split), on the device."""
    split = split or data.test
    model.eval()
    return torch.cat([model(data.normalize(split.images[i:i + batch_size])).argmax(1)
                      for i in range(0, len(split), batch_size)])


def accuracy(model, data):
    return (predict(model, data) == data.test.labels).float().mean().item()


def sgd_step(model, loss_fn, optimizer, data, idx, total):
    """One SGD step on the training images `idx`; adds the batch's summed loss to `total` (on the device)."""
    loss = loss_fn(model(data.normalize(data.train.images[idx])), data.train.labels[idx])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    total += loss.detach() * len(idx)


def graphed_step(model, loss_fn, optimizer, data, batch_size, total):
    """On CUDA, sgd_step recorded once as a CUDA graph and replayed: 2 launches a step, not one per op.

    At batch size 10 a step is far too small to keep a GPU busy: launching its kernels one by one from
    Python is what takes the time. Recording needs a few warm-up steps; they are undone, so training
    takes exactly the same steps as without the graph. A last, smaller batch runs without the graph.
    """
    idx = torch.zeros(batch_size, dtype=torch.long, device=total.device)  # the graph reads from here
    saved = [p.detach().clone() for p in model.parameters()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            sgd_step(model, loss_fn, optimizer, data, idx, total)
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():
        for p, value in zip(model.parameters(), saved):
            p.copy_(value)
    optimizer.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sgd_step(model, loss_fn, optimizer, data, idx, total)
    total.zero_()

    def step(batch):
        if len(batch) != batch_size:
            return sgd_step(model, loss_fn, optimizer, data, batch, total)
        idx.copy_(batch)
        graph.replay()
    return step


def make_step(model, loss_fn, optimizer, data, batch_size, total):
    """step(idx): one SGD step, its loss summed into `total`; graphed on CUDA."""
    if total.device.type == 'cuda':
        return graphed_step(model, loss_fn, optimizer, data, batch_size, total)
    return lambda idx: sgd_step(model, loss_fn, optimizer, data, idx, total)


def train_epoch(step, total, data, batch_size, generator, progress=None):
    """One pass over the shuffled training split; returns the mean loss (the one host sync of the epoch)."""
    total.zero_()
    for idx in batches(len(data.train), batch_size, generator, total.device):
        step(idx)
        if progress is not None:
            progress.update()
    return total.item() / len(data.train)


def train(model, loss_fn, data, args, generator):
    """Plain SGD, epoch after epoch; after each the test accuracy and one printed line.

    Returns the history: per epoch, the mean training loss and the test accuracy. The loss is checked
    once an epoch (no host sync per step): nan or inf stops training with a UserError. Ctrl-C stops
    it with an Interrupted that says where training was.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.wd)
    total = torch.zeros((), device=data.train.labels.device)
    model.train()
    step = make_step(model, loss_fn, optimizer, data, args.batch_size, total)
    n_batches = math.ceil(len(data.train) / args.batch_size)
    history = {'loss': [], 'accuracy': []}
    epoch = batch = 0

    def counted_step(idx):  # where Ctrl-C found us
        nonlocal batch
        step(idx)
        batch += 1

    try:
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            model.train()
            batch = 0
            with tqdm(total=n_batches, desc=f'Epoch {epoch}/{args.epochs}', unit='batch', leave=False,
                      file=sys.stderr, disable=True if args.no_progress else None) as progress:
                mean_loss = train_epoch(counted_step, total, data, args.batch_size, generator, progress)
            if not math.isfinite(mean_loss):
                raise UserError(f'training diverged at epoch {epoch} (loss is {mean_loss}); try a smaller --lr')
            acc = accuracy(model, data)
            history['loss'].append(mean_loss)
            history['accuracy'].append(acc)
            print(f'Test data results: {acc:.4f}, Epoch {epoch}/{args.epochs}, '
                  f'train loss {mean_loss:.4f}, {time.perf_counter() - start:.1f} s', flush=True)
    except KeyboardInterrupt:
        last = f'{history["accuracy"][-1]:.4f} after epoch {epoch - 1}' if history['accuracy'] else 'none yet'
        raise Interrupted(f'interrupted in epoch {epoch}/{args.epochs} at batch {batch}/{n_batches}; '
                          f'last test accuracy: {last}') from None
    print()
    print(f'Test data results: {history["accuracy"][-1]:.4f}', flush=True)
    return history


class Interrupted(Exception):
    """Ctrl-C during training; the message says where it stopped."""


def atomic_write(path, write):
    """write(file) into a temporary file beside `path`, then os.replace: a run stopped midway leaves
    the previous file (or none) at `path`, never half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_model(path, model, args, data):
    """Save the weights with what is needed to use them again: script, net, dataset, normalization."""
    checkpoint = {'script': args.script, 'net': args.net, 'dataset': data.name,
                  'mean': list(DATASETS[data.name].mean), 'std': list(DATASETS[data.name].std),
                  'state_dict': {k: v.cpu() for k, v in model.state_dict().items()}}
    atomic_write(path, lambda f: torch.save(checkpoint, f))
    print(f'Model saved to {path}', file=sys.stderr)


def save_plot(path, history, model, data):
    """One PNG: loss and test accuracy per epoch (left), up to 25 misclassified test images (right)."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    predicted = predict(model, data)
    wrong = (predicted != data.test.labels).nonzero().flatten()[:25].cpu()
    images = data.test.images[wrong].cpu().permute(0, 2, 3, 1).numpy()  # N x H x W x C, as matplotlib wants
    predicted, labels = predicted[wrong].tolist(), data.test.labels[wrong].tolist()

    fig = plt.figure(figsize=(13, 6), layout='constrained')
    left, right = fig.subfigures(1, 2, width_ratios=(1, 1))
    ax = left.subplots()
    epochs = range(1, len(history['accuracy']) + 1)
    ax.plot(epochs, history['accuracy'], 'o-', color='tab:blue', label='test accuracy')
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel('test accuracy', color='tab:blue')
    if history['loss']:
        loss_ax = ax.twinx()
        loss_ax.plot(epochs, history['loss'], 's--', color='tab:red', label='training loss')
        loss_ax.set_ylabel('mean training loss', color='tab:red')
    ax.set_title(f'{data.name}: test accuracy {history["accuracy"][-1]:.4f}')
    right.suptitle(f'misclassified test images (predicted / true), {len(wrong)} shown')
    for i, cell in enumerate(right.subplots(5, 5).flatten()):
        cell.axis('off')
        if i < len(wrong):
            cell.imshow(images[i].squeeze(-1), cmap='gray' if images.shape[-1] == 1 else None)
            cell.set_title(f'{data.classes[predicted[i]]} / {data.classes[labels[i]]}', fontsize=8)
    atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=80))
    plt.close(fig)
    print(f'Plot saved to {path}', file=sys.stderr)


def load_model(path, model, args):
    """Load weights saved by save_model into `model`; anything else is one clear UserError."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise UserError(f'--load-model {path}: no such file') from None
    except Exception as e:  # noqa: BLE001 -- torch.load raises many kinds for a file that is not a model
        raise UserError(f'--load-model {path}: not a model saved by these scripts ({first_line(e)})') from None
    if not isinstance(checkpoint, dict) or not {'script', 'net', 'dataset', 'state_dict'} <= checkpoint.keys():
        raise UserError(f'--load-model {path}: not a model saved by these scripts')
    if (checkpoint['script'], checkpoint['net']) != (args.script, args.net):
        raise UserError(f'--load-model {path}: it holds the {checkpoint["net"]!r} net of {checkpoint["script"]}; '
                        f'run {checkpoint["script"]} --net {checkpoint["net"]}')
    if checkpoint['dataset'] != args.dataset:
        raise UserError(f'--load-model {path}: it was trained on {checkpoint["dataset"]}; '
                        f'add --dataset {checkpoint["dataset"]}')
    try:
        model.load_state_dict(checkpoint['state_dict'])
    except RuntimeError as e:
        raise UserError(f'--load-model {path}: the weights do not fit the {args.net!r} net ({first_line(e)})') from None


def run(args, make_model, loss_fn=torch.nn.functional.cross_entropy, pad=0):
    """Everything after parsing: seed, build the model, load the data, then train (or, with
    --load-model, only test), print, save. Returns (model, data, history)."""
    print(f'Device: {args.device}', flush=True)
    generator = seed_everything(args.seed)
    model = make_model()
    if args.load_model:
        load_model(args.load_model, model, args)
    model = model.to(args.device, memory_format=memory_format(args.device))
    data = load_data(args.dataset, args.data_dir, args.device, limit=args.limit, extend=args.extend_data,
                     pad=pad)
    if args.load_model:
        history = {'loss': [], 'accuracy': [accuracy(model, data)]}
        print(f'Test data results: {history["accuracy"][-1]:.4f}', flush=True)
    else:
        try:
            history = train(model, loss_fn, data, args, generator)
        except Interrupted:
            if args.save_model:
                save_model(args.save_model, model, args, data)
            raise
        if args.save_model:
            save_model(args.save_model, model, args, data)
    if args.plot:
        save_plot(args.plot, history, model, data)
    return model, data, history


def main_guard(main):
    """Run a script's main() as a command: a UserError is one line on stderr and exit status 1; Ctrl-C
    during training says where it stopped and exits 130 (elsewhere it exits 130 quietly)."""
    try:
        main()
    except UserError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


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
    rows = [('training', train_images), ('extended training', shifted(train_images)), ('test', test_images)]
    for label, images in rows:
        mean, std = mean_std(images)
        figures = ', '.join(f'mean {m:.4f} std {s:.4f}' for m, s in zip(mean, std))
        print(f'{args.dataset} {label} set ({len(images)} images): {figures}')


if __name__ == '__main__':
    if sys.argv[1:2] != ['stats']:
        sys.exit('usage: python common.py stats [--dataset NAME] [--data-dir DIR]')
    main_guard(lambda: stats(sys.argv[2:]))
