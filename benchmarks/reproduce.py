"""Reproduce the published table: every recipe at its full length, through the scripts themselves.

Each run is the published command, run by the script's own main() (the code a user runs), on the device
picked as usual. Every finished run is appended at once to the results file (one JSON line: command, seed,
per-epoch accuracies and losses, time, device, torch version); running again skips what is there, so an
interrupted table resumes where it stopped. The table is printed from the results file.

    python benchmarks/reproduce.py --dataset fashion-mnist --data-dir DIR                  # every MNIST row
    python benchmarks/reproduce.py --dataset fashion-mnist --data-dir DIR --only dense relu --seeds 1 2 3
    python benchmarks/reproduce.py --dataset cifar10 --data-dir DIR                        # the CIFAR-10 rows
    python benchmarks/reproduce.py --dataset fashion-mnist --report --plot docs/reproduce.png
    python benchmarks/reproduce.py --dataset mnist --epochs 1                              # a quick look
    python benchmarks/reproduce.py --dataset fashion-mnist --data-dir DIR --book           # the book's rows

Rows (--only): dense, simple, 2conv, relu, relu-extended, final, final-vote for mnist and fashion-mnist;
cifar-dense, cifar-conv, cifar-pool, cifar-final for cifar10. final-vote is one run of five nets at once
(--seeds 1 2 3 4 5 in its command): its figure is their majority vote, with the five nets' own beside it;
--seeds does not apply to it. --book: the same rows trained as the book's own code did (`--book` in their
commands: book.py), whose figure is the test accuracy at the epoch of best validation accuracy, beside
Nielsen's; dense is then chapter 1's network.py run.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch  # noqa: E402

import book  # noqa: E402
import cifar_convnet  # noqa: E402
import pytorch_mnist  # noqa: E402
import pytorch_mnist_convnet  # noqa: E402
from plumbing import flags, saving, stops  # noqa: E402

# name: (script, the published command's flags, the original's MNIST figure, Nielsen's (network.py for
# chapter 1, network3.py for chapter 6))
MNIST_ROWS = {
    'dense': (pytorch_mnist, [], '0.9758', '96.59 % (ch. 1)'),
    'simple': (pytorch_mnist_convnet, [], '0.9891', '98.78 %'),
    '2conv': (pytorch_mnist_convnet, ['--net', '2conv'], '0.9913', '99.06 %'),
    'relu': (pytorch_mnist_convnet, ['--net', 'relu', '--lr', '0.03', '--wd', '0.00005'], '0.993',
             '99.23 % (η 0.03, λ 0.1)'),
    'relu-extended': (pytorch_mnist_convnet, ['--net', 'relu', '--lr', '0.03', '--wd', '0.00005', '--extend_data'],
                      '0.9943', '99.37 %'),
    'final': (pytorch_mnist_convnet, ['--net', 'final', '--epochs', '40', '--lr', '0.005', '--extend_data'],
              '0.9964', '99.60 % (η 0.03, 40 epochs)'),
    # chapter 6's headline: five final nets from different random initialisations, voting (one run: --seeds)
    'final-vote': (pytorch_mnist_convnet, ['--net', 'final', '--epochs', '40', '--lr', '0.005', '--extend_data',
                                           '--seeds', '1', '2', '3', '4', '5'], '–', '99.67 % (5 nets voting)'),
}
# The same rows as the book's own code trained them (--book): name: (script, flags, Nielsen's MNIST figure)
BOOK_ROWS = {
    'book-dense': (pytorch_mnist, ['--book'], '96.59 % (ch. 1)'),
    'book-simple': (pytorch_mnist_convnet, ['--book'], '98.78 %'),
    'book-2conv': (pytorch_mnist_convnet, ['--book', '--net', '2conv'], '99.06 %'),
    'book-relu': (pytorch_mnist_convnet, ['--book', '--net', 'relu'], '99.23 %'),
    'book-relu-extended': (pytorch_mnist_convnet, ['--book', '--net', 'relu', '--extend_data'], '99.37 %'),
    'book-final': (pytorch_mnist_convnet, ['--book', '--net', 'final', '--extend_data'], '99.60 %'),
    'book-final-vote': (pytorch_mnist_convnet, ['--book', '--net', 'final', '--extend_data',
                                                '--seeds', '1', '2', '3', '4', '5'], '99.67 % (5 nets voting)'),
}
CIFAR_ROWS = {
    'cifar-dense': (cifar_convnet, ['--net', 'dense'], '39 %', '–'),
    'cifar-conv': (cifar_convnet, ['--net', 'conv'], '45 %', '–'),
    'cifar-pool': (cifar_convnet, ['--net', 'pool'], '45 %', '–'),
    'cifar-final': (cifar_convnet, [], '62 %', '–'),
}


def rows_for(dataset, book_rows=False):
    """name: (script, flags, the original's figure, Nielsen's) of every row for the dataset."""
    if book_rows:
        return {} if dataset == 'cifar10' else {name: (script, flags, '–', nielsen)
                                                for name, (script, flags, nielsen) in BOOK_ROWS.items()}
    return CIFAR_ROWS if dataset == 'cifar10' else MNIST_ROWS


def any_row(name):
    """The row of that name, whichever table it is in."""
    return {**MNIST_ROWS, **CIFAR_ROWS, **rows_for('mnist', book_rows=True)}[name]


def command(name, dataset):
    script, flags, _, _ = any_row(name)
    dataset_flag = [] if dataset in ('cifar10', 'mnist') else ['--dataset', dataset]
    return ' '.join(['python', os.path.basename(script.__file__), *flags, *dataset_flag])


def read_results(path):
    """The finished runs in the results file, in order; an unreadable last line (a run cut off while it was
    written) is skipped."""
    if not os.path.exists(path):
        return []
    runs = []
    with open(path) as f:
        for line in f:
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return runs


def seeds_of(name, args):
    """The runs a row makes: one per --seeds, or, for a row that trains several nets at once, its own seeds."""
    _, flags, _, _ = any_row(name)
    if '--seeds' in flags:
        return [[int(seed) for seed in flags[flags.index('--seeds') + 1:]]]
    return args.seeds


def run_once(name, args, seed):
    """One published command through its script's main(); returns the record that goes in the results file."""
    script, flags, _, _ = any_row(name)
    argv = [*flags, '--data-dir', args.data_dir, '--device', args.device, '--no-progress']
    if not isinstance(seed, list):
        argv += ['--seed', str(seed)]
    if args.dataset not in ('cifar10',):
        argv += ['--dataset', args.dataset]
    if args.epochs:
        argv += ['--epochs', str(args.epochs)]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        _, data, history = script.main(argv)  # several nets: each net's accuracies (per_net), the vote's
    seconds = time.perf_counter() - start
    device, _, threads = out.getvalue().splitlines()[0].removeprefix('Device: ').partition(', ')
    return {'row': name, 'dataset': args.dataset, 'command': command(name, args.dataset), 'argv': argv,
            'seed': seed, 'shortened_to': args.epochs, 'epochs': len(history['accuracy']),
            'accuracy': history['accuracy'],
            'loss': history['loss'], 'seconds': round(seconds, 3), 'device': device, 'threads': threads,
            'device_name': device_name(device), 'torch': torch.__version__,
            **({'per_net': history['per_net'], 'vote': history['vote']} if 'vote' in history else {}),
            **(book_result(history) if 'validation' in history else {})}


def book_result(history):
    """A --book run's figures: each epoch's validation accuracy, the best validation epoch (1-based) and the
    test accuracy there (several nets: each net's own, and their mean)."""
    validation = history['validation']
    if 'per_net' not in history:
        best = book.best_epoch(validation['accuracy'])
        return {'validation': validation['accuracy'], 'best_epoch': best + 1, 'result': history['accuracy'][best]}
    bests = [book.best_epoch(net) for net in validation['per_net']]
    results = [net[best] for net, best in zip(history['per_net'], bests)]
    return {'validation': validation['accuracy'], 'validation_per_net': validation['per_net'],
            'best_epoch': [best + 1 for best in bests], 'result_per_net': results,
            'result': sum(results) / len(results)}


def device_name(device):
    """What the table's device column says: the GPU's name, Apple's GPU, or the CPU and its cores."""
    if device.startswith('cuda'):
        return torch.cuda.get_device_name()
    if device.startswith('mps'):
        return f'Apple GPU (MPS), {platform.machine()}'
    return f'{platform.machine()} CPU, {os.cpu_count()} cores'


def append(path, record):
    """One JSON line, written and flushed to disk before the next run starts."""
    with open(path, 'a') as f:
        f.write(json.dumps(record) + '\n')
        f.flush()
        os.fsync(f.fileno())


def table(runs, dataset, book_rows=False):
    """The markdown table of the runs in the results file, one row per recipe (and device)."""
    lines = ['| command | original (MNIST) | Nielsen (MNIST) | measured: mean (min–max) | seeds | epochs '
             '| time per run | device |',
             '|---|---|---|---|---|---|---|---|']
    for name, (_, _, original, nielsen) in rows_for(dataset, book_rows).items():
        mine = [r for r in runs if r['row'] == name and r['dataset'] == dataset]
        for device, epochs in sorted({(r['device_name'], r['epochs']) for r in mine}):
            done = [r for r in mine if (r['device_name'], r['epochs']) == (device, epochs)]
            finals = [r.get('result', r['accuracy'][-1]) for r in done]  # --book: at the best validation epoch
            spread = f' ({min(finals):.4f}–{max(finals):.4f})' if len(finals) > 1 else ''
            measured = f'{statistics.mean(finals):.4f}{spread}'
            if len(done) == 1 and isinstance(done[0].get('best_epoch'), int):  # --book: the epoch it was taken at
                measured += f' at epoch {done[0]["best_epoch"]}'
            if 'vote' in done[0]:  # one run of several nets: their vote, then the nets themselves
                nets = done[0].get('result_per_net') or [accuracies[-1] for accuracies in done[0]['per_net']]
                measured = (f'vote {done[0]["vote"][-1]:.4f}; the {len(nets)} nets {statistics.mean(nets):.4f} '
                            f'({min(nets):.4f}–{max(nets):.4f})')
            seconds = statistics.median(r['seconds'] for r in done)
            lines.append(f'| `{done[0]["command"]}` | {original} | {nielsen} | {measured} '
                         f'| {len(done)} | {epochs} | {duration(seconds)} | {device} |')
    return '\n'.join(lines)


def duration(seconds):
    return f'{seconds:.0f} s' if seconds < 120 else f'{seconds / 60:.0f} min' if seconds < 7200 else f'{seconds / 3600:.1f} h'


def plot(path, runs, dataset, book_rows=False):
    """Test accuracy per epoch of every recipe on one chart; each published final figure marked at the
    right of its curve, in the curve's colour."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6), layout='constrained')
    for i, (name, (_, _, original, nielsen)) in enumerate(rows_for(dataset, book_rows).items()):
        mine = [r for r in runs if r['row'] == name and r['dataset'] == dataset]
        if not mine:
            continue
        colour = f'C{i}'
        for j, run in enumerate(mine):
            accuracy = run.get('vote', run['accuracy'])  # several nets at once: their vote
            shown = original if original != '–' else nielsen
            ax.plot(range(1, len(accuracy) + 1), accuracy, color=colour, alpha=0.8,
                    label=f'{name} (published, MNIST: {shown})' if j == 0 else None)
        figure = (original if original != '–' else nielsen).split(' (')[0]
        published = float(figure.rstrip(' %')) / (100 if figure.endswith('%') else 1)
        last = max(len(r['accuracy']) for r in mine)
        ax.plot([last + 1], [published], marker='<', color=colour, markersize=9)  # beside its curve's end
    ax.set_xlabel('epoch')
    ax.set_ylabel('test accuracy')
    ax.set_title(f'{dataset}: every recipe at its full length; ◀ the published MNIST figure')
    ax.legend(loc='lower right')
    saving.atomic_write(path, lambda f: fig.savefig(f, format=os.path.splitext(path)[1].lstrip('.') or 'png',
                                                     dpi=80))
    plt.close(fig)
    print(f'Plot saved to {path}', file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', choices=('mnist', 'fashion-mnist', 'cifar10'), default='fashion-mnist',
                        help='(default: fashion-mnist)')
    parser.add_argument('--data-dir', default='./data', help='(default: ./data)')
    parser.add_argument('--only', nargs='+', metavar='NAME',
                        help='these rows only: ' + ', '.join([*MNIST_ROWS, *CIFAR_ROWS]) + ' (default: every row of '
                             'the dataset)')
    parser.add_argument('--book', action='store_true',
                        help='the rows trained as the book\'s own code did (--book in their commands) (default: off)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1], help='(default: 1)')
    parser.add_argument('--epochs', type=flags.positive_int, help='shorten every run to N epochs (default: the '
                                                                   "recipe's)")
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda', 'mps'), default='auto', help='(default: auto)')
    parser.add_argument('--results', help='the results file (default: reproduce-DATASET.jsonl in the current '
                                          'folder)')
    parser.add_argument('--report', action='store_true', help='print the table from the results file, run nothing')
    parser.add_argument('--plot', metavar='PATH.png', help='also draw every run\'s test accuracy per epoch there')
    args = parser.parse_args()
    rows = rows_for(args.dataset, args.book)
    if not rows:
        parser.error(f'argument --book: the book has no rows for --dataset {args.dataset}')
    names = args.only or list(rows)
    unknown = [name for name in names if name not in rows]
    if unknown:
        parser.error(f'argument --only: no row {", ".join(unknown)} for --dataset {args.dataset}'
                     f'{" with --book" if args.book else ""}; choose from {", ".join(rows)}')
    results = args.results or f'reproduce-{args.dataset}.jsonl'
    if not args.report:
        started = time.perf_counter()
        for name in names:
            for seed in seeds_of(name, args):
                key = (name, args.dataset, seed, args.epochs)
                if any((r['row'], r['dataset'], r['seed'], r['shortened_to']) == key for r in read_results(results)):
                    print(f'{name} seed {seed}: already in {results}', file=sys.stderr)
                    continue
                record = run_once(name, args, seed)
                append(results, record)
                figure = (f'vote {record["vote"][-1]:.4f}' if 'vote' in record else
                          f'{record.get("result", record["accuracy"][-1]):.4f}')
                print(f'{name} seed {seed}: {figure} after {record["epochs"]} epochs, '
                      f'{duration(record["seconds"])}', file=sys.stderr, flush=True)
        print(f'this run took {duration(time.perf_counter() - started)}', file=sys.stderr)
    runs = [r for r in read_results(results) if r['row'] in names]
    print(table(runs, args.dataset, args.book))
    if args.plot:
        plot(args.plot, runs, args.dataset, args.book)


if __name__ == '__main__':
    stops.run_as_command(main)
