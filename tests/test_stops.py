"""Nothing lost: stops by Ctrl-C, kill, a closed terminal or pipe; saves that fail; an interrupted run that
must not replace a better model. Signals and exit statuses through real subprocesses."""
import errno
import io
import os
import select
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

import common
import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import saving, stops
from conftest import OFFLINE, ROOT, StdoutLines, run_script, start_script


def leftovers(folder):
    return [p for p in os.listdir(folder) if p.endswith('.tmp')]


@pytest.mark.parametrize('signum,words', [(signal.SIGINT, 'interrupted'), (signal.SIGTERM, 'stopped by SIGTERM'),
                                          (signal.SIGHUP, 'stopped by SIGHUP')],
                         ids=['SIGINT', 'SIGTERM', 'SIGHUP'])
def test_a_stop_signal_stops_at_a_batch_boundary_and_saves(data_dir, tmp_path, signum, words):
    path = tmp_path / 'model.pt'
    with start_script('pytorch_mnist_convnet.py', '--data-dir', data_dir, '--epochs', '1000',
                      '--no-progress', '--save-model', path) as process:
        out = StdoutLines(process)
        out.wait_for('Test data results')  # a finished epoch
        process.send_signal(signum)
        assert process.wait(timeout=60) == 128 + signum
        err = process.stderr.read()
    assert 'Traceback' not in err
    epochs = [line for line in out.rest() if line.startswith('Test data results')]
    accuracy = epochs[-1].split()[3].rstrip(',')
    [message] = [line for line in err.splitlines() if ' in epoch ' in line]
    assert message.startswith(f'{words} in epoch {len(epochs) + 1}/1000 at batch ')
    assert message.endswith(f'; last test accuracy: {accuracy} after epoch {len(epochs)}')
    assert f'Model saved to {path}' in err
    assert torch.load(path, weights_only=True)['net'] == 'simple' and leftovers(tmp_path) == []


SIGNAL_DURING_SAVE = '''
import os, runpy, signal, sys, torch
save = torch.save
def save_with_a_signal_halfway(obj, f):
    f.write(b'half a model')
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)
    f.seek(0)
    f.truncate()
    save(obj, f)
torch.save = save_with_a_signal_halfway
sys.argv = ['pytorch_mnist.py', *sys.argv[1:]]
runpy.run_path('pytorch_mnist.py', run_name='__main__')
'''


def test_signals_during_a_save_wait_for_it_and_leave_no_temporary_file(data_dir, tmp_path):
    path = tmp_path / 'model.pt'
    result = run_script('-c', SIGNAL_DURING_SAVE, '--data-dir', data_dir, '--epochs', '1', '--limit', '100',
                        '--no-progress', '--save-model', path)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.splitlines()[-1] == 'stopped by SIGTERM after training had finished'
    assert torch.load(path, weights_only=True)['net'] == 'nielsen'
    assert leftovers(tmp_path) == []


def test_a_closed_stdout_ends_quietly_after_saving(data_dir, tmp_path):
    """`... | head -1`: the reader goes away after the first line."""
    path = tmp_path / 'model.pt'
    with start_script('pytorch_mnist_convnet.py', '--data-dir', data_dir, '--epochs', '1000',
                      '--no-progress', '--save-model', path) as process:
        assert select.select([process.stdout], [], [], 120)[0], 'no output within 120 s'
        assert process.stdout.readline().startswith('Device: ')
        process.stdout.close()
        assert process.wait(timeout=120) == 128 + signal.SIGPIPE
        err = process.stderr.read()
    assert 'Traceback' not in err and 'Exception ignored' not in err, err
    assert err.splitlines()[-1].startswith('stopped (standard output was closed) in epoch ')
    assert torch.load(path, weights_only=True)['net'] == 'simple'


def script_into(*args, stdout, stderr):
    """run_script, with stdout and stderr where the test says."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, stdout=stdout, stderr=stderr, text=True,
                          timeout=300, env={**os.environ, **OFFLINE, 'PYTHONUNBUFFERED': '1'})


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='no /dev/full on this system (Linux has one)')
def test_stdout_on_a_full_disk_from_the_start_stops_before_any_work(data_dir, tmp_path):
    """`> /dev/full`: the first line cannot be written. Fails when that is a traceback, or the run trains on."""
    path = tmp_path / 'model.pt'
    with open('/dev/full', 'w') as full:
        result = script_into('pytorch_mnist.py', '--data-dir', data_dir, '--epochs', '1', '--limit', '100',
                             '--no-progress', '--save-model', path, stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 128 + signal.SIGPIPE
    assert result.stderr.splitlines() == ['stopped (standard output could not be written: No space left on device)']
    assert not path.exists()


class FillsUp(io.StringIO):
    """A stdout whose disk fills after `lines` lines."""

    def __init__(self, lines):
        super().__init__()
        self.left = lines

    def write(self, text):
        if self.left <= 0:
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.left -= text.count('\n')
        return super().write(text)

    def fileno(self):
        raise io.UnsupportedOperation('no file')


def test_stdout_whose_disk_fills_midway_saves_the_model_then_stops(data_dir, tmp_path, monkeypatch, capsys):
    """The epoch line cannot be written after the first one: fails when that is a traceback and the model
    (on another disk) is never saved."""
    path = tmp_path / 'model.pt'
    monkeypatch.setattr(sys, 'stdout', FillsUp(lines=2))  # the Device line and epoch 1's
    with pytest.raises(SystemExit) as stopped:
        stops.run_as_command(lambda: pytorch_mnist.main(quick(data_dir, '--epochs', '4', '--save-model', str(path))))
    assert stopped.value.code == 128 + signal.SIGPIPE
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith('stopped (standard output could not be written: No space left on device) in epoch 3/4')
    assert torch.load(path, weights_only=True)['resume']['epoch'] == 2


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='no /dev/full on this system (Linux has one)')
def test_stderr_on_a_full_disk_loses_nothing(data_dir, tmp_path):
    """`2> /dev/full`: the lines on stderr are lost, nothing else. Fails when the model is saved but the
    picture is not, and a run that succeeded exits 1."""
    model, picture = tmp_path / 'model.pt', tmp_path / 'run.png'
    with open('/dev/full', 'w') as full:
        result = script_into('pytorch_mnist.py', '--data-dir', data_dir, '--epochs', '1', '--limit', '100',
                             '--no-progress', '--save-model', model, '--plot', picture, stdout=subprocess.PIPE,
                             stderr=full)
    assert result.returncode == 0
    assert model.exists() and picture.read_bytes()[:4] == b'\x89PNG'


class ReaderGoes(io.StringIO):
    """A stdout whose reader goes away after the first line (`... | head -1`)."""

    def flush(self):
        if self.getvalue().count('\n') > 1:
            raise OSError(errno.EPIPE, 'Broken pipe')


def test_a_reader_gone_after_the_first_line_still_gets_the_picture_saved(data_dir, tmp_path, monkeypatch, capsys):
    """`--load-model m.pt --predict ... --plot p.png | head -1`: fails when the closed pipe stops the run at once,
    before the picture the user asked for is written."""
    model, image, picture = tmp_path / 'm.pt', tmp_path / 'seven.png', tmp_path / 'p.png'
    pytorch_mnist.main(quick(data_dir, '--epochs', '1', '--save-model', str(model)))
    Image.new('L', (28, 28)).save(image)
    monkeypatch.setattr(sys, 'stdout', ReaderGoes())
    with pytest.raises(SystemExit) as stopped:
        stops.run_as_command(lambda: pytorch_mnist.main(['--data-dir', str(data_dir), '--no-progress', '--device',
                                                         'cpu', '--load-model', str(model), '--predict', str(image),
                                                         '--plot', str(picture)]))
    assert stopped.value.code == 128 + signal.SIGPIPE and picture.read_bytes()[:4] == b'\x89PNG'


def test_a_signal_before_training_stops_at_once(tmp_path):
    """Nothing to save yet: a stop while the data is read ends the run there, in one line."""
    with start_script('-c', 'import time\nfrom plumbing import stops\n'
                            'stops.run_as_command(lambda: (print("reading the data"), time.sleep(60)))') as process:
        StdoutLines(process).wait_for('reading the data')
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        assert process.stderr.read().strip().splitlines()[-1] == 'stopped by SIGTERM'


def stop_at_step(script, monkeypatch, step_number):
    """Ctrl-C during the given step (counted from 1) of the script's training."""
    calls = []
    step = script.sgd_step

    def interrupted(*args):
        calls.append(1)
        if len(calls) == step_number:
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(script, 'sgd_step', interrupted)


def quick(data_dir, *extra):
    """On the CPU: the tests count calls of the script's sgd_step, which a CUDA graph replays without."""
    return ['--data-dir', str(data_dir), '--device', 'cpu', '--epochs', '3', '--limit', '100', '--no-progress',
            *extra]


def test_stopped_in_the_first_epoch_keeps_an_existing_model(data_dir, tmp_path, monkeypatch, capsys):
    good = tmp_path / 'model.pt'
    good.write_bytes(b'a model trained for hours')
    stop_at_step(pytorch_mnist, monkeypatch, 3)
    with pytest.raises(stops.Interrupted, match='interrupted in epoch 1/3 at batch 2/10; last test accuracy: none'):
        pytorch_mnist.main(quick(data_dir, '--save-model', str(good)))
    assert good.read_bytes() == b'a model trained for hours'
    beside = tmp_path / 'model.interrupted.pt'
    assert torch.load(beside, weights_only=True)['net'] == 'nielsen'
    err = capsys.readouterr().err
    assert f'Kept {good}: training stopped before its first epoch ended' in err
    assert f'Model saved to {beside}' in err


def test_stopped_after_an_epoch_replaces_the_model(data_dir, tmp_path, monkeypatch, capsys):
    old = tmp_path / 'model.pt'
    old.write_bytes(b'an older model')
    stop_at_step(pytorch_mnist, monkeypatch, 13)
    with pytest.raises(stops.Interrupted, match='in epoch 2/3 at batch 2/10'):
        pytorch_mnist.main(quick(data_dir, '--save-model', str(old)))
    assert torch.load(old, weights_only=True)['net'] == 'nielsen'
    assert not (tmp_path / 'model.interrupted.pt').exists()


def test_a_save_that_fails_after_training_goes_to_a_fallback(data_dir, tmp_path, monkeypatch, capsys):
    """The folder was writable when training began; at the end the save fails (disk full, say)."""
    model_path, plot_path = tmp_path / 'out' / 'model.pt', tmp_path / 'out' / 'run.png'
    model_path.parent.mkdir()
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    write = saving.atomic_write

    def full_disk(path, what):
        if os.path.dirname(os.path.abspath(path)) == str(model_path.parent):
            raise OSError(28, 'No space left on device')
        return write(path, what)

    monkeypatch.setattr(saving, 'atomic_write', full_disk)
    with pytest.raises(stops.UserError) as info:
        pytorch_mnist_convnet.main(quick(data_dir, '--epochs', '1', '--save-model', str(model_path),
                                         '--plot', str(plot_path)))
    model_line, plot_line = str(info.value).splitlines()
    saved = sorted(os.listdir(work))
    assert [name.split('-saved-')[0] for name in saved] == ['model', 'run'], saved
    assert model_line == (f'could not save the model to {model_path} (No space left on device); '
                          f'saved it to {work / saved[0]} instead')
    assert plot_line == (f'could not save the plot to {plot_path} (No space left on device); '
                         f'saved it to {work / saved[1]} instead')
    assert torch.load(work / saved[0], weights_only=True)['net'] == 'simple'
    assert (work / saved[1]).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'Test data results' in capsys.readouterr().out  # the result was printed before


def test_a_failed_save_exits_1_with_one_line_per_file(data_dir, tmp_path):
    code = '''
import os, runpy, sys
sys.path.insert(0, os.getcwd())
script = os.path.abspath('pytorch_mnist.py')
os.chdir(os.environ['WORK'])
from plumbing import saving
write = saving.atomic_write
def fails_in_out(path, what):
    if os.path.basename(os.path.dirname(os.path.abspath(path))) == 'out':
        raise PermissionError(13, 'Permission denied')
    return write(path, what)
saving.atomic_write = fails_in_out
sys.argv = [script, *sys.argv[1:]]
runpy.run_path(script, run_name='__main__')
'''
    (tmp_path / 'out').mkdir()
    (tmp_path / 'work').mkdir()
    env = {**os.environ, 'WORK': str(tmp_path / 'work')}
    result = run_script('-c', code, '--data-dir', data_dir, '--epochs', '1', '--limit', '100', '--no-progress',
                        '--save-model', tmp_path / 'out' / 'm.pt', env=env)
    assert result.returncode == 1, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith('could not save')]
    assert line.startswith(f'could not save the model to {tmp_path / "out" / "m.pt"} (Permission denied); saved it to ')
    fallback = line.split('saved it to ')[1].removesuffix(' instead')
    assert os.path.dirname(fallback) == str(tmp_path / 'work')  # the current folder
    assert torch.load(fallback, weights_only=True)['net'] == 'nielsen'


def test_run_as_command_gives_back_stdout_and_the_signal_handlers():
    """And the batch-boundary hook: while main() runs, Batches takes stops there; after, it knows none."""
    before = {signum: signal.getsignal(signum) for signum in stops.StopRequests.SIGNALS}
    stdout = sys.stdout
    hooks = []
    stops.run_as_command(lambda: hooks.append(common.Batches.at_batch_boundary) or print('result'))
    assert hooks == [stops.STOP.at_batch_boundary] and common.Batches.at_batch_boundary is None
    assert sys.stdout is stdout
    assert {signum: signal.getsignal(signum) for signum in stops.StopRequests.SIGNALS} == before


def test_an_ignored_signal_stays_ignored(data_dir, tmp_path):
    """Started under nohup (SIGHUP ignored), a closed terminal does not stop training; kill still does."""
    with start_script('pytorch_mnist_convnet.py', '--data-dir', data_dir, '--epochs', '1000', '--no-progress',
                      ignored=(signal.SIGHUP,)) as process:
        out = StdoutLines(process)
        out.wait_for('Test data results')
        process.send_signal(signal.SIGHUP)
        out.wait_for('Test data results')  # still training
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM


@pytest.mark.parametrize('error', [errno.EPIPE, errno.EIO], ids=['closed pipe', 'terminal hung up'])
def test_a_reader_that_went_away_silences_output_and_asks_to_stop(tmp_path, error):
    class Gone(io.StringIO):
        def write(self, text):
            raise OSError(error, os.strerror(error))

        def fileno(self):
            return handle.fileno()

    with open(tmp_path / 'out', 'w') as handle:
        guard = stops.ClosedPipeGuard(Gone(), asks_to_stop=True)
        try:
            stops.STOP.training = True  # during training: the stop waits for the next safe point
            guard.write('Test data results: 0.9\n')
            assert stops.STOP.signum == signal.SIGPIPE and stops.how_stopped(signal.SIGPIPE) == \
                'stopped (standard output was closed)'
        finally:
            stops.STOP.restore({})
        quiet = stops.ClosedPipeGuard(Gone(), asks_to_stop=False)
        quiet.write('Model saved to m.pt\n')
        assert stops.STOP.signum is None


def test_a_full_disk_under_stdout_is_a_stop_too_at_once_before_training():
    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, 'No space left on device')

    try:
        with pytest.raises(stops.Stopped):
            stops.ClosedPipeGuard(Full(), asks_to_stop=True).write('x')
        assert stops.how_stopped(signal.SIGPIPE) == 'stopped (standard output could not be written: No space left ' \
                                                    'on device)'
    finally:
        stops.STOP.restore({})


@pytest.mark.parametrize('script', ['pytorch_mnist.py', 'pytorch_mnist_convnet.py', 'cifar_convnet.py'])
def test_ctrl_c_while_torch_loads_is_one_line(script, tmp_path):
    """Ctrl-C during `import torch` (seconds, at every start): simulated by an import of torch that raises the
    interrupt. Fails when a script imports torch before plumbing.first, or that hook is gone: a traceback of
    dozens of lines from inside torch."""
    (tmp_path / 'sitecustomize.py').write_text(
        'import builtins\n'
        'real = builtins.__import__\n'
        'def importing(name, *args, **kwargs):\n'
        '    if name == "torch":\n'
        '        raise KeyboardInterrupt\n'
        '    return real(name, *args, **kwargs)\n'
        'builtins.__import__ = importing\n')
    result = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, 'PYTHONPATH': str(tmp_path)})
    assert result.stderr == 'interrupted\n' and result.stdout == ''
    assert result.returncode in (130, -signal.SIGINT)  # (Python ends as Ctrl-C ends a process)
