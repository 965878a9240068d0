"""Fixtures: tiny datasets written in the exact on-disk formats torchvision reads, and a script runner."""
import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FASHION_DEB = Path('/usr/share/datasets/fashion-mnist')   # apt-get install dataset-fashion-mnist
N_TRAIN, N_TEST = 300, 100


def synthetic_images(n, size=28, channels=None, seed=0):
    """Learnable images: a dim noisy background and a bright 4x4 block whose place is the label."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    images = rng.integers(0, 40, size=shape, dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = 3 + (label // 5) * 12, 3 + (label % 5) * 4
        image[row:row + 4, col:col + 4] = 255
    return images, labels.astype(np.uint8)


def write_idx(path, array):
    """IDX: a big-endian magic (0, 0, type 0x08 = uint8, number of dimensions), the sizes, the bytes."""
    with open(path, 'wb') as f:
        f.write(struct.pack('>BBBB', 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f'>{array.ndim}I', *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root, folder):
    raw = Path(root) / folder / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (('train', N_TRAIN, 1), ('t10k', N_TEST, 2)):
        images, labels = synthetic_images(n, seed=seed)
        write_idx(raw / f'{prefix}-images-idx3-ubyte', images)
        write_idx(raw / f'{prefix}-labels-idx1-ubyte', labels)
    return raw


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
    """A --data-dir holding a tiny synthetic MNIST and Fashion-MNIST in torchvision's layout."""
    root = tmp_path_factory.mktemp('data')
    write_mnist(root, 'MNIST')
    write_mnist(root, 'FashionMNIST')
    return root


@pytest.fixture
def fresh_data_dir(tmp_path):
    """Like data_dir, but a copy a test may damage."""
    write_mnist(tmp_path, 'MNIST')
    return tmp_path


@pytest.fixture(scope='session')
def fashion_dir(tmp_path_factory):
    """The real Fashion-MNIST from the Debian package, decompressed where torchvision looks for it.

    Debian recompressed the .gz files, so their checksums differ from torchvision's list; the
    decompressed files are what torchvision finds without downloading.
    """
    if not FASHION_DEB.is_dir():
        pytest.skip('real-data test: apt-get install dataset-fashion-mnist')
    root = tmp_path_factory.mktemp('fashion')
    raw = root / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    for gz in FASHION_DEB.glob('*-ubyte.gz'):
        with gzip.open(gz) as src, open(raw / gz.name[:-3], 'wb') as dst:
            shutil.copyfileobj(src, dst)
    return root


OFFLINE = {'http_proxy': 'http://127.0.0.1:9', 'https_proxy': 'http://127.0.0.1:9',
           'HTTP_PROXY': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9', 'no_proxy': ''}


def run_script(*args, timeout=300, env=None, **kwargs):
    """Run a script of the collection as a user would (in `env`, default ours); downloads fail at once
    (a dead local proxy)."""
    full_env = {**(os.environ if env is None else env), **OFFLINE, 'PYTHONUNBUFFERED': '1'}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=full_env, **kwargs)
