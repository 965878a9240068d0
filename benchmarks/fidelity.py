"""Does each published recipe still train as the original implementation did? One epoch of every recipe
on Fashion-MNIST over several seeds; prints the mean and spread of the test accuracy.

    python benchmarks/fidelity.py --data-dir DIR            # DIR/FashionMNIST/raw/ holds the four files
    python benchmarks/fidelity.py --data-dir DIR --seeds 1 2 3 --only simple relu

The original implementation printed, for one epoch of each recipe on Fashion-MNIST (single runs):
dense 0.825, simple 0.846, 2conv 0.775, relu 0.849, final 0.836.
"""
import argparse
import contextlib
import io
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pytorch_mnist  # noqa: E402
import pytorch_mnist_convnet  # noqa: E402

RECIPES = {  # name: (script, flags of the published recipe, the original's one-epoch figure)
    'dense': (pytorch_mnist, [], 0.825),
    'simple': (pytorch_mnist_convnet, [], 0.846),
    '2conv': (pytorch_mnist_convnet, ['--net', '2conv'], 0.775),
    'relu': (pytorch_mnist_convnet, ['--net', 'relu', '--lr', '0.03', '--wd', '0.00005'], 0.849),
    'final': (pytorch_mnist_convnet, ['--net', 'final', '--lr', '0.005', '--extend_data'], 0.836),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', required=True, help='folder holding FashionMNIST/raw/')
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3], help='(default: 1 2 3)')
    parser.add_argument('--epochs', type=int, default=1, help='(default: 1)')
    parser.add_argument('--only', nargs='+', choices=list(RECIPES), default=list(RECIPES), help='(default: all)')
    parser.add_argument('--device', default='auto', help='(default: auto)')
    args = parser.parse_args()
    print(f'{"recipe":8} {"original":>8} {"mean":>7} {"min":>7} {"max":>7}  per seed')
    for name in args.only:
        script, flags, original = RECIPES[name]
        accuracies = []
        for seed in args.seeds:
            argv = [*flags, '--dataset', 'fashion-mnist', '--data-dir', args.data_dir, '--epochs',
                    str(args.epochs), '--seed', str(seed), '--device', args.device, '--no-progress']
            with contextlib.redirect_stdout(io.StringIO()):
                _, _, history = script.main(argv)
            accuracies.append(history['accuracy'][-1])
        print(f'{name:8} {original:8.3f} {statistics.mean(accuracies):7.4f} {min(accuracies):7.4f} '
              f'{max(accuracies):7.4f}  ' + ' '.join(f'{a:.4f}' for a in accuracies), flush=True)


if __name__ == '__main__':
    main()
