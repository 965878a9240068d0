"""The modes of a run, each decided here and nowhere else: how --seeds, --book, --load-model, --predict and
--resume change the flags, the net, the data, the loss, training, the result lines and what is saved. A
script's main() calls one function for each step of its recipe:

    args = modes.parse_args(parser, argv)      the flags (flags.py), and a saved file's (--resume, --load-model)
    model = modes.net(args, make_net)          one net, or one per seed (--seeds); the book's initial weights
                                               (--book); the saved weights (--load-model)
    data = modes.data(args)                    --book: its held-out images and raw pixels
    loss_fn = modes.loss(args, loss_fn, model, data)     --book: the book's cost; --seeds: each net's own
    history = modes.train(args, train, model, data, loss_fn)   the script's train(); --load-model: a test
    modes.report(args, history)                the result lines: one net's, several nets' and their vote's, or
                                               the book's at its best validation epoch
    modes.save(args, model, data, history, images)       --save-model, --plot, then --predict

and the script's train() walks its epochs through modes.epochs(): --resume puts the run back first, and after
each epoch the history is made plain and, when a model file will be written, a resume point is kept.

The history is plain data, as torch.load(weights_only=True) reads it back: {'loss': [...], 'accuracy': [...]},
a number per epoch; several nets add 'seeds', 'per_net' (a list per net) and 'vote'; --book adds 'validation',
a history of the held-out images' accuracy.
"""
import sys
from dataclasses import dataclass

import torch

import book
import common
from plumbing import flags, loading, own_images, pictures, saving, stacked, stops


def parse_args(parser, argv=None):
    """flags.parse_args, with what a saved file says: --resume adopts its run's flags, --load-model its nets;
    and --book's split checked against --limit."""
    args = flags.parse_args(parser, argv, adopt_run=loading.adopt_saved_run, adopt_model=loading.adopt_saved_model)
    if args.book and args.limit and not args.load_model:
        def training(n):  # the images --book trains on, of the first n
            return (n - book.validation_size(n)) * (5 if args.extend_data else 1)
        if not (book.validation_size(args.limit) and training(args.limit) >= args.batch_size):
            enough = next((n for n in range(args.limit, 10 ** 6) if training(n) >= args.batch_size), None)
            parser.error(f'argument --limit: --book holds out the last sixth of the training images to validate, '
                         f'and of {args.limit} that leaves {training(args.limit)} to train on and '
                         f'{book.validation_size(args.limit)} to validate; ' + (
                             f'give --limit {max(enough, 6)} or more for a batch of {args.batch_size} and one image '
                             f'to validate' if enough else 'give a smaller --batch-size'))
    return args


def net(args, make_net):
    """The model on its device: the net --seed builds, or one per seed trained as one (--seeds, stacked.py);
    with --book, with the book's initial weights; with --load-model, with the saved weights."""
    if args.book:
        make_net = book.as_in_the_book(args.net, make_net)
    if args.seeds:
        model = stacked.seeded(make_net, args.seeds, args.device, args.threads.groups)
    else:
        torch.manual_seed(args.seed)  # the initial weights; the batch order has a generator of its own
        model = make_net()
    model = model.to(args.device, memory_format=common.memory_format_for(args.device))
    if args.load_model:  # the saved weights, checked before any data is read
        loading.load_weights_into(model, args)
    return model


def only_predicting(args):
    """--load-model with --predict: only your own images to classify, without a dataset."""
    return bool(args.load_model and args.predict)


def data(args, pad=0):
    """The dataset, whole on the device; --book: 10,000 training images held out, raw pixels, the book's order
    (which leaves out a last batch that is not full: a batch larger than the training split trains nothing)."""
    if args.book:
        data = book.load_data(args.dataset, args.data_dir, args.device, limit=args.limit, extend=args.extend_data,
                              pad=pad, fixed_order=args.net not in book.RESHUFFLED)
        if len(data.train) < args.batch_size and not args.load_model:
            raise stops.UserError(f'--book trains on {len(data.train)} images here, fewer than one batch of '
                                  f'{args.batch_size}; give a smaller --batch-size')
        return data
    return common.load_data(args.dataset, args.data_dir, args.device, limit=args.limit, extend=args.extend_data,
                            pad=pad)


def loss(args, loss_fn, model, data):
    """The loss train() minimizes: the script's; --book: the book's cost (book.cost); --seeds: each net's own
    (stacked.summed_over_nets)."""
    if args.book:
        loss_fn = book.cost(book.COSTS.get(args.net, loss_fn), model, args.lmbda,
                            batches=len(data.train) // args.batch_size)
    if args.seeds:
        loss_fn = stacked.summed_over_nets(loss_fn)
    return loss_fn


@dataclass
class Kept:
    """What modes.epochs keeps for a stop and for the save at the end: where training is (batches), the history,
    the last resume point (None when nothing will be saved), and how to make one now (remake)."""
    batches: common.Batches
    history: dict
    remake: object
    point: dict = None


def train(args, loop, model, data, loss_fn):
    """The script's train(args, model, data, loss_fn) (loop), and its plain history; a stop meanwhile (Ctrl-C,
    kill, a closed terminal or pipe) saves what was learned first (save), then says where it stopped. --load-model
    trains nothing: the history is the saved model's test accuracy. (args.kept: what modes.epochs keeps.)"""
    if args.load_model:
        return record({'loss': [], 'accuracy': [common.test_accuracy(model, data)]})
    args.kept = None
    try:
        history = loop(args, model, data, loss_fn)
    except common.Diverged as e:
        if args.book and args.lmbda:  # the book's L2 term is a part of the loss
            raise stops.UserError(f'{e} or --lmbda') from None
        raise
    except KeyboardInterrupt as stop:
        kept = args.kept
        if kept is None:  # a loop of your own, without modes.epochs: the weights alone, once training began
            if stops.STOP.training:
                save(args, model, data, {'loss': [], 'accuracy': []}, stopped=True)
            raise
        record(kept.history)
        save(args, model, data, kept.history, stopped=True)
        last = (f'{accuracy_of(kept.history, -1):.4f} after epoch {len(kept.history["accuracy"])}'
                if kept.history['accuracy'] else 'none yet')
        raise stops.Interrupted(stop, kept.batches.position(), last) from None
    history, kept = record(history), args.kept  # (plain already, unless a loop of your own skips modes.epochs)
    if kept is None and args.resume:  # a loop of your own: the saved run was not put back, so it is not replaced
        raise stops.UserError(f'--resume {args.resume}: this train() walks its epochs without modes.epochs, which '
                              f'puts a saved run back; the run trained anew and was not saved over {args.resume}')
    if kept and kept.point and kept.point['epoch'] < len(history['accuracy']):  # the loop left early (a break)
        kept.point = kept.remake()
    print()  # an empty line, then the result lines
    return history


def epochs(args, model, optimizer, batches, history):
    """The epochs train() runs, 1 to --epochs; with --resume, from where the run stopped, once the model,
    optimizer, batches, random generators and history are put back (loading.resume_into). After each epoch the
    history is made plain (record: the accuracies become floats, several nets' and --book's figures lists of
    their own) and, when a model file will be written, a resume point kept (train saves from it when a stop
    comes; save at the end)."""
    first = loading.resume_into(args, model, optimizer, batches, history)
    args.kept = Kept(batches, history, lambda: saving.resume_point(args, model, optimizer, batches, history))

    def keep():
        if args.save_model:  # (copying every weight after every epoch is for a file that will be written)
            args.kept.point = args.kept.remake()
    keep()
    for epoch in range(first, args.epochs + 1):
        yield epoch
        record(history)
        keep()


def record(history):
    """The history made plain: an accuracy that carries more of its test pass (a common.Accuracy: each net's
    and the vote's, --book's validation accuracy) becomes its float, and the rest goes in lists of their own."""
    for i, accuracy in enumerate(history['accuracy']):
        if not isinstance(accuracy, common.Accuracy):
            continue
        history['accuracy'][i] = float(accuracy)
        if accuracy.per_net is not None:
            history['seeds'] = list(accuracy.seeds)
            per_net = history.setdefault('per_net', [[] for _ in accuracy.per_net])
            for net, value in zip(per_net, accuracy.per_net):
                net.append(value)
            history.setdefault('vote', []).append(accuracy.vote)
        if accuracy.validation is not None:
            validation = history.setdefault('validation', {'loss': [], 'accuracy': []})
            validation['accuracy'].append(accuracy.validation)
            record(validation)
    return history


def accuracy_of(history, epoch):
    """The accuracy of an epoch (an index) of a plain history, as the epoch line showed it (a common.Accuracy)."""
    several = 'per_net' in history
    accuracy = common.Accuracy(history['accuracy'][epoch], history.get('seeds'),
                               [net[epoch] for net in history['per_net']] if several else None,
                               history['vote'][epoch] if several else None)
    if 'validation' in history:
        accuracy.validation = accuracy_of(history['validation'], epoch)
    return accuracy


def report(args, history):
    """The result lines, the last of them `Test data results: ...`. Several nets: each net's accuracy, their
    vote's, then their mean. --book: the epoch of best validation accuracy and the test accuracy there (each
    net's at its own best epoch, the vote as the last epoch left the nets, the book's ensemble); a saved model
    tested: its validation accuracy."""
    last = accuracy_of(history, -1)
    several = last.per_net is not None
    if 'validation' not in history:
        lines = [f'Seed {seed}: {accuracy:.4f}' for seed, accuracy in zip(last.seeds, last.per_net)] if several else []
        if several:
            lines.append(f'Ensemble of {len(last.seeds)} nets (majority vote): {last.vote:.4f}')
        lines.append(f'Test data results: {float(last):.4f}')
    elif args.load_model and not several:
        lines = [f'Validation accuracy {last.validation:.4f}', f'Test data results: {float(last):.4f}']
    elif args.load_model:
        lines = [f'Seed {seed}: {test:.4f}, validation {validation:.4f}' for seed, test, validation
                 in zip(last.seeds, last.per_net, last.validation.per_net)]
        lines += [f'Ensemble of {len(last.seeds)} nets (majority vote): {last.vote:.4f}',
                  f'Test data results: {float(last):.4f}']
    else:
        lines = best_epoch_lines(history)
    print('\n'.join(lines), flush=True)


def best_epoch_lines(history):
    """--book's result lines after training: the test accuracy at the best validation epoch (book.best_epoch)."""
    epochs, validation = len(history['accuracy']), history['validation']
    if 'per_net' not in history:
        best = book.best_epoch(validation['accuracy'])
        return [f'Best validation accuracy {validation["accuracy"][best]:.4f} at epoch {best + 1}/{epochs}',
                f'Test data results: {history["accuracy"][best]:.4f}']
    lines, results = [], []
    for seed, test, held_out in zip(history['seeds'], history['per_net'], validation['per_net']):
        best = book.best_epoch(held_out)
        results.append(test[best])
        lines.append(f'Seed {seed}: {test[best]:.4f} at epoch {best + 1}/{epochs}, its best validation accuracy '
                     f'{held_out[best]:.4f}')
    return lines + [f'Ensemble of {len(results)} nets (majority vote, after the last epoch): '
                    f'{history["vote"][-1]:.4f}',
                    f'Test data results: {sum(results) / len(results):.4f}']


def save(args, model, data, history, images=None, stopped=False):
    """Keep what the user asked for: --save-model (not after --load-model, which trains nothing; with what
    --resume needs), then --plot, then (after a finished run) --predict's classes of your own images.

    A save that fails goes to a fallback file instead, and one line says why and where; after a finished run
    that ends in a stops.UserError (exit status 1) once everything is saved. A run stopped before its first
    epoch ended does not replace an existing model file: it saves beside it (NAME.interrupted.EXT)."""
    failures = []
    if args.save_model and not args.load_model:
        point = args.kept.point if getattr(args, 'kept', None) else None  # (None: a train() without modes.epochs)
        failures += saving.save_model(args, model, data, point, stopped_early=stopped and not history['accuracy'])
    if args.plot and history['accuracy']:
        try:
            failures += pictures.save_plot(args.plot, history, model, data)
        except Exception as e:  # noqa: BLE001 -- drawing failed: the model is saved, and this is said
            failures.append(f'could not draw the picture for {args.plot} ({stops.failure_reason(e)})')
    if failures and stopped:
        print('\n'.join(failures), file=sys.stderr)
    elif failures:
        raise stops.UserError('\n'.join(failures))
    if args.predict and not stopped:
        own_images.predict(args, model, images)
