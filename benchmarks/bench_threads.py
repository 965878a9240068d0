"""Does the thread policy pay? One training epoch and its test pass, as the scripts' train() runs them, under
torch's own policy (every core shares each operation: what the scripts did before plumbing/speed.py) and under
the scripts' (one thread per net, the test pass on every core, --seeds' groups side by side in threads).

(0) The machine itself: a loop of single-threaded 256 x 256 matrix products, alone and beside the competing
    process. On a machine whose cores share their hardware, no thread policy does better than this.
(1) One net, on a quiet machine and beside a competing CPU-bound process that this benchmark starts and stops
    itself (a busy machine: a browser, another run), the two policies alternating.
(2) K nets at once (--seeds 1..K) against one net, each policy against its own one net, on a quiet machine.

Printed: medians over --repeats rounds, in seconds (training epoch + test pass) and as ratios.

    python benchmarks/bench_threads.py --data-dir DIR                  # Fashion-MNIST in DIR/FashionMNIST/raw/
    python benchmarks/bench_threads.py --data-dir DIR --nets simple --limit 3000 --repeats 3 --k 2 5
    python benchmarks/bench_threads.py --data-dir DIR --skip one several                  # (0) alone
"""
import contextlib
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import pytorch_mnist_convnet  # noqa: E402
from plumbing import speed, stacked  # noqa: E402
from bench_epoch import NETS, benchmark_parser, timed  # noqa: E402

CPU = torch.device('cpu')


def epoch(build, loss_fn, lr, wd, data, seeds, policy):
    """Seconds of one training epoch and then the test pass. policy 'torch': one stack of the nets, torch's
    thread count throughout; 'ours': speed.choose_threads, as the scripts run (several nets in groups)."""
    threads = speed.choose_threads(None, 10, CPU, len(seeds)) if policy == 'ours' else None
    if len(seeds) == 1:
        torch.manual_seed(seeds[0])
        model = build()
        loss = loss_fn
    else:
        model = stacked.seeded(build, seeds, CPU, threads.groups if threads else 1)
        loss = stacked.summed_over_nets(loss_fn)
    model = model.to(CPU, memory_format=common.memory_format_for(CPU))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    step = speed.fast_step(pytorch_mnist_convnet.sgd_step, model, loss, optimizer, threads)
    batches = common.Batches(data, 10, seeds if len(seeds) > 1 else seeds[0], epochs=1, progress=False)

    def train_and_test():
        model.train()
        loss_sum = 0
        for images, labels in batches:
            loss_sum += step(images, labels) * len(labels)
        loss_sum.item()
        common.test_accuracy(model, data)
    return timed(train_and_test, CPU)


@contextlib.contextmanager
def competing_process(busy):
    """A CPU-bound process beside the benchmark while the block runs (busy), or none."""
    if not busy:
        yield
        return
    process = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def matrix_products(n=2000):
    """Seconds of n single-threaded 256 x 256 matrix products."""
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return timed(lambda: [a @ b for _ in range(n)], CPU)
    finally:
        torch.set_num_threads(before)


def medians(repeats, one_round):
    """The median of each time one_round() returns ({key: seconds}) over `repeats` rounds, alternating."""
    rounds = [one_round() for _ in range(repeats)]
    return {key: statistics.median(times[key] for times in rounds) for key in rounds[0]}


def quiet_then_busy(measure):
    """{(busy, key): seconds} of measure() ({key: seconds}) on a quiet machine, then beside a busy process."""
    times = {}
    for busy in (False, True):
        with competing_process(busy):
            times.update({(busy, key): seconds for key, seconds in measure().items()})
    return times


def main():
    parser = benchmark_parser(__doc__, limit=10000)
    parser.set_defaults(nets=['simple', 'relu', 'final'])
    parser.add_argument('--k', type=int, nargs='+', default=[2, 3, 5], help='how many nets at once (default: 2 3 5)')
    parser.add_argument('--skip', nargs='+', choices=('machine', 'one', 'several'), default=[],
                        help='leave out part (0), (1) or (2) (default: none)')
    args = parser.parse_args()
    data = common.load_data(args.dataset, args.data_dir, CPU, limit=args.limit)
    print(f'{args.dataset}: {len(data.train)} training, {len(data.test)} test images; CPU, '
          f'{torch.get_num_threads()} threads by torch\'s policy; torch {torch.__version__}; batch 10; '
          f'{args.repeats} rounds, alternating; medians of training epoch + test pass')
    if 'machine' not in args.skip:
        m = medians(args.repeats, lambda: quiet_then_busy(lambda: {'products': matrix_products()}))
        quiet, busy = m[False, 'products'], m[True, 'products']
        print(f'\n(0) the machine: one thread of matrix products, quiet {quiet:.2f}s, busy {busy:.2f}s, '
              f'busy/quiet {busy / quiet:.2f}')
    if 'one' not in args.skip:
        print('\n(1) one net: torch\'s policy (every core on each operation) against ours (1 thread per net)')
        print(f'{"net":7} {"quiet torch":>11} {"quiet ours":>10} {"ours/torch":>10} {"busy torch":>10} '
              f'{"busy ours":>9} {"ours/torch":>10} {"busy/quiet torch":>16} {"busy/quiet ours":>15}')
        for name in args.nets:
            build, loss_fn, lr, wd = NETS[name]
            m = medians(args.repeats, lambda: quiet_then_busy(
                lambda: {policy: epoch(build, loss_fn, lr, wd, data, [1], policy) for policy in ('torch', 'ours')}))
            qt, qo, bt, bo = m[False, 'torch'], m[False, 'ours'], m[True, 'torch'], m[True, 'ours']
            print(f'{name:7} {qt:10.2f}s {qo:9.2f}s {qo / qt:10.2f} {bt:9.2f}s {bo:8.2f}s {bo / bt:10.2f} '
                  f'{bt / qt:16.2f} {bo / qo:15.2f}', flush=True)
    if 'several' not in args.skip:
        print('\n(2) K nets at once against one net, quiet; each policy against its own one net')
        print(f'{"net":7} {"K":>2} {"one torch":>9} {"K torch":>8} {"K/1":>5} {"one ours":>8} {"K ours":>7} '
              f'{"K/1":>5} {"K ours/K torch":>14}')
        for name in args.nets:
            build, loss_fn, lr, wd = NETS[name]
            m = medians(args.repeats, lambda: {
                (k, policy): epoch(build, loss_fn, lr, wd, data, list(range(1, k + 1)), policy)
                for k in [1] + args.k for policy in ('torch', 'ours')})
            for k in args.k:
                print(f'{name:7} {k:2} {m[1, "torch"]:8.2f}s {m[k, "torch"]:7.2f}s {m[k, "torch"] / m[1, "torch"]:5.2f} '
                      f'{m[1, "ours"]:7.2f}s {m[k, "ours"]:6.2f}s {m[k, "ours"] / m[1, "ours"]:5.2f} '
                      f'{m[k, "ours"] / m[k, "torch"]:14.2f}', flush=True)


if __name__ == '__main__':
    main()
