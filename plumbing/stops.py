"""Stops and errors: what a script does when it cannot go on, or is asked to stop. One line on stderr and an
exit status, never a traceback; a stop signal during training takes effect at a batch boundary, after what was
learned is saved. run_as_command runs a script's main() this way."""
import contextlib
import errno
import io
import os
import re
import signal
import sys

import common
from data_files import UserError, last_line  # noqa: F401 -- (the plumbing raises stops.UserError)


class Stopped(KeyboardInterrupt):
    """A stop asked for by a signal (Ctrl-C is SIGINT; SIGPIPE stands for a closed stdout)."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupted(Exception):
    """Training stopped early: the message says how and where, `signum` gives the exit status."""

    def __init__(self, stop, where, last):
        self.signum = getattr(stop, 'signum', signal.SIGINT)  # a plain KeyboardInterrupt is Ctrl-C
        super().__init__(f'{how_stopped(self.signum)} in {where}; last test accuracy: {last}')


def how_stopped(signum):
    if signum == signal.SIGPIPE and STOP.stdout_error:
        return f'stopped (standard output could not be written: {STOP.stdout_error})'
    return {signal.SIGINT: 'interrupted', signal.SIGPIPE: 'stopped (standard output was closed)'}.get(
        signum, f'stopped by {signal.Signals(signum).name}')


class StopRequests:
    """What Ctrl-C (SIGINT), kill (SIGTERM), a closed terminal (SIGHUP) or a closed stdout do while
    run_as_command runs a script. Once training has begun, a stop waits for a safe point: the next batch
    boundary (common.Batches calls at_batch_boundary), the end of a save, or the end of the script; the
    same signal again stops at once. Before training, nothing is lost by stopping at once. A signal that was ignored when
    the script started (nohup, `cmd &`) stays ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signum = None          # the stop asked for and not yet taken
        self.training = False       # has training begun?
        self.writing = 0            # saves under way
        self.stdout_error = None    # why stdout could not be written, when not a reader gone

    def install(self):
        """Take over the stop signals that are not ignored; returns their handlers, for restore()."""
        self.signum, self.training, self.writing, self.stdout_error = None, False, 0, None
        return {signum: signal.signal(signum, self.request) for signum in self.SIGNALS
                if signal.getsignal(signum) is not signal.SIG_IGN}

    def restore(self, handlers):
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        self.signum, self.training, self.stdout_error = None, False, None

    def request(self, signum, frame=None):
        if self.writing or (self.training and self.signum is None):
            self.signum = self.signum or signum
            return
        raise Stopped(signum)

    def check(self):
        """At a safe point: stop here if a stop was asked for."""
        if self.signum is not None:
            raise Stopped(self.signum)

    def at_batch_boundary(self):
        """common.Batches calls this before each batch: training has begun, and a stop asked for stops here."""
        self.training = True
        self.check()

    @contextlib.contextmanager
    def saving(self):
        self.writing += 1
        try:
            yield
        finally:
            self.writing -= 1


STOP = StopRequests()


class ClosedPipeGuard(io.TextIOBase):
    """sys.stdout or sys.stderr for run_as_command. When the stream cannot be written (the reader went away:
    `... | head -1`, a closed terminal; or its disk is full), later output goes to /dev/null instead of
    raising. For stdout that asks for a stop (as SIGPIPE): at once when not even the first line could be written
    (no work is done yet), else at the next safe point, once what was learned is saved."""

    def __init__(self, stream, asks_to_stop):
        super().__init__()
        self.stream, self.asks_to_stop = stream, asks_to_stop
        self.delivered = False  # has anything reached the stream's file?

    def write(self, text):
        try:
            return self.stream.write(text)
        except OSError as e:
            self.cannot_write(e)
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
            self.delivered = True
        except OSError as e:
            self.cannot_write(e)

    def fileno(self):
        return self.stream.fileno()

    @property
    def encoding(self):
        return self.stream.encoding

    def cannot_write(self, error):
        with contextlib.suppress(OSError, ValueError):  # (a stream without a file: nothing to redirect)
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())  # Python's own flush at exit too
        if self.asks_to_stop and STOP.signum is None:
            STOP.signum = signal.SIGPIPE
            if error.errno not in (errno.EPIPE, errno.EIO):  # not a reader gone: a full disk, say
                STOP.stdout_error = error.strerror or last_line(error)
            if not self.delivered and not STOP.training and not STOP.writing:  # the first line: no work done yet
                raise Stopped(signal.SIGPIPE)


def run_as_command(main):
    """Run a script's main() as a command. A UserError is one line on stderr and exit status 1. A stop
    (Ctrl-C, SIGTERM, SIGHUP, a closed stdout) says where training was and exits with 128 + the signal's
    number (130, 143, 129, 141), after main() has saved what it was asked to. A stdout closed from the start
    is the same stop, before any work."""
    if sys.stderr is None:  # started with stderr closed (2>&-): the last words go nowhere, quietly
        sys.stderr = open(os.devnull, 'w')
    if sys.stdout is None:  # started with stdout closed (>&-): a run's results would go nowhere
        print('standard output is closed, so the results would be lost; send it to a file (> run.log) or to '
              '/dev/null instead', file=sys.stderr, flush=True)
        sys.exit(128 + signal.SIGPIPE)
    handlers, stdout, stderr = STOP.install(), sys.stdout, sys.stderr
    common.Batches.at_batch_boundary = STOP.at_batch_boundary
    sys.stdout, sys.stderr = ClosedPipeGuard(stdout, asks_to_stop=True), ClosedPipeGuard(stderr, asks_to_stop=False)
    message, status = None, 0
    try:
        try:
            main()
            sys.stdout.flush()
        except UserError as e:
            message, status = str(e), 1
        except Interrupted as e:
            message, status = str(e), 128 + e.signum
        except KeyboardInterrupt as e:  # before training began: nothing to save
            signum = getattr(e, 'signum', signal.SIGINT)
            message, status = how_stopped(signum), 128 + signum
        for signum in handlers:  # the last words are not cut short
            signal.signal(signum, signal.SIG_IGN)
        if not status and STOP.signum is not None:  # asked for after the last batch: all is done and saved
            message, status = f'{how_stopped(STOP.signum)} after training had finished', 128 + STOP.signum
        if message:
            print(message, file=sys.stderr, flush=True)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        common.Batches.at_batch_boundary = None
        STOP.restore(handlers)
    if status:
        sys.exit(status)


def torch_load_reason(error):
    """What a torch.load error says was wrong, without its advice on how to load the file anyway (which would run
    whatever code the file holds)."""
    text = str(error)
    code = re.search(r'GLOBAL ([\w.]+)', text)
    if code:
        return f'it holds code: loading it would call {code.group(1)}'
    advice = ('weights_only', 'Check the documentation', 'Please file an issue')  # (loading anyway would run code)
    lines = [line.strip() for line in text.replace('WeightsUnpickler error:', '').splitlines()
             if line.strip() and not any(words in line for words in advice)]
    return lines[0] if lines else first_line(error)


def first_line(error):
    """The first non-empty line of an error's message (its type's name when the message is empty)."""
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


def failure_reason(error):
    """Why a save failed, in a few words: what the operating system said (torch.save wraps a full disk's
    OSError in a RuntimeError), else the error's last line."""
    cause, seen = error, set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return last_line(error)


def innermost_cause(error):
    """The error that started a chain: a failed recording reports its own error on top of the real one."""
    while error.__context__ is not None:
        error = error.__context__
    return error
