"""How long does a script take to start? Whole processes, as a learner runs them: `--help`, and a quick try
(`--epochs 1 --limit 1000`), in this checkout and, with --against, in another one, alternating.

    python benchmarks/bench_startup.py --data-dir DIR                        # DIR/FashionMNIST/raw/ holds the files
    python benchmarks/bench_startup.py --data-dir DIR --against /path/to/old/checkout --repeats 7

Printed: the median seconds of each command in each checkout and, with --against, their ratio.
"""
import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def commands(data_dir):
    quick = ['--dataset', 'fashion-mnist', '--data-dir', str(data_dir), '--epochs', '1', '--limit', '1000',
             '--device', 'cpu', '--no-progress']
    return {'pytorch_mnist_convnet.py --help': ['pytorch_mnist_convnet.py', '--help'],
            'pytorch_mnist_convnet.py --epochs 1 --limit 1000': ['pytorch_mnist_convnet.py', *quick],
            'pytorch_mnist.py --epochs 1 --limit 1000': ['pytorch_mnist.py', *quick]}


def seconds(checkout, argv):
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=checkout, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', required=True, help='a folder with FashionMNIST/raw/ in it')
    parser.add_argument('--against', type=Path, help='another checkout to time beside this one (default: none)')
    parser.add_argument('--repeats', type=int, default=5, help='rounds, each running every command (default: 5)')
    args = parser.parse_args()
    checkouts = {'this': HERE, **({'against': args.against.resolve()} if args.against else {})}
    runs = commands(args.data_dir)
    times = {(name, where): [] for name in runs for where in checkouts}
    for _ in range(args.repeats):
        for name, argv in runs.items():
            for where, checkout in checkouts.items():  # side by side: one after the other, every round
                times[name, where].append(seconds(checkout, argv))
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(f'median of {args.repeats}, seconds: ' + ', '.join(f'{where} = {path}' for where, path in checkouts.items()))
    for name in runs:
        row = '  '.join(f'{where} {medians[name, where]:6.2f}' for where in checkouts)
        if args.against:
            row += f'  this/against {medians[name, "this"] / medians[name, "against"]:.2f}'
        print(f'{name:52s} {row}')


if __name__ == '__main__':
    main()
