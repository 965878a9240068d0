"""The dataset files, read through torchvision's dataset classes, which find, download, check and parse them
(read_split); common.py keeps what they hold whole on the device. A file that does not read is one line (a
UserError) that names it and says what to do, never a traceback."""
import contextlib
import io
import os
import pickle
from dataclasses import dataclass

import torch


class UserError(Exception):
    """A problem the user can fix (data, a model file, divergence, a failed save); its message is what is printed,
    as one line and exit status 1 (plumbing/stops.py)."""


def last_line(error):
    """The last non-empty line of an error's message (its type's name when the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[-1].strip() if lines else type(error).__name__


MNIST_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
               't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


@dataclass(frozen=True)
class DatasetInfo:
    class_name: str    # torchvision's dataset class: it downloads, checks and parses the files
    folder: str        # where that class looks, under --data-dir
    files: tuple       # what a user without network places in that folder
    mean: tuple        # per channel, of pixel values scaled to [0, 1]
    std: tuple
    classes: tuple
    size: int = 28     # each image is size x size pixels, len(mean) channels

    @property
    def cls(self):
        from torchvision import datasets  # imported when data is read: torchvision takes seconds to import
        return getattr(datasets, self.class_name)


DATASETS = {
    # MNIST: the published recipe normalizes training and test data with the extended training set's
    # figures (data_normalization_calculations.md).
    'mnist': DatasetInfo('MNIST', 'MNIST/raw', MNIST_FILES, (0.1305,), (0.3081,),
                         tuple(str(d) for d in range(10))),
    # Fashion-MNIST: its own figures, measured the same way (extended training set) with `stats`.
    'fashion-mnist': DatasetInfo('FashionMNIST', 'FashionMNIST/raw', MNIST_FILES,
                                 (0.2847,), (0.3531,),
                                 ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                                  'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')),
    # CIFAR-10: the walk-through's 0.5/0.5 for every channel.
    'cifar10': DatasetInfo('CIFAR10', 'cifar-10-batches-py',
                           ('data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5',
                            'test_batch', 'batches.meta (the extracted cifar-10-python.tar.gz)'),
                           (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                           ('plane', 'car', 'bird', 'cat', 'deer',
                            'dog', 'frog', 'horse', 'ship', 'truck'), size=32),
}


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
        corrupt = corrupt_cifar_file(info, where) if name == 'cifar10' else None
        if corrupt:
            raise UserError(f'{corrupt} is damaged (its md5 sum is not CIFAR-10\'s); delete it and run again '
                            f'to download it anew') from None
        try:
            with no_empty_folders_left(where), contextlib.redirect_stdout(io.StringIO()):  # (bars: stderr)
                ds = info.cls(data_dir, train=train, download=True)
        except PermissionError as e:
            raise UserError(f'{name} is missing in {where}, and cannot be downloaded there: cannot write '
                            f'{e.filename or where} (permission denied)') from None
        except (RuntimeError, OSError) as e:  # URLError is an OSError
            raise UserError(f'{name} is missing or incomplete in {where} and could not be downloaded '
                            f'({last_line(e)}). Place {", ".join(info.files)} there, or point '
                            f'--data-dir to a folder that has {info.folder}/') from None
    except (AssertionError, ValueError, TypeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise UserError(damaged_file_message(info, where, train, e)) from None
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)  # N x H x W (x C)
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    if len(images) != len(labels):
        raise UserError(length_mismatch_message(info, where, train, len(images), len(labels)))
    misfit = misfit_message(info, where, train, images, labels)
    if misfit:
        raise UserError(misfit)
    return images.contiguous(), labels


def misfit_message(info, where, train, images, labels):
    """What is wrong with files that parse but do not hold the dataset (images of another size, labels
    outside its classes), naming the file; None when they fit."""
    prefix = mnist_prefix(info, train)
    split = f'the {"training" if train else "test"} files in {where}'
    expected = (len(info.mean), info.size, info.size)
    if tuple(images.shape[1:]) != expected:
        file = os.path.join(where, f'{prefix}-images-idx3-ubyte') if prefix else split
        channels, height, width = images.shape[1:]
        return (f'{file} holds images of {height} x {width} pixels with {channels} channel'
                f'{"s" if channels > 1 else ""}, not {info.class_name}\'s {info.size} x {info.size} with '
                f'{expected[0]}; delete {"it" if prefix else "them"} and run again to download anew')
    outside = labels[(labels < 0) | (labels >= len(info.classes))]
    if len(outside):
        file = os.path.join(where, f'{prefix}-labels-idx1-ubyte') if prefix else split
        return (f'{file} holds the label {outside[0].item()}, and {info.class_name} has classes 0 to '
                f'{len(info.classes) - 1}; delete {"it" if prefix else "them"} and run again to download anew')
    return None


# ----------------------------------------------------------------------------------------------
# Data files that do not read (read_split): which file, and what to do

def mnist_prefix(info, train):
    """'train' or 't10k', what the split's files begin with in the MNIST layout (MNIST, Fashion-MNIST);
    None for other datasets."""
    if 'train-images-idx3-ubyte' not in info.files:
        return None
    return 'train' if train else 't10k'


def damaged_file_message(info, where, train, error):
    """The message for files that exist but do not parse, naming the file where torchvision's readers can."""
    from torchvision.datasets import mnist
    path, prefix = where, mnist_prefix(info, train)
    if prefix:
        for file, reader in ((f'{prefix}-images-idx3-ubyte', mnist.read_image_file),
                             (f'{prefix}-labels-idx1-ubyte', mnist.read_label_file)):
            try:
                reader(os.path.join(where, file))
            except Exception:  # noqa: BLE001 -- any failure to parse marks this file
                path = os.path.join(where, file)
                break
    return (f'{path} is damaged or truncated ({last_line(error)}); '
            f'delete it and run again to download it anew')


def corrupt_cifar_file(info, where):
    """The first CIFAR-10 file in `where` that is there but fails torchvision's md5 check, or None."""
    from torchvision.datasets import cifar
    cls = info.cls
    for filename, md5 in cls.train_list + cls.test_list + [(cls.meta['filename'], cls.meta['md5'])]:
        path = os.path.join(where, filename)
        if os.path.isfile(path) and not cifar.check_integrity(path, md5):
            return path
    return None


def length_mismatch_message(info, where, train, n_images, n_labels):
    prefix = mnist_prefix(info, train)
    if prefix:
        return (f'{os.path.join(where, prefix + "-images-idx3-ubyte")} holds {n_images} images but '
                f'{os.path.join(where, prefix + "-labels-idx1-ubyte")} holds {n_labels} labels; '
                f'one of them is damaged: delete both and run again to download them anew')
    return (f'the {"training" if train else "test"} files in {where} hold {n_images} images but {n_labels} '
            f'labels; delete them and run again to download them anew')


@contextlib.contextmanager
def no_empty_folders_left(where):
    """A download into `where` that fails leaves none of the folders it made on the way, when they are empty."""
    made, folder = [], os.path.abspath(where)
    while not os.path.exists(folder):
        made.append(folder)
        folder = os.path.dirname(folder)
    try:
        yield
    except BaseException:
        for folder in made:  # the deepest first
            with contextlib.suppress(OSError):  # not empty: something was put there
                os.rmdir(folder)
        raise
