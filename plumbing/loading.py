"""Loading: a file --save-model wrote, read back for --load-model and --resume (read_saved), checked for damage
(damage_in) and field by field (checkpoint_problem) before any work, and put back into the run (resume_into,
load_weights_into). Whatever is wrong with a file is one line, never a traceback."""
import argparse
import copy
import os
import sys
import warnings
import zipfile

import torch

import common
from plumbing import flags, stops


def adopt_saved_run(parser, args):
    """--resume PATH: the saved run's flags become this run's. A flag given that contradicts them is a usage
    error; --epochs may raise the total. Returns how many groups its nets trained in (speed.Threads).
    (train() reads the rest of the run: resume_into.)"""
    if args.load_model:
        parser.error('argument --resume: not allowed with --load-model')
    checkpoint = read_saved(args.resume, '--resume', args.script)
    point = checkpoint.get('resume')
    if point is None:
        raise stops.UserError(f'--resume {args.resume}: it holds weights only (saved by a version that could not '
                              f'go on with its run), not the state of a run; --load-model tests it')
    mismatch = history_mismatch(point)
    if mismatch:
        raise stops.UserError(f'--resume {args.resume}: damaged or edited since it was saved ({mismatch}); '
                              f'start a new run')
    run = {'seeds': None, 'book': False, 'lmbda': None, **point['run']}  # (files from before those flags)
    if run.get('net') not in args.recipes:
        raise stops.UserError(f'--resume {args.resume}: not a model saved by these scripts (its run\'s net, '
                              f'{run.get("net")!r}, is none of {args.script}\'s)')
    for flag, saved in run.items():
        given = getattr(args, flag, None)
        if flag == 'epochs':  # the one flag that may differ: it may raise the total
            continue
        if given is not None and given != saved:
            parser.error(f'argument {flags.flag_name(flag)}: the run in {args.resume} has '
                         f'{flags.flag_as_given(flag, saved)}; drop the flag to go on with it, or start a new run')
        setattr(args, flag, saved)
    args.epochs = args.epochs or run['epochs']
    if args.epochs <= point['epoch']:
        parser.error(f'argument --epochs: the run in {args.resume} has done {point["epoch"]} epochs of '
                     f'{run["epochs"]}; give --epochs N with N above {point["epoch"]} to go on')
    args.save_model = args.save_model or args.resume
    saved_data = point.get('data_dir')  # (files from before it, or from a machine without that folder: ./data)
    args.data_dir = args.data_dir or (saved_data if saved_data and os.path.isdir(saved_data) else None)
    print(f'Going on with the run in {args.resume}: epoch {point["epoch"] + 1} of {args.epochs}', file=sys.stderr)
    return point.get('groups', 1)  # its nets side by side as they were: the optimizer's state is kept that way


def adopt_saved_model(parser, args):
    """--load-model PATH, checked before any work: the same script, net and dataset, and --book only for a model
    trained so; a file of several nets gives their seeds."""
    checkpoint = read_saved(args.load_model, '--load-model', args.script)
    if checkpoint['net'] not in args.recipes:
        raise stops.UserError(f'--load-model {args.load_model}: not a model saved by these scripts (its net, '
                              f'{checkpoint["net"]!r}, is none of {args.script}\'s)')
    fits_flags(checkpoint, args.load_model, args)
    if args.book and not checkpoint.get('book', False):
        parser.error(f'argument --book: the --load-model file {args.load_model} was trained without --book; '
                     f'drop --book')
    args.seeds, args.book = checkpoint.get('seeds'), checkpoint.get('book', False)


def resume_into(args, model, optimizer, batches, history):
    """--resume PATH: put the run saved there back into the model, optimizer, batches, random generators
    and history (adopt_saved_run has checked it and taken its flags); returns the first epoch to
    train: 1 without --resume."""
    if not args.resume:
        return 1
    checkpoint = read_saved(args.resume, '--resume', args.script)
    point = checkpoint['resume']
    try:
        put_weights(model, point['weights'] or saved_weights(checkpoint))  # None: the same as the model's
        optimizer.load_state_dict(point['optimizer'])
        orders = point['batch_order'] if isinstance(point['batch_order'], list) else [point['batch_order']]
        for generator, state in zip(batches.generators, orders, strict=True):
            generator.set_state(state)
        for generator, state in zip(getattr(model, 'generators', None) or [], point.get('dropout') or []):
            generator.set_state(state)
        torch.set_rng_state(point['rng'])
        if point['cuda_rng'] and torch.cuda.is_available() and len(point['cuda_rng']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(point['cuda_rng'])
    except Exception as e:  # noqa: BLE001 -- whatever part of the file was edited, it is one line
        raise stops.UserError(f'--resume: the saved run does not fit this net or optimizer, edited since? '
                              f'({stops.last_line(e)}); start a new run') from None
    device = next(model.parameters()).device.type
    if point.get('device', device) != device:
        print(f'--resume: the run was on {point["device"]} and goes on on {device}: the same run, but not '
              f'the same numbers to the last digit', file=sys.stderr)
    batches.epoch = point['epoch']
    history.update(copy.deepcopy(point['history']))
    return point['epoch'] + 1


def read_saved(path, flag, script):
    """The file save_model saved at `path`, for `flag` (--load-model, --resume): one clear stops.UserError for a
    file that is missing, is not a model, or was saved by another script."""
    damage = damage_in(path)
    if damage:
        raise stops.UserError(f'{flag} {path}: damaged or truncated ({damage}); use another copy, or save it '
                              f'anew') from None
    try:
        with warnings.catch_warnings():  # (torch's note on pickle protocols: this says what is wrong, in one line)
            warnings.simplefilter('ignore')
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise stops.UserError(f'{flag} {path}: no such file') from None
    except IsADirectoryError:
        raise stops.UserError(f'{flag} {path}: a folder, not a model file') from None
    except PermissionError:
        raise stops.UserError(f'{flag} {path}: cannot be read (permission denied)') from None
    except Exception as e:  # noqa: BLE001 -- torch.load raises many kinds for a file that is not a model
        reason = stops.torch_load_reason(e)
        if reason.startswith('it holds code'):
            raise stops.UserError(f'{flag} {path}: refused: {reason}, and these scripts run no code from a file; '
                                  f'it is not a model saved by them') from None
        raise stops.UserError(f'{flag} {path}: not a model saved by these scripts ({reason})') from None
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise stops.UserError(f'{flag} {path}: not a model saved by these scripts ({problem})')
    if checkpoint['script'] != script:
        how = f'--net {checkpoint["net"]}' if flag == '--load-model' else f'{flag} {path}'
        raise stops.UserError(f'{flag} {path}: it holds the {checkpoint["net"]!r} net of {checkpoint["script"]}; '
                        f'run {checkpoint["script"]} {how}')
    return checkpoint


TENSORS = 'a dict of tensors'
RUN_KINDS = {'net': str, 'dataset': str, 'batch_size': int, 'lr': float, 'wd': float, 'epochs': int,
             'extend_data': bool, 'limit': (int, None), 'seed': int, 'seeds': ([int], None), 'book': bool,
             'lmbda': (float, None)}


def fits(value, kind):
    """Is `value` of `kind`: a type (int is no bool; float takes an int), None, TENSORS, [kind] (a list of
    them), or a tuple of kinds (any of them)?"""
    if isinstance(kind, tuple):
        return any(fits(value, k) for k in kind)
    if kind is None:
        return value is None
    if kind is TENSORS:
        return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in value.items())
    if isinstance(kind, list):
        return isinstance(value, list) and all(fits(v, kind[0]) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


VALUE_CHECKS = {'batch_size': flags.positive_int, 'lr': flags.positive_float, 'wd': flags.non_negative_float,
                'epochs': flags.positive_int, 'limit': flags.positive_int, 'seed': flags.seed_number,
                'lmbda': flags.non_negative_float}


def value_fits(flag, value):
    """Would the flag take this value from a command line (None: not given)? Its own check, as parse_args has it."""
    if value is None or (flag not in VALUE_CHECKS and flag != 'seeds'):
        return True
    try:
        for each in (value if flag == 'seeds' else [value]):
            VALUE_CHECKS.get(flag, flags.seed_number)(str(each))
    except (ValueError, argparse.ArgumentTypeError):
        return False
    return True


def checkpoint_problem(checkpoint):
    """What makes a loaded file other than a model these scripts saved, field by field (a file edited since,
    whose checksums were made anew), or None."""
    if not isinstance(checkpoint, dict):
        return f'it holds a {type(checkpoint).__name__}, not a dict'
    fields = {'script': str, 'net': str, 'dataset': str, 'book': (bool, None), 'mean': ([float], None),
              'std': ([float], None), 'state_dict': (TENSORS, None), 'seeds': ([int], None),
              'state_dicts': ([TENSORS], None), 'resume': (dict, None)}
    for key, kind in fields.items():
        if (key in ('script', 'net', 'dataset') and key not in checkpoint) or not fits(checkpoint.get(key), kind):
            return f'its field {key!r} is missing or of the wrong kind'
    if not value_fits('seeds', checkpoint.get('seeds')) or checkpoint['dataset'] not in common.DATASETS:
        return 'its seeds or its dataset are none that these scripts take'
    if ('state_dict' in checkpoint) == ('state_dicts' in checkpoint) or \
            len(checkpoint.get('seeds') or []) != len(checkpoint.get('state_dicts') or []):
        return 'it holds neither one net\'s weights nor one set per seed'
    point = checkpoint.get('resume')
    if point is None:
        return None
    parts = {'epoch': int, 'weights': (TENSORS, None), 'optimizer': dict, 'rng': torch.Tensor,
             'batch_order': (torch.Tensor, [torch.Tensor]), 'dropout': ([torch.Tensor], None),
             'cuda_rng': [torch.Tensor],
             'history': dict, 'run': dict, 'data_dir': (str, None), 'device': (str, None), 'groups': (int, None)}
    for key, kind in parts.items():
        if not fits(point.get(key), kind) or (key in ('epoch', 'rng', 'batch_order', 'run') and key not in point):
            return f'the state of its run has {key!r} missing or of the wrong kind'
    if not (fits(point['optimizer'].get('state'), dict) and fits(point['optimizer'].get('param_groups'), [dict])):
        return 'the state of its optimizer is missing or of the wrong kind'
    for flag, kind in RUN_KINDS.items():
        if flag in point['run'] and not fits(point['run'][flag], kind):
            return f'the flags of its run have {flags.flag_name(flag)} of the wrong kind'
        if not value_fits(flag, point['run'].get(flag)):
            return f'the flags of its run have {flags.flag_name(flag)} {point["run"][flag]}, which it does not take'
    if not 1 <= (point.get('groups') or 1) <= len(checkpoint.get('seeds') or [None]):
        return f'its nets trained in {point["groups"]} groups, and it holds {len(checkpoint.get("seeds") or [None])}'
    if any(point['run'].get(key, checkpoint[key]) != checkpoint[key] for key in ('net', 'dataset')):
        return 'its run and its weights name different nets or datasets'
    return None  # (its history: history_mismatch)


def history_mismatch(point):
    """None when each list of the saved run's history (modes.record) holds one number per epoch done, and
    when each net's has as many as the nets; else what is wrong, for a file edited since it was saved."""
    done, history = point.get('epoch'), point.get('history')
    if not isinstance(done, int) or not isinstance(history, dict):
        return 'no count of the epochs done, or no history'
    lists = {key: history[key] for key in ('loss', 'accuracy', 'vote') if key in history}
    lists.update({f'per_net[{i}]': net for i, net in enumerate(history.get('per_net', []))})
    if isinstance(history.get('validation'), dict):
        lists['validation accuracy'] = history['validation'].get('accuracy')
        lists.update({f'validation per_net[{i}]': net for i, net in enumerate(history['validation'].get('per_net', []))})
    seeds = history.get('seeds') or []
    if 'per_net' in history and len(history['per_net']) != len(seeds):
        return f'{len(history["per_net"])} nets\' accuracies for {len(seeds)} seeds'
    for key, values in lists.items():
        if isinstance(values, list) and not fits(values, [float]):
            return f'its history of {key} holds something other than numbers'
        if not isinstance(values, list) or len(values) != done:
            count = len(values) if isinstance(values, list) else 0
            return f'{done} epochs done, but {count} number{"" if count == 1 else "s"} in its history of {key}'
    return None


def damage_in(path):
    """What is wrong with a file torch.save wrote, or None when it is whole (or is not such a file: torch.load
    then says what it is). torch.save writes a zip archive that keeps a CRC-32 checksum of each of its
    parts (the pickled dict, each tensor's bytes) as it saves; torch.load does not check them, this does."""
    try:
        with open(path, 'rb') as f:
            if f.read(4) != b'PK\x03\x04':  # not a zip archive
                return None
    except OSError:
        return None
    try:
        archive = zipfile.ZipFile(path)
    except Exception:  # noqa: BLE001 -- the archive's directory, at the end of the file, is not there
        return 'the end of the file, where the list of its parts is, is missing or damaged'
    try:
        with archive:
            failed = archive.testzip()
    except Exception as e:  # noqa: BLE001 -- zipfile raises several kinds for a broken part
        return stops.last_line(e)
    return f'its part {failed.split("/", 1)[-1]} does not match the checksum saved with it' if failed else None


def read_checkpoint(path, args):
    """The --load-model file, checked against the flags: the same script, net and dataset."""
    return fits_flags(read_saved(path, '--load-model', args.script), path, args)


def fits_flags(checkpoint, path, args):
    """The --load-model file's checkpoint, when its net and dataset are the flags'; else a UserError."""
    if checkpoint['net'] != args.net:
        raise stops.UserError(f'--load-model {path}: it holds the {checkpoint["net"]!r} net of {checkpoint["script"]}; '
                              f'run {checkpoint["script"]} --net {checkpoint["net"]}')
    if checkpoint['dataset'] != args.dataset:
        raise stops.UserError(f'--load-model {path}: it was trained on {checkpoint["dataset"]}; '
                              f'add --dataset {checkpoint["dataset"]}')
    return checkpoint


def load_weights_into(model, args):
    """Put the weights of the --load-model file (parse_args has checked it) into `model`: one net's, or each
    net's of several (stacked.StackedNets); weights that do not fit are one stops.UserError."""
    weights = saved_weights(read_checkpoint(args.load_model, args))
    try:
        put_weights(model, weights)
    except RuntimeError as e:
        raise stops.UserError(f'--load-model {args.load_model}: the weights do not fit the {args.net!r} net '
                        f'({stops.last_line(e)})') from None


def saved_weights(checkpoint):
    """The weights a file keeps: one net's state_dict, or a list of them, one per net (a --seeds run)."""
    return checkpoint['state_dicts'] if 'state_dicts' in checkpoint else checkpoint['state_dict']


def put_weights(model, weights):
    """saved_weights back into the model: model.load_state_dict, or each net's (stacked.StackedNets.load_nets);
    weights that do not fit are load_state_dict's RuntimeError."""
    if isinstance(weights, list):
        model.load_nets(weights)
    else:
        model.load_state_dict(weights)
