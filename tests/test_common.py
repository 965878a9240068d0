"""The shared core: device choice, seeds, loading, normalization, shifts, batches, printed lines, errors."""
import os
import re
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

import common
import pytorch_mnist
from conftest import N_TEST, N_TRAIN, ROOT, run_script, synthetic_images, write_idx

EPOCH_LINE = re.compile(r'^Test data results: (\d\.\d{4}), Epoch (\d+)/(\d+), train loss (\d+\.\d{4}), \d+\.\d s$')
FINAL_LINE = re.compile(r'^Test data results: (\d\.\d{4})$')


# ---- device ----------------------------------------------------------------------------------

def test_auto_device_is_cpu_without_accelerator(monkeypatch):
    monkeypatch.setattr(torch.accelerator, 'is_available', lambda: False)
    assert common.choose_device('auto') == torch.device('cpu')


def test_auto_device_takes_the_accelerator_torch_names(monkeypatch):
    """An accelerator that is neither CUDA nor MPS (an Intel GPU, 'xpu'): fails when `auto` looks for CUDA and MPS
    itself instead of asking torch.accelerator, and gives such a machine the CPU."""
    monkeypatch.setattr(torch.accelerator, 'is_available', lambda: True)
    monkeypatch.setattr(torch.accelerator, 'current_accelerator', lambda: torch.device('xpu'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    assert common.choose_device('auto') == torch.device('xpu')


def test_auto_device_without_torch_accelerator(monkeypatch):
    monkeypatch.delattr(torch, 'accelerator')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert common.choose_device('auto') == torch.device('cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    assert common.choose_device('auto') == torch.device('cpu')


def test_missing_device_is_a_usage_error(monkeypatch, data_dir, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        pytorch_mnist.main(['--device', 'cuda', '--data-dir', str(data_dir)])
    assert exit_info.value.code == 2
    assert 'no CUDA device is available' in capsys.readouterr().err


# ---- data ------------------------------------------------------------------------------------

def test_loads_both_splits_whole_as_uint8(data_dir):
    data = common.load_data('mnist', data_dir, torch.device('cpu'))
    assert data.train.images.shape == (N_TRAIN, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (N_TEST, 1, 28, 28)
    images, labels = synthetic_images(N_TEST, seed=2)
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(images))
    assert torch.equal(data.test.labels, torch.from_numpy(labels).long())


def test_limit_keeps_the_first_images(data_dir):
    whole = common.load_data('fashion-mnist', data_dir, torch.device('cpu'))
    part = common.load_data('fashion-mnist', data_dir, torch.device('cpu'), limit=50)
    assert len(part.train) == len(part.test) == 50
    assert torch.equal(part.train.images, whole.train.images[:50])
    assert torch.equal(part.test.labels, whole.test.labels[:50])


@pytest.mark.parametrize('name', ['mnist', 'fashion-mnist'])
def test_normalization_matches_totensor_and_normalize(data_dir, name):
    data = common.load_data(name, data_dir, torch.device('cpu'), limit=5)
    info = common.DATASETS[name]
    textbook = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    expected = torch.stack([textbook(Image.fromarray(image[0].numpy(), mode='L'))
                            for image in data.train.images])
    assert torch.equal(data.normalize(data.train.images), expected)


def test_published_mnist_normalization():
    assert common.DATASETS['mnist'].mean == (0.1305,) and common.DATASETS['mnist'].std == (0.3081,)


def test_each_shift_on_a_hand_made_image():
    image = torch.tensor([[1, 2, 3],
                          [4, 5, 6],
                          [7, 8, 9]], dtype=torch.uint8).view(1, 1, 3, 3)
    original, right, left, up, down = common.with_shifted_copies(image)
    assert original.tolist() == [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
    assert right.tolist() == [[[0, 1, 2], [0, 4, 5], [0, 7, 8]]]
    assert left.tolist() == [[[2, 3, 0], [5, 6, 0], [8, 9, 0]]]
    assert up.tolist() == [[[4, 5, 6], [7, 8, 9], [0, 0, 0]]]
    assert down.tolist() == [[[0, 0, 0], [1, 2, 3], [4, 5, 6]]]


def test_extended_data_is_five_times_with_labels_repeated(data_dir):
    plain = common.load_data('mnist', data_dir, torch.device('cpu'), limit=20)
    extended = common.load_data('mnist', data_dir, torch.device('cpu'), limit=20, extend=True)
    assert len(extended.train) == 100 and len(extended.test) == 20
    assert torch.equal(extended.train.images[:20], plain.train.images)
    assert torch.equal(extended.train.labels, plain.train.labels.repeat(5))
    assert torch.equal(extended.train.images[20:40, ..., 1:], plain.train.images[..., :-1])  # right


def test_padding_adds_a_black_border(data_dir):
    data = common.load_data('mnist', data_dir, torch.device('cpu'), limit=3, pad=2)
    assert data.train.images.shape == (3, 1, 32, 32)
    assert data.train.images[..., :2, :].eq(0).all() and data.train.images[..., -2:].eq(0).all()


# ---- batches, seeds, the loop ------------------------------------------------------------------

def batches_of(n, batch_size=10, seed=0, epochs=2):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    split = common.Split(images, torch.arange(n))
    zero, one = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    data = common.Data('mnist', split, split, mean=zero, std=one)
    return common.Batches(data, batch_size, seed=seed, epochs=epochs, progress=False)


def test_every_example_once_per_epoch_in_a_fresh_order():
    batches = batches_of(103)
    assert len(batches) == 11
    orders = []
    for _ in range(2):
        parts = list(batches)
        assert [len(labels) for _, labels in parts] == [10] * 10 + [3]
        order = torch.cat([labels for _, labels in parts])
        assert torch.equal(order.sort().values, torch.arange(103))
        for images, labels in parts:  # each image travels with its own label, normalized (x / 255 here)
            assert torch.equal(images[:, 0, 0, 0], labels.float() / 255)
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])


@pytest.mark.numerics
def test_batch_order_comes_from_the_seed_alone():
    """The order of a run with --seed S: randperm from a generator seeded with S, untouched by the global
    generator (which draws the initial weights and the dropout masks)."""
    first = torch.cat([labels for _, labels in batches_of(50, seed=7)])
    torch.manual_seed(123)
    torch.rand(10)
    again = torch.cat([labels for _, labels in batches_of(50, seed=7)])
    assert torch.equal(first, again)
    assert torch.equal(first, torch.randperm(50, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, torch.cat([labels for _, labels in batches_of(50, seed=8)]))


def test_position_counts_the_finished_steps():
    batches = batches_of(95, epochs=3)
    assert batches.position() == 'epoch 1/3 at batch 0/10'
    list(batches)
    assert batches.position() == 'epoch 1/3 at batch 10/10'  # e.g. interrupted in the test pass
    for i, _ in enumerate(batches):
        if i == 4:  # the step of the fifth batch is running: four have finished
            break
    assert batches.position() == 'epoch 2/3 at batch 4/10'


def args_for(data_dir, *extra):
    return ['--data-dir', str(data_dir), '--epochs', '2', '--limit', '200', '--no-progress', *extra]


@pytest.mark.numerics
def test_same_seed_same_numbers(data_dir, capsys):
    histories = [pytorch_mnist.main(args_for(data_dir, '--seed', seed))[2] for seed in ('3', '3', '4')]
    assert histories[0] == histories[1]
    assert histories[0]['loss'] != histories[2]['loss']


def test_printed_lines(data_dir, capsys):
    _, _, history = pytorch_mnist.main(args_for(data_dir, '--net', 'softmax'))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('Device: ')
    epochs = [EPOCH_LINE.match(line) for line in lines[1:3]]
    assert all(epochs), lines
    assert [m.group(2, 3) for m in epochs] == [('1', '2'), ('2', '2')]
    assert [float(m.group(1)) for m in epochs] == [round(a, 4) for a in history['accuracy']]
    assert lines[3] == ''
    assert FINAL_LINE.match(lines[4]).group(1) == epochs[-1].group(1)
    assert len(lines) == 5


def test_training_learns_the_synthetic_data(data_dir, capsys):
    _, _, history = pytorch_mnist.main(['--data-dir', str(data_dir), '--epochs', '5', '--no-progress'])
    assert history['loss'][-1] < history['loss'][0]
    assert history['accuracy'][-1] >= 0.9


@pytest.mark.parametrize('flags', [['--epochs', '0'], ['--lr', 'nan'], ['--batch-size', '-1'], ['--wd', '-1']])
def test_wrong_flag_values_are_usage_errors(data_dir, capsys, flags):
    with pytest.raises(SystemExit) as exit_info:
        pytorch_mnist.main(args_for(data_dir, *flags))
    assert exit_info.value.code == 2
    assert f'argument {flags[0]}:' in capsys.readouterr().err


# ---- offline, stats ----------------------------------------------------------------------------

@pytest.mark.parametrize('dataset,folder', [('mnist', 'MNIST'), ('fashion-mnist', 'FashionMNIST')])
def test_offline_without_data_is_one_line(tmp_path, dataset, folder):
    result = run_script('pytorch_mnist_convnet.py', '--dataset', dataset, '--data-dir', tmp_path, '--limit', '10')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f'{tmp_path}/{folder}/raw' in line and '--data-dir' in line
    for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                 't10k-labels-idx1-ubyte'):
        assert name in line
    assert 'Test data results' not in result.stdout


def test_torchvision_is_imported_only_where_data_is_read():
    """Importing torchvision takes seconds (it brings its models and ops): --help, a usage error or
    --load-model --predict need none of it. Fails when a module imports it at the top."""
    code = ('import sys, pytorch_mnist, pytorch_mnist_convnet, cifar_convnet\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "torchvision"))')
    result = run_script('-c', code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'


def test_stats_command(data_dir):
    result = run_script('common.py', 'stats', '--dataset', 'mnist', '--data-dir', data_dir)
    assert result.returncode == 0, result.stderr
    images, _ = synthetic_images(N_TRAIN, seed=1)
    scaled = images / 255
    assert f'training set ({N_TRAIN} images): mean {scaled.mean():.4f} std {scaled.std():.4f}' in result.stdout
    assert f'extended training set ({5 * N_TRAIN} images)' in result.stdout
    assert f'test set ({N_TEST} images)' in result.stdout


def test_stats_on_a_damaged_file_is_one_line(fresh_data_dir):
    """Fails when `python common.py stats` lets the data error through as a traceback."""
    damaged = fresh_data_dir / 'MNIST' / 'raw' / 'train-labels-idx1-ubyte'
    damaged.write_bytes(damaged.read_bytes()[:20])
    result = run_script('common.py', 'stats', '--dataset', 'mnist', '--data-dir', fresh_data_dir)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f'{damaged} is damaged or truncated ('), line


def test_files_that_parse_but_do_not_hold_the_dataset_are_one_line_before_training(fresh_data_dir):
    """Images of 32 x 32 in MNIST's files, then a label 11: fails when either reaches the net (a traceback from
    the first matrix product or the loss) instead of one line naming the file."""
    raw = fresh_data_dir / 'MNIST' / 'raw'
    wide, _ = synthetic_images(20, size=32, seed=3)
    images, labels = synthetic_images(20, seed=3)
    eleven = labels.copy()
    eleven[5] = 11
    for images, labels, line in (
            (wide, labels, f'{raw / "train-images-idx3-ubyte"} holds images of 32 x 32 pixels with 1 channel, not '
                           f'MNIST\'s 28 x 28 with 1; delete it and run again to download anew'),
            (images, eleven, f'{raw / "train-labels-idx1-ubyte"} holds the label 11, and MNIST has classes 0 to 9; '
                             f'delete it and run again to download anew')):
        write_idx(raw / 'train-images-idx3-ubyte', images)
        write_idx(raw / 'train-labels-idx1-ubyte', labels)
        result = run_script('pytorch_mnist.py', '--data-dir', fresh_data_dir, '--epochs', '1', '--no-progress')
        assert result.returncode == 1 and result.stderr.strip().splitlines() == [line]


def test_an_idx_file_of_another_number_type_is_one_line(fresh_data_dir):
    """Labels written as int32 (IDX type 0x0C): torchvision raises a TypeError; fails when that is a traceback."""
    labels = fresh_data_dir / 'MNIST' / 'raw' / 'train-labels-idx1-ubyte'
    with open(labels, 'wb') as f:
        f.write(struct.pack('>BBBBI', 0, 0, 0x0C, 1, N_TRAIN) + np.arange(N_TRAIN, dtype='>i4').tobytes())
    result = run_script('pytorch_mnist.py', '--data-dir', fresh_data_dir, '--epochs', '1', '--no-progress')
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f'{labels} is damaged or truncated ('), line


def test_stats_into_a_closed_pipe_is_quiet(data_dir):
    """`python common.py stats | head -c0`: the reader is gone before the first line. Fails when that is a
    BrokenPipeError traceback."""
    child = subprocess.Popen([sys.executable, 'common.py', 'stats', '--dataset', 'mnist', '--data-dir', str(data_dir)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # (before the child has imported torch, let alone printed)
    err = child.stderr.read()
    assert child.wait(timeout=120) == 0 and err == '', err


def test_a_stats_command_that_does_not_exist_is_a_usage_error():
    result = run_script('common.py', 'bogus')
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("common.py: error: argument stats: invalid choice: 'bogus'")


def test_mean_std_per_channel():
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[:, 1] = 255
    images[0, 2] = 255
    mean, std = common.mean_std(images)
    assert mean == pytest.approx([0, 1, 0.5]) and std == pytest.approx([0, 0, 0.5])


# ---- real data ---------------------------------------------------------------------------------

def test_real_fashion_mnist_one_short_epoch(fashion_dir):
    """A dense net, one epoch on 10,000 real Fashion-MNIST images, tested on all 10,000 test images."""
    result = run_script('pytorch_mnist.py', '--dataset', 'fashion-mnist', '--data-dir', fashion_dir,
                        '--epochs', '1', '--limit', '10000', '--no-progress')
    assert result.returncode == 0, result.stderr
    accuracy = float(FINAL_LINE.match(result.stdout.splitlines()[-1]).group(1))
    assert accuracy >= 0.70, result.stdout


@pytest.mark.parametrize('required,outcome,status', [('', '1 skipped', 0), ('1', '1 error', 1)])
def test_real_data_tests_fail_without_the_data_where_it_is_required(tmp_path, required, outcome, status):
    """.ci/run sets REQUIRE_REAL_DATA: there a missing Fashion-MNIST fails the suite instead of skipping."""
    env = {**os.environ, 'FASHION_MNIST_DIR': str(tmp_path), 'REQUIRE_REAL_DATA': required}
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                             'tests/test_common.py::test_real_fashion_mnist_one_short_epoch'],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert outcome in result.stdout and result.returncode == status, result.stdout
    assert f'no train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte in {tmp_path}' in result.stdout
