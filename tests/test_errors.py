"""Bad input, divergence, damaged data, Ctrl-C, saving and loading: one clear line, nothing lost."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import common
import pytorch_mnist
import pytorch_mnist_convnet
from conftest import OFFLINE, ROOT, run_script
from test_common import FINAL_LINE


def quick(data_dir, *extra):
    return ['--data-dir', str(data_dir), '--epochs', '1', '--limit', '100', '--no-progress', *extra]


def one_line(result, status):
    assert result.returncode == status, result.stderr
    assert 'Traceback' not in result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize('flag,value', [('--epochs', '0'), ('--batch-size', '0'), ('--limit', '-3'),
                                        ('--lr', '0'), ('--lr', 'inf'), ('--lr', 'abc'), ('--wd', '-0.1'),
                                        ('--wd', 'nan'), ('--save-model', '/no/such/folder/m.pt')])
def test_bad_flag_names_the_flag(data_dir, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        pytorch_mnist_convnet.main(quick(data_dir, flag, value))
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_divergence_is_one_line(data_dir):
    result = run_script('pytorch_mnist_convnet.py', *quick(data_dir, '--net', 'relu', '--lr', '1e30'))
    line = one_line(result, 1)
    assert line in ('training diverged at epoch 1 (loss is nan); try a smaller --lr',
                    'training diverged at epoch 1 (loss is inf); try a smaller --lr')


def test_divergence_leaves_no_model(data_dir, tmp_path, capsys):
    path = tmp_path / 'm.pt'
    with pytest.raises(common.UserError, match='diverged'):
        pytorch_mnist_convnet.main(quick(data_dir, '--net', 'relu', '--lr', '1e30', '--save-model', str(path)))
    assert not path.exists()


@pytest.mark.parametrize('file', ['train-images-idx3-ubyte', 't10k-labels-idx1-ubyte'])
@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_damaged_data_file_is_named(fresh_data_dir, file, damage):
    path = fresh_data_dir / 'MNIST' / 'raw' / file
    if damage == 'truncate':
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    else:
        path.write_bytes(b'not an idx file')
    result = run_script('pytorch_mnist.py', *quick(fresh_data_dir))
    line = one_line(result, 1)
    assert str(path) in line and 'delete it' in line


def test_save_then_load_gives_the_same_accuracy(data_dir, tmp_path, capsys):
    path = tmp_path / 'model.pt'
    _, _, trained = pytorch_mnist_convnet.main(quick(data_dir, '--net', 'lenet', '--save-model', str(path)))
    assert path.exists() and not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
    capsys.readouterr()
    _, _, loaded = pytorch_mnist_convnet.main(quick(data_dir, '--net', 'lenet', '--load-model', str(path)))
    assert loaded['accuracy'] == trained['accuracy'][-1:]
    out = capsys.readouterr().out.splitlines()
    assert FINAL_LINE.match(out[-1]) and not any('Epoch' in line for line in out)
    checkpoint = torch.load(path, weights_only=True)
    assert (checkpoint['script'], checkpoint['net'], checkpoint['dataset']) == \
        ('pytorch_mnist_convnet.py', 'lenet', 'mnist')
    assert checkpoint['mean'] == [0.1305] and checkpoint['std'] == [0.3081]


def test_load_model_refuses_other_nets_and_non_models(data_dir, tmp_path, capsys):
    path = tmp_path / 'model.pt'
    pytorch_mnist_convnet.main(quick(data_dir, '--save-model', str(path)))
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'\x00' * 100)
    dense = tmp_path / 'dense.pt'
    pytorch_mnist.main(quick(data_dir, '--save-model', str(dense)))
    cases = [('pytorch_mnist_convnet.py', ['--net', 'relu', '--load-model', path], "'simple' net"),
             ('pytorch_mnist.py', ['--load-model', path], 'pytorch_mnist_convnet.py --net simple'),
             ('pytorch_mnist_convnet.py', ['--load-model', dense], 'pytorch_mnist.py --net nielsen'),
             ('pytorch_mnist_convnet.py', ['--load-model', path, '--dataset', 'fashion-mnist'], 'mnist'),
             ('pytorch_mnist_convnet.py', ['--load-model', junk], 'not a model'),
             ('pytorch_mnist_convnet.py', ['--load-model', tmp_path / 'none.pt'], 'no such file')]
    for script, flags, words in cases:
        result = run_script(script, *quick(data_dir, *flags))
        assert words in one_line(result, 1), (script, flags)


def test_interrupted_save_leaves_nothing_half_written(data_dir, tmp_path, monkeypatch, capsys):
    path = tmp_path / 'model.pt'
    path.write_bytes(b'the previous model')

    def dies_halfway(obj, f):
        f.write(b'half a model')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        pytorch_mnist.main(quick(data_dir, '--save-model', str(path)))
    assert path.read_bytes() == b'the previous model'
    assert os.listdir(tmp_path) == ['model.pt']


def test_ctrl_c_stops_cleanly_and_saves(data_dir, tmp_path):
    """SIGINT to a running training: status 130, where it stopped, and the model saved."""
    path = tmp_path / 'model.pt'
    command = [sys.executable, 'pytorch_mnist_convnet.py', '--data-dir', str(data_dir), '--epochs', '1000',
               '--no-progress', '--save-model', str(path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **OFFLINE, 'PYTHONUNBUFFERED': '1'})
    first = process.stdout.readline()
    while not first.startswith('Test data results'):  # wait for a finished epoch
        first = process.stdout.readline()
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert 'Traceback' not in err
    epochs = [line for line in [first, *out.splitlines()] if line.startswith('Test data results')]
    last = epochs[-1].split()[3].rstrip(',')  # the accuracy of the last finished epoch
    assert 'interrupted in epoch' in err and f'last test accuracy: {last}' in err
    assert path.exists() and torch.load(path, weights_only=True)['net'] == 'simple'
