"""--plot: one PNG with the curves and the misclassified images, made without a display."""
import os

import matplotlib.image
import pytest

import pytorch_mnist_convnet
from conftest import run_script

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def check_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert 20_000 < path.stat().st_size < 2_000_000
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 800 and height >= 400
    assert pixels[..., :3].std() > 0.05  # not blank: curves, text and images on white
    assert [p for p in os.listdir(path.parent) if p.endswith('.tmp')] == []


def test_plot_after_training(data_dir, tmp_path, capsys):
    path = tmp_path / 'run.png'
    pytorch_mnist_convnet.main(['--data-dir', str(data_dir), '--dataset', 'fashion-mnist', '--epochs', '2',
                                '--limit', '100', '--no-progress', '--plot', str(path)])
    check_png(path)


def test_plot_without_display_in_a_subprocess(data_dir, tmp_path):
    path = tmp_path / 'run.png'
    env = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'WAYLAND_DISPLAY', 'MPLBACKEND')}
    result = run_script('pytorch_mnist.py', '--data-dir', data_dir, '--epochs', '1', '--limit', '100',
                        '--plot', path, env=env)
    assert result.returncode == 0, result.stderr
    check_png(path)


def test_plot_into_a_missing_folder_is_a_usage_error(data_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pytorch_mnist_convnet.main(['--data-dir', str(data_dir), '--plot', '/no/such/folder/x.png'])
    assert exit_info.value.code == 2
    assert 'argument --plot: folder /no/such/folder does not exist' in capsys.readouterr().err
