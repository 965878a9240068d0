"""Saving: --save-model (atomic, with a fallback file when the save fails), and with it what --resume needs to go
on (a resume point at an epoch boundary). Reading a saved file back is loading.py's."""
import contextlib
import copy
import errno
import io
import os
import sys
import tempfile

import torch

import common
from plumbing import flags, stops


def resume_point(args, model, optimizer, batches, history):
    """What --resume needs to go on exactly from here, an epoch boundary: the epochs done, a copy of the
    weights, the optimizer's state, the random generators of the batch order and of dropout (each net's,
    for several nets), the history, the flags that define the run, and the data folder."""
    orders = [generator.get_state() for generator in batches.generators]
    return {'epoch': len(history['accuracy']),
            'weights': {k: v.detach().clone() for k, v in model.state_dict().items()},
            'optimizer': copy.deepcopy(optimizer.state_dict()),
            'batch_order': orders[0] if len(orders) == 1 else orders,
            'rng': torch.get_rng_state(),
            'dropout': [generator.get_state() for generator in getattr(model, 'generators', None) or []],
            'cuda_rng': torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            'history': copy.deepcopy(history),
            'run': {flag: getattr(args, flag, None) for flag in flags.RUN_FLAGS},
            'data_dir': os.path.abspath(args.data_dir),  # where --resume finds the data, unless told otherwise
            'device': next(model.parameters()).device.type,
            'groups': len(getattr(model, 'groups', [None]))}  # --seeds: the groups its nets train in (speed.py)


def atomic_write(path, write):
    """write(file) into a temporary file beside `path`, then os.replace: a run stopped midway leaves
    the previous file (or none) at `path`, never half a file, and no temporary file. A stop signal that
    arrives meanwhile waits for the write to end (stops.STOP.saving). A symbolic link stays: the file it
    points to is replaced. A device, FIFO or socket at `path` is never replaced: that is an OSError."""
    path = os.path.realpath(path)
    kind = flags.non_regular(path)
    if kind:
        raise OSError(errno.EEXIST, f'it is {kind}, not a regular file', path)
    folder = os.path.dirname(path)
    with stops.STOP.saving():
        prefix = '.' + flags.cut(os.path.basename(path), 100) + '.'  # (short: a long name still has room)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix='.tmp')
        umask = os.umask(0)
        os.umask(umask)
        try:
            with os.fdopen(fd, 'wb') as f:
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is an ordinary file
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def save_model(args, model, data, point, stopped_early=False):
    """--save-model: the model, with what --resume needs to go on from `point` (a resume point, or None). Returns
    save_with_fallback's failure lines. A run stopped before its first epoch ended (stopped_early) does not
    replace an existing model file: it saves beside it (NAME.interrupted.EXT)."""
    keep = stopped_early and os.path.exists(args.save_model)
    path = flags.beside(args.save_model, 'interrupted') if keep else args.save_model
    checkpoint = model_checkpoint(args, model, data, point)
    failures = save_with_fallback(path, 'model', lambda f: torch.save(checkpoint, f))
    if keep:
        print(f'Kept {args.save_model}: training stopped before its first epoch ended', file=sys.stderr)
    return failures


def model_checkpoint(args, model, data, resume=None):
    """The weights with what is needed to use them again: script, net, dataset, normalization; and `resume`,
    what --resume needs to go on with the run. Several nets trained at once (stacked.StackedNets) are saved
    as one state_dict per net, with their seeds."""
    info, raw_pixels = common.DATASETS[data.name], bool(getattr(args, 'book', False))  # --book: x / 255 alone
    checkpoint = {'script': args.script, 'net': args.net, 'dataset': data.name, 'book': raw_pixels,
                  'mean': [0.0] * len(info.mean) if raw_pixels else list(info.mean),
                  'std': [1.0] * len(info.std) if raw_pixels else list(info.std)}
    if common.nets_in(model) > 1:
        checkpoint.update(seeds=list(model.seeds), state_dicts=model.state_dicts())
    else:
        checkpoint['state_dict'] = {k: v.cpu() for k, v in model.state_dict().items()}
    if resume is not None:
        checkpoint['resume'] = on_the_cpu(resume)
        weights, now = checkpoint['resume']['weights'], model.state_dict()
        if weights.keys() == now.keys() and all(torch.equal(weights[k], v.cpu()) for k, v in now.items()):
            checkpoint['resume']['weights'] = None  # the same as the model's: not saved twice
    return checkpoint


def on_the_cpu(value):
    """A copy of nested dicts and lists of tensors with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: on_the_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_the_cpu(v) for v in value)
    return value


def save_with_fallback(path, what, write):
    """Write `path` (atomic_write) and say so. When that fails, whatever the error, write a new file in the
    current folder (or the system's temporary folder) instead, and return the line that says why and where:
    [] when all went well. write(file) runs once, into memory, so that only the writes to disk can fail."""
    content = io.BytesIO()
    try:
        with stops.STOP.saving():  # a stop signal waits for the end of the save
            write(content)
    except Exception as e:  # noqa: BLE001 -- torch.save and savefig raise many kinds
        return [f'could not save the {what} ({stops.failure_reason(e)})']

    def put(f):
        f.write(content.getbuffer())
    try:
        atomic_write(path, put)
    except Exception as e:  # noqa: BLE001 -- a full disk, a lost network folder: whatever the library raises
        reason = stops.failure_reason(e)
    else:
        print(f'{what.capitalize()} saved to {path}', file=sys.stderr)
        return []
    stem, extension = os.path.splitext(os.path.basename(path))
    for folder in (os.getcwd(), tempfile.gettempdir()):
        with stops.STOP.saving():  # no empty fallback file is left behind, whatever arrives meanwhile
            try:
                fd, fallback = tempfile.mkstemp(dir=folder, prefix=f'{flags.cut(stem, 100)}-saved-',
                                                suffix=flags.cut(extension, 20))
                os.close(fd)
            except Exception:  # noqa: BLE001 -- this folder cannot take it: the next one
                continue
            try:
                atomic_write(fallback, put)
            except Exception:  # noqa: BLE001
                with contextlib.suppress(OSError):
                    os.unlink(fallback)
                continue
        return [f'could not save the {what} to {path} ({reason}); saved it to {fallback} instead']
    return [f'could not save the {what} to {path} ({reason}), nor to {os.getcwd()} or {tempfile.gettempdir()}']
