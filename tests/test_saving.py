"""Nothing lost at the edges of saving and loading: a save that fails in any way falls back; a device, FIFO
or socket is never replaced; a damaged, cut or edited model file is one line; a stdout closed from the
start; a resumed run finds its data."""
import errno
import re
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch

import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import loading, saving, stops
from conftest import OFFLINE, ROOT, run_script


def quick(data_dir, *extra):
    return ['--data-dir', str(data_dir), '--device', 'cpu', '--epochs', '1', '--limit', '100', '--no-progress',
            *extra]


def fails_under(folder, fail):
    """saving.atomic_write, except that a write into `folder` calls fail(), which raises (and writes nothing)."""
    write = saving.atomic_write

    def atomic_write(path, what):
        if os.path.dirname(os.path.abspath(path)) == str(folder):
            fail()
        return write(path, what)
    return atomic_write


def full_disk_as_torch_save_says_it():
    """What torch.save raised on a full disk: a RuntimeError, raised while the OSError was handled."""
    try:
        raise OSError(errno.ENOSPC, 'No space left on device')
    except OSError:
        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 4288 vs 4192')  # noqa: B904


def refused():
    raise ValueError('the library said no')


def test_a_full_disk_as_torch_reports_it_still_falls_back_for_model_and_picture(data_dir, tmp_path, monkeypatch):
    out, work = tmp_path / 'out', tmp_path / 'work'
    out.mkdir(), work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(saving, 'atomic_write', fails_under(out, full_disk_as_torch_save_says_it))
    with pytest.raises(stops.UserError) as info:
        pytorch_mnist_convnet.main(quick(data_dir, '--save-model', str(out / 'm.pt'), '--plot', str(out / 'm.png')))
    model_line, plot_line = str(info.value).splitlines()
    model, picture = sorted(os.listdir(work), key=lambda name: name.endswith('.png'))  # m-saved-*.pt, *.png
    assert model_line == (f'could not save the model to {out / "m.pt"} (No space left on device); '
                          f'saved it to {work / model} instead')
    assert plot_line.startswith(f'could not save the plot to {out / "m.png"} (No space left on device); saved it')
    assert torch.load(work / model, weights_only=True)['net'] == 'simple'
    assert (work / picture).read_bytes()[:4] == b'\x89PNG'
    assert os.listdir(out) == []


def test_an_error_of_any_kind_without_a_cause_still_falls_back(data_dir, tmp_path, monkeypatch, capsys):
    out, work = tmp_path / 'out', tmp_path / 'work'
    out.mkdir(), work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(saving, 'atomic_write', fails_under(out, refused))
    with pytest.raises(stops.UserError, match=r'^could not save the model to .*m\.pt \(the library said no\); '
                                               r'saved it to .*m-saved-.*\.pt instead$'):
        pytorch_mnist.main(quick(data_dir, '--save-model', str(out / 'm.pt')))
    [model] = os.listdir(work)
    assert torch.load(work / model, weights_only=True)['net'] == 'nielsen'


def test_a_fallback_that_fails_too_says_so_and_leaves_no_empty_file(tmp_path, monkeypatch):
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(saving, 'atomic_write', lambda path, what: full_disk_as_torch_save_says_it())
    lines = saving.save_with_fallback(str(tmp_path / 'm.pt'), 'model', lambda f: f.write(b'weights'))
    assert lines == [f'could not save the model to {tmp_path / "m.pt"} (No space left on device), nor to '
                     f'{work} or {saving.tempfile.gettempdir()}']
    assert os.listdir(work) == []


def test_a_model_that_cannot_be_made_is_one_line_and_the_picture_is_still_saved(data_dir, tmp_path, monkeypatch):
    def broken(obj, f):
        raise RuntimeError('cannot pickle this')
    monkeypatch.setattr(torch, 'save', broken)
    with pytest.raises(stops.UserError) as info:
        pytorch_mnist.main(quick(data_dir, '--save-model', str(tmp_path / 'm.pt'), '--plot', str(tmp_path / 'm.png')))
    assert str(info.value) == 'could not save the model (cannot pickle this)'
    assert sorted(os.listdir(tmp_path)) == ['m.png']


@pytest.mark.parametrize('flag', ['--save-model', '--plot'])
def test_a_fifo_or_a_device_is_a_usage_error_and_survives(data_dir, tmp_path, capsys, flag):
    fifo = tmp_path / 'pipe.png'
    os.mkfifo(fifo)
    for path, kind in ((fifo, 'a FIFO (named pipe)'), ('/dev/null', 'a character device')):
        with pytest.raises(SystemExit) as stop:
            pytorch_mnist.main(quick(data_dir, flag, str(path)))
        assert stop.value.code == 2
        assert f'error: argument {flag}: {path} is {kind}, not a regular file; give a file path' in capsys.readouterr().err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat('/dev/null').st_mode)


def test_a_fifo_made_during_training_is_not_replaced(tmp_path, monkeypatch):
    fifo, work = tmp_path / 'm.pt', tmp_path / 'work'
    os.mkfifo(fifo)
    work.mkdir()
    monkeypatch.chdir(work)
    [line] = saving.save_with_fallback(str(fifo), 'model', lambda f: f.write(b'weights'))
    [fallback] = os.listdir(work)
    assert line == (f'could not save the model to {fifo} (it is a FIFO (named pipe), not a regular file); '
                    f'saved it to {work / fallback} instead')
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert (work / fallback).read_bytes() == b'weights'


def test_a_symbolic_link_stays_and_the_file_it_points_to_is_saved(tmp_path):
    target, link = tmp_path / 'real.pt', tmp_path / 'link.pt'
    target.write_bytes(b'old')
    link.symlink_to(target)
    assert saving.save_with_fallback(str(link), 'model', lambda f: f.write(b'new')) == []
    assert link.is_symlink() and target.read_bytes() == b'new'


@pytest.fixture(scope='module')
def saved_model(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp('saved') / 'simple.pt'
    pytorch_mnist_convnet.main(quick(data_dir, '--save-model', str(path)))
    return path


def damaged_copy(path, folder, damage):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if damage == 'xor':
        data[middle:middle + 64] = bytes(b ^ 0xA5 for b in data[middle:middle + 64])
    else:
        del data[middle:]
    copy = folder / f'{damage}.pt'
    copy.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize('damage', ['xor', 'truncated'])
@pytest.mark.parametrize('flag', ['--load-model', '--resume'])
def test_a_damaged_or_truncated_model_is_one_line(data_dir, saved_model, tmp_path, damage, flag):
    copy = damaged_copy(saved_model, tmp_path, damage)
    result = run_script('pytorch_mnist_convnet.py', '--data-dir', data_dir, '--limit', '100', '--no-progress', flag, copy)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f'{flag} {copy}: damaged or truncated (')
    if damage == 'xor':
        assert 'does not match the checksum saved with it' in line


def test_the_whole_file_passes_its_checksum(saved_model):
    assert loading.damage_in(saved_model) is None


def test_a_history_edited_to_fewer_epochs_is_refused(data_dir, saved_model, tmp_path):
    edited = torch.load(saved_model, weights_only=True)
    edited['resume']['epoch'] = 2  # two epochs done, but one number of each in the history
    torch.save(edited, tmp_path / 'edited.pt')
    with pytest.raises(stops.UserError, match=r'--resume .*edited\.pt: damaged or edited since it was saved '
                                               r'\(2 epochs done, but 1 number in its history of loss\)'):
        pytorch_mnist_convnet.main(quick(data_dir, '--resume', str(tmp_path / 'edited.pt'), '--epochs', '3'))


def test_resume_finds_the_data_folder_of_the_run(data_dir, saved_model, tmp_path, monkeypatch):
    for name, value in OFFLINE.items():  # a download would fail at once
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    histories = []
    for given in ([], ['--data-dir', str(data_dir)]):
        copy = tmp_path / 'run.pt'
        copy.write_bytes(saved_model.read_bytes())
        argv = ['--device', 'cpu', '--no-progress', '--resume', str(copy), '--epochs', '2', *given]
        histories.append(pytorch_mnist_convnet.main(argv)[2])
        assert sorted(os.listdir(tmp_path)) == ['run.pt']  # no ./data made
    assert len(histories[0]['loss']) == 2 and histories[0] == histories[1]


def test_a_failed_download_leaves_no_empty_folders(tmp_path):
    result = run_script('pytorch_mnist.py', '--data-dir', tmp_path / 'new' / 'data', '--limit', '100')
    assert result.returncode == 1, result.stderr
    assert 'mnist is missing or incomplete in' in result.stderr and 'Traceback' not in result.stderr
    assert os.listdir(tmp_path) == []


def run_with_closed(fd, *args):
    """Run a script with file descriptor `fd` (1: stdout, 2: stderr) closed, as `>&-` or `2>&-` do; the other
    one is read."""
    def close():
        os.close(fd)
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, text=True, timeout=300, preexec_fn=close,
                          env={**os.environ, **OFFLINE}, stdin=subprocess.DEVNULL,
                          **{('stderr' if fd == 1 else 'stdout'): subprocess.PIPE})


def test_a_stdout_closed_from_the_start_is_one_line_before_any_work(data_dir):
    result = run_with_closed(1, 'pytorch_mnist.py', *quick(data_dir))
    assert result.returncode == 128 + signal.SIGPIPE
    assert result.stderr == ('standard output is closed, so the results would be lost; send it to a file '
                             '(> run.log) or to /dev/null instead\n')


def test_a_stderr_closed_from_the_start_still_trains_prints_and_saves(data_dir, tmp_path):
    result = run_with_closed(2, 'pytorch_mnist.py', *quick(data_dir, '--save-model', tmp_path / 'm.pt'))
    assert result.returncode == 0  # "Model saved to ..." went nowhere, quietly
    assert result.stdout.splitlines()[-1].startswith('Test data results: ')
    assert torch.load(tmp_path / 'm.pt', weights_only=True)['net'] == 'nielsen'


EVIL = '''
import os, sys, torch
class Evil:
    def __reduce__(self):
        return (os.system, ('touch ' + sys.argv[2],))
torch.save({'script': 'pytorch_mnist_convnet.py', 'net': 'simple', 'dataset': 'mnist', 'state_dict': Evil()},
           sys.argv[1])
'''


def test_a_file_that_would_run_code_is_refused_and_runs_none(data_dir, tmp_path):
    """A pickle whose loading calls os.system: fails when the line passes on torch's advice to load it with
    weights_only=False, or does not say that it holds code, or the code ran."""
    path, ran = tmp_path / 'evil.pt', tmp_path / 'it-ran'
    subprocess.run([sys.executable, '-c', EVIL, str(path), str(ran)], check=True)
    result = run_script('pytorch_mnist_convnet.py', '--data-dir', data_dir, '--no-progress', '--load-model', path)
    assert result.returncode == 1 and not ran.exists()
    [line] = result.stderr.strip().splitlines()
    assert line == (f'--load-model {path}: refused: it holds code: loading it would call posix.system, and these '
                    f'scripts run no code from a file; it is not a model saved by them'), line
    assert 'weights_only' not in line


def test_a_plain_pickle_file_is_one_line(data_dir, tmp_path):
    """Fails when torch's two-line UserWarning about pickle protocols comes before the line."""
    path = tmp_path / 'plain.pkl'
    subprocess.run([sys.executable, '-c', f'import pickle; pickle.dump({{"a": 1}}, open({str(path)!r}, "wb"))'],
                   check=True)
    result = run_script('pytorch_mnist_convnet.py', '--data-dir', data_dir, '--no-progress', '--load-model', path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f'--load-model {path}: not a model saved by these scripts ('), line


def edit(checkpoint, where, value):
    """Set checkpoint[a][b]... = value, for where = 'a.b...'."""
    *path, last = where.split('.')
    for key in path:
        checkpoint = checkpoint[key]
    checkpoint[last] = value


@pytest.mark.parametrize('where, value', [
    ('state_dict', [1, 2]), ('net', 'bogus'), ('resume.batch_order', 'not a generator state'),
    ('resume.rng', 3), ('resume.run.seeds', ['one', 'two']), ('resume.run.lr', 'fast'),
    ('resume.history.accuracy', ['high']), ('resume.epoch', 'one'), ('resume.optimizer', {'state': 'x'}),
    ('resume.run.lr', -1.0), ('resume.run.batch_size', 0), ('seeds', [1, 2 ** 70]), ('resume.groups', 5),
    ('resume.cuda_rng', ['x'])])
def test_a_model_file_edited_in_any_field_is_not_a_model(data_dir, saved_model, tmp_path, where, value):
    """Checksums made anew, a field changed: fails when any of these is a traceback (from parse_args,
    resume_into or training) instead of one line and exit status 1."""
    edited = torch.load(saved_model, weights_only=True)
    edit(edited, where, value)
    path = tmp_path / 'edited.pt'
    torch.save(edited, path)
    for flag, extra in (('--resume', ['--epochs', '3']), ('--load-model', ['--net', 'simple'])):
        argv = ['--data-dir', str(data_dir), '--limit', '100', '--no-progress', '--device', 'cpu', flag, str(path),
                *extra]
        if flag == '--load-model' and where.startswith('resume.history'):
            pytorch_mnist_convnet.main(argv)  # (it tests the weights; the history is the run's)
            continue
        with pytest.raises(stops.UserError) as refused:  # (anything else, a traceback, fails the test)
            pytorch_mnist_convnet.main(argv)
        assert re.match(rf'{flag} {re.escape(str(path))}: (not a model saved by these scripts|damaged or edited since)',
                        str(refused.value)), refused.value
