"""Bad input, divergence, damaged data, Ctrl-C, saving and loading: one clear line, nothing lost."""
import os
import re
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import stops
from plumbing import flags
from plumbing.flags import beside, picture_formats
from conftest import N_TEST, run_script, write_idx
from test_common import FINAL_LINE


def quick(data_dir, *extra):
    return ['--data-dir', str(data_dir), '--epochs', '1', '--limit', '100', '--no-progress', *extra]


def loading(data_dir, *extra):
    """Flags for --load-model, which takes no training flags."""
    return ['--data-dir', str(data_dir), '--limit', '100', '--no-progress', *extra]


def one_line(result, status):
    assert result.returncode == status, result.stderr
    assert 'Traceback' not in result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize('flag,value', [('--epochs', '0'), ('--batch-size', '0'), ('--limit', '-3'),
                                        ('--lr', '0'), ('--lr', 'inf'), ('--lr', 'abc'), ('--wd', '-0.1'),
                                        ('--wd', 'nan'), ('--save-model', '/no/such/folder/m.pt'),
                                        ('--seed', str(2 ** 64)), ('--seed', str(-2 ** 63 - 1)), ('--seed', 'x')])
def test_bad_flag_names_the_flag(data_dir, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        pytorch_mnist_convnet.main(quick(data_dir, flag, value))
    assert exit_info.value.code == 2
    assert f'argument {flag}:' in capsys.readouterr().err


def test_divergence_is_one_line(data_dir):
    result = run_script('pytorch_mnist_convnet.py', *quick(data_dir, '--net', 'relu', '--lr', '1e30'))
    line = one_line(result, 1)
    assert line in ('training diverged at epoch 1 (loss is nan); try a smaller --lr',
                    'training diverged at epoch 1 (loss is inf); try a smaller --lr')


def test_divergence_that_stays_finite_is_divergence(data_dir, monkeypatch):
    """A loss blown up to 1e31 that ends at chance: fails when only nan and inf count as divergence, and the
    run ends as if it had learned."""
    import common
    with pytest.raises(common.Diverged, match=r'^training diverged at epoch 2 \(loss is 1e\+31\); try a smaller '
                                              r'--lr$'):
        common.stop_if_diverged(1e31, 2)
    common.stop_if_diverged(2.31, 1)  # chance: not learning, but not diverged


def test_divergence_under_the_books_l2_term_names_lmbda(data_dir, capsys):
    """--book --lmbda 1e308: fails when the line blames --lr alone."""
    with pytest.raises(stops.UserError, match=r'^training diverged at epoch 1 \(loss is (nan|inf)\); try a smaller '
                                              r'--lr or --lmbda$'):
        pytorch_mnist_convnet.main(quick(data_dir, '--net', 'relu', '--book', '--lmbda', '1e308'))


def test_divergence_leaves_no_model(data_dir, tmp_path, capsys):
    path = tmp_path / 'm.pt'
    with pytest.raises(stops.UserError, match='diverged'):
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


@pytest.mark.numerics
def test_save_then_load_gives_the_same_accuracy(data_dir, tmp_path, capsys):
    path = tmp_path / 'model.pt'
    _, _, trained = pytorch_mnist_convnet.main(quick(data_dir, '--net', 'lenet', '--save-model', str(path)))
    assert path.exists() and not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
    capsys.readouterr()
    _, _, loaded = pytorch_mnist_convnet.main(loading(data_dir, '--net', 'lenet', '--load-model', str(path)))
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
    cases = [('pytorch_mnist_convnet.py', ['--net', 'relu', '--load-model', path],
              f"--load-model {path}: it holds the 'simple' net of pytorch_mnist_convnet.py; "
              f"run pytorch_mnist_convnet.py --net simple"),
             ('pytorch_mnist.py', ['--load-model', path], 'run pytorch_mnist_convnet.py --net simple'),
             ('pytorch_mnist_convnet.py', ['--load-model', dense], 'run pytorch_mnist.py --net nielsen'),
             ('pytorch_mnist_convnet.py', ['--load-model', path, '--dataset', 'fashion-mnist'],
              f'--load-model {path}: it was trained on mnist; add --dataset mnist'),
             ('pytorch_mnist_convnet.py', ['--load-model', junk], f'--load-model {junk}: not a model saved by'),
             ('pytorch_mnist_convnet.py', ['--load-model', tmp_path / 'none.pt'],
              f'--load-model {tmp_path / "none.pt"}: no such file')]
    for script, given, words in cases:
        result = run_script(script, *loading(data_dir, *given))
        assert words in one_line(result, 1), (script, given)


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


# ---- what can be checked before training starts -------------------------------------------------

def usage_error(capsys, argv, script=pytorch_mnist_convnet):
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_seeds_torch_accepts_are_accepted(data_dir, capsys):
    for seed in (str(-2 ** 63), str(2 ** 64 - 1)):
        pytorch_mnist.main(quick(data_dir, '--seed', seed, '--limit', '20'))


@pytest.mark.parametrize('flag', ['--save-model', '--plot'])
def test_an_output_path_that_names_a_folder_is_a_usage_error(data_dir, tmp_path, capsys, flag):
    name = 'x.png' if flag == '--plot' else 'x.pt'
    assert usage_error(capsys, quick(data_dir, flag, f'{tmp_path}/')).endswith(
        f'argument {flag}: {tmp_path}/ is a folder; give a file name in it')
    assert usage_error(capsys, quick(data_dir, flag, f'{tmp_path}/new/')).endswith(
        f'argument {flag}: {tmp_path}/new/ is a folder; give a file name in it')
    (tmp_path / name).mkdir()
    assert usage_error(capsys, quick(data_dir, flag, str(tmp_path / name))).endswith(
        f'argument {flag}: {tmp_path / name} is a folder; give a file name in it')


def test_an_output_folder_that_takes_no_file_is_a_usage_error(data_dir, capsys):
    try:  # /sys takes no new file, even from root; elsewhere the test has nothing to try
        tempfile.TemporaryFile(dir='/sys').close()
        pytest.skip('/sys takes new files here')
    except OSError as e:
        reason = e.strerror  # Permission denied, or Read-only file system
    assert usage_error(capsys, quick(data_dir, '--save-model', '/sys/m.pt')).endswith(
        f'argument --save-model: cannot write in folder /sys ({reason})')


def test_plot_and_model_must_differ(data_dir, tmp_path, capsys):
    path = str(tmp_path / 'run.png')
    assert usage_error(capsys, quick(data_dir, '--save-model', path, '--plot', path)).endswith(
        f'argument --plot: {path} is also the --save-model path; the picture would replace the model')


def test_the_plot_extension_picks_the_format(data_dir, tmp_path, capsys):
    assert usage_error(capsys, quick(data_dir, '--plot', str(tmp_path / 'run.xyz'))).endswith(
        f'argument --plot: {tmp_path / "run.xyz"}: the extension must name a picture format: '
        f'{", ".join("." + f for f in sorted(picture_formats()))}')
    for name, magic in (('run.jpg', b'\xff\xd8\xff'), ('run.pdf', b'%PDF'), ('run.svg', b'<?xml')):
        pytorch_mnist.main(quick(data_dir, '--limit', '20', '--plot', str(tmp_path / name)))
        assert (tmp_path / name).read_bytes().startswith(magic), name


def test_load_model_with_training_flags_is_a_usage_error(data_dir, tmp_path, capsys):
    path = str(tmp_path / 'm.pt')
    pytorch_mnist.main(quick(data_dir, '--limit', '20', '--save-model', path))
    line = usage_error(capsys, loading(data_dir, '--load-model', path, '--epochs', '5', '--save-model',
                                       str(tmp_path / 'n.pt')), pytorch_mnist)
    assert line.endswith('argument --load-model: it tests a saved model and trains nothing, so --epochs, '
                         '--save-model would be ignored; drop them')
    for flag, value in (('--lr', '0.1'), ('--wd', '0.1'), ('--wd', '0'), ('--batch-size', '5'), ('--seed', '3'),
                        ('--seed', '0'), ('--extend_data', None)):
        line = usage_error(capsys, loading(data_dir, '--load-model', path, flag, *[value] if value else []),
                           pytorch_mnist)
        assert f'so {flag.replace("_", "-")} would be ignored; drop it' in line
    _, _, history = pytorch_mnist.main(loading(data_dir, '--load-model', path, '--plot', str(tmp_path / 'p.png')))
    assert len(history['accuracy']) == 1 and (tmp_path / 'p.png').exists()


def test_load_model_names_what_torch_found_wrong(data_dir, tmp_path):
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'\x00' * 100)
    line = one_line(run_script('pytorch_mnist_convnet.py', *loading(data_dir, '--load-model', junk)), 1)
    match = re.fullmatch(rf'--load-model {re.escape(str(junk))}: not a model saved by these scripts \((.+)\)', line)
    assert match and 'documentation' not in match.group(1) and 'weights_only' not in match.group(1), line


# ---- data errors name the real cause, before training ---------------------------------------------

def test_a_data_file_that_cannot_be_read_is_not_called_missing_or_damaged(fresh_data_dir):
    code = """
import os, runpy, sys
from torchvision.datasets import mnist
def no_permission(path, *args, **kwargs):
    raise PermissionError(13, 'Permission denied', str(path))
mnist.open = no_permission  # what a file the user may not read does to torchvision's reader
sys.argv = ['pytorch_mnist.py', *sys.argv[1:]]
runpy.run_path('pytorch_mnist.py', run_name='__main__')
"""
    result = run_script('-c', code, *quick(fresh_data_dir))
    line = one_line(result, 1)
    assert line == f'cannot read {fresh_data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte"} (permission denied)'
    assert 'Test data results' not in result.stdout


def test_images_and_labels_of_different_lengths_name_both_files(fresh_data_dir):
    raw = fresh_data_dir / 'MNIST' / 'raw'
    labels = raw / 't10k-labels-idx1-ubyte'
    write_idx(labels, np.zeros(N_TEST - 7, dtype=np.uint8))
    result = run_script('pytorch_mnist.py', *quick(fresh_data_dir))
    assert one_line(result, 1) == (f'{raw / "t10k-images-idx3-ubyte"} holds {N_TEST} images but {labels} holds '
                                   f'{N_TEST - 7} labels; one of them is damaged: delete both and run again to '
                                   f'download them anew')
    assert 'Test data results' not in result.stdout


def test_every_file_a_run_writes_is_its_own(data_dir, tmp_path, capsys):
    """--predict's picture goes beside the plot (NAME.predictions.EXT): fails when that derived path is not
    compared with the model's, and the picture replaces the model after training."""
    model, plot = tmp_path / 'a.predictions.png', tmp_path / 'a.png'
    image = tmp_path / 'seven.png'
    Image.new('L', (28, 28)).save(image)
    assert usage_error(capsys, quick(data_dir, '--save-model', str(model), '--plot', str(plot), '--predict',
                                     str(image))).endswith(
        f'argument --plot: {model} is also the --save-model path; --predict\'s picture (beside the plot) would '
        f'replace the model')
    assert not model.exists()


def test_a_long_file_name_that_fits_its_folder_is_saved(data_dir, tmp_path, capsys):
    """A 250-byte name: fails when the temporary file, or a name beside it, is built too long to be written."""
    name = 'x' * 247 + '.pt'
    pytorch_mnist.main(quick(data_dir, '--limit', '20', '--save-model', str(tmp_path / name)))
    assert (tmp_path / name).exists() and 'Model saved to' in capsys.readouterr().err
    assert len(os.path.basename(beside(str(tmp_path / name), 'interrupted')).encode()) == 255


def test_a_file_name_too_long_for_its_folder_is_a_usage_error(data_dir, tmp_path, capsys):
    name = 'y' * 297 + '.pt'
    line = usage_error(capsys, quick(data_dir, '--save-model', str(tmp_path / name)))
    assert 'error: argument --save-model: the name of the model, yyy' in line
    assert line.endswith('is 300 bytes long, and that folder takes names of up to 255; give a shorter one')


def test_a_save_target_is_checked_where_a_link_points(data_dir, tmp_path, capsys):
    """A symbolic link into a folder that does not exist: fails when only the link's own folder is checked,
    and the save fails after training."""
    link = tmp_path / 'm.pt'
    link.symlink_to(tmp_path / 'gone' / 'm.pt')
    assert usage_error(capsys, quick(data_dir, '--save-model', str(link))).endswith(
        f'argument --save-model: folder {tmp_path / "gone"} does not exist')


def test_the_file_resume_saves_back_to_is_checked_first(data_dir, tmp_path, capsys, monkeypatch):
    """--resume saves back to its file: in a folder that takes no new file (read-only here), that is a usage
    error before any work. Fails when it is found out after training."""
    folder = tmp_path / 'runs'
    folder.mkdir()
    path = folder / 'm.pt'
    pytorch_mnist.main(quick(data_dir, '--limit', '20', '--save-model', str(path)))
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir == str(folder):
            raise OSError(30, 'Read-only file system')
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(flags.tempfile, 'TemporaryFile', read_only)
    line = usage_error(capsys, ['--data-dir', str(data_dir), '--no-progress', '--resume', str(path), '--epochs', '2'],
                       pytorch_mnist)
    assert line.endswith(f'argument --resume: the model goes to {path}, and cannot write in folder {folder} '
                         f'(Read-only file system)')


def test_a_picture_format_that_needs_latex_is_refused_without_it(data_dir, tmp_path, capsys, monkeypatch):
    import matplotlib
    monkeypatch.setattr('shutil.which', lambda name: None)
    assert usage_error(capsys, quick(data_dir, '--plot', str(tmp_path / 'x.pgf'))).endswith(
        f'argument --plot: {tmp_path / "x.pgf"}: matplotlib writes .pgf through {matplotlib.rcParams["pgf.texsystem"]}, '
        f'which is not installed here; use .pdf, .svg or .png')


def test_no_file_a_run_reads_is_written_over(data_dir, tmp_path, capsys):
    """--plot on the photo given to --predict: fails when the picture replaces the user's photo."""
    photo, model = tmp_path / 'seven.png', tmp_path / 'm.pt'
    Image.new('L', (28, 28)).save(photo)
    pytorch_mnist.main(quick(data_dir, '--limit', '20', '--save-model', str(model)))
    before = photo.read_bytes()
    assert usage_error(capsys, loading(data_dir, '--load-model', str(model), '--predict', str(photo), '--plot',
                                       str(photo)), pytorch_mnist).endswith(
        f'argument --plot: {photo} is also a file given to --predict; the picture would replace it')
    assert photo.read_bytes() == before


def test_names_beside_a_long_one_are_cut_by_bytes_and_never_hang(tmp_path):
    """A 252-byte name whose extension is most of it, and 84 three-byte characters: fails when cutting the stem
    loops forever, or counts characters where the folder counts bytes (the model is then lost)."""
    for name in ('a.' + 'x' * 250, '模' * 84 + '.pt'):
        neighbour = os.path.basename(beside(str(tmp_path / name), 'interrupted'))
        assert len(neighbour.encode()) <= 255 and neighbour.encode().decode() == neighbour
    from plumbing import saving
    saving.atomic_write(str(tmp_path / ('模' * 84 + '.pt')), lambda f: f.write(b'model'))
    assert (tmp_path / ('模' * 84 + '.pt')).read_bytes() == b'model'


def test_a_script_stops_on_a_loss_that_blew_up_but_stayed_finite(data_dir, monkeypatch):
    """The loop's own check: fails when a script drops common.stop_if_diverged, or it lets 1e31 through."""
    monkeypatch.setattr(pytorch_mnist_convnet.F, 'cross_entropy', lambda outputs, labels: outputs.sum() * 0 + 1e31)
    with pytest.raises(stops.UserError, match=r'^training diverged at epoch 1 \(loss is 1e\+31\)'):
        pytorch_mnist_convnet.main(quick(data_dir, '--net', 'simple', '--limit', '20'))
