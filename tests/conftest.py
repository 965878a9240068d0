"""Fixtures: tiny datasets written in the exact on-disk formats torchvision reads, and a script runner."""
import gzip
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The real Fashion-MNIST: FASHION_MNIST_DIR names a folder with its four files (.gz or not); by default,
# Debian's package (apt-get install dataset-fashion-mnist). Without it the real-data tests skip, unless
# REQUIRE_REAL_DATA is set (as .ci/run sets it): then they fail.
FASHION_DIR = Path(os.environ.get('FASHION_MNIST_DIR', '/usr/share/datasets/fashion-mnist'))
N_TRAIN, N_TEST = 300, 100


def synthetic_images(n, size=28, channels=None, seed=0):
    """Learnable images: a dim noisy background and a bright 4x4 block whose place is the label.

    The block's pixels are bright but not equal (200-255), so that no two windows of a convolution see the
    same pixels: a flat block would give exactly equal values for max-pooling to choose between, a tie that
    two kernels may break either way (test_seeds compares two training paths for equality)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    images = rng.integers(0, 40, size=shape, dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = 3 + (label // 5) * 12, 3 + (label % 5) * 4
        block = image[row:row + 4, col:col + 4]
        block[...] = rng.integers(200, 256, size=block.shape, dtype=np.uint8)
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
    """The real Fashion-MNIST, decompressed where torchvision looks for it.

    Debian recompressed the .gz files, so their checksums differ from torchvision's list; the
    decompressed files are what torchvision finds without downloading.
    """
    names = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
    found = {name: next((FASHION_DIR / f for f in (name, name + '.gz') if (FASHION_DIR / f).is_file()), None)
             for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        why = f'real-data test: no {", ".join(missing)} in {FASHION_DIR} (set FASHION_MNIST_DIR, or apt-get install dataset-fashion-mnist)'
        if os.environ.get('REQUIRE_REAL_DATA'):
            pytest.fail(why)
        pytest.skip(why)
    root = tmp_path_factory.mktemp('fashion')
    raw = root / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    for name, path in found.items():
        with (gzip.open(path) if path.suffix == '.gz' else open(path, 'rb')) as src, open(raw / name, 'wb') as dst:
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


def default_signals(ignored=()):
    """For a child: the stop signals as a fresh terminal session has them (a CI runner may ignore SIGINT),
    except those named, which it ignores (as nohup does SIGHUP)."""
    def reset():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
    return reset


def start_script(*args, env=None, ignored=()):
    """Start a script of the collection in the background (offline, unbuffered); read it with StdoutLines.
    The caller kills it when done (a `with` block does)."""
    full_env = {**(os.environ if env is None else env), **OFFLINE, 'PYTHONUNBUFFERED': '1'}
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env, preexec_fn=default_signals(ignored))


class StdoutLines:
    """A child's stdout, line by line, read on a thread so that waiting for a line can time out: a test
    never hangs on a child that died or went silent."""

    def __init__(self, process):
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=self.read, args=(process.stdout,), daemon=True).start()

    def read(self, stream):
        for line in stream:
            self.lines.put(line.rstrip('\n'))
        self.lines.put(None)

    def wait_for(self, prefix, timeout=120):
        """The first line starting with `prefix`; fails when the child's output ends first, or on time."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f'no line starting with {prefix!r} within {timeout} s; seen: {self.seen}')
            if line is None:
                pytest.fail(f'the output ended before a line starting with {prefix!r}; seen: {self.seen}')
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def rest(self, timeout=60):
        """Every line left, once the child's output has ended."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                return self.seen
            self.seen.append(line)
