"""Threads or processes for --seeds' groups? The scripts train each group of nets in a thread of its own
(plumbing/speed.py, SpreadStep). The other way is a process per group: the weights in shared memory, the child
forked from the run, each step's batch handed over in a shared buffer. No lock (the GIL) is shared then, but
every step crosses between processes twice. This benchmark measures both, on the training epoch alone (the
test pass is the same for both), K nets against one net, alternating, on a quiet machine; Linux only (fork).

The process version here is a measurement, not a feature: it keeps no optimizer state across processes
(momentum would stay in the child), and Ctrl-C, --resume and errors in the child are left out.

    python benchmarks/bench_processes.py --data-dir DIR                # Fashion-MNIST in DIR/FashionMNIST/raw/
    python benchmarks/bench_processes.py --data-dir DIR --nets simple --limit 3000 --k 2
"""
import multiprocessing
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import pytorch_mnist_convnet  # noqa: E402
from plumbing import speed, stacked  # noqa: E402
from bench_epoch import NETS, benchmark_parser, timed  # noqa: E402
from bench_threads import medians  # noqa: E402

CPU = torch.device('cpu')


class ProcessSpreadStep(speed.SpreadStep):
    """SpreadStep with its workers in forked processes instead of threads (see the module's docstring)."""

    def __init__(self, sgd_step, model, loss_fn, optimizer, threads):
        super().__init__(sgd_step, model, loss_fn, optimizer, threads)
        speed.Worker.stop_all(self.workers)  # no threads: the children are forked at the first step
        self.children = []

    def fork(self, images, labels):
        for group, loss, part, (a, b) in zip(self.groups[1:], self.losses[1:], self.parts[1:], self.spans[1:]):
            group.share_memory()  # the weights the child updates are the ones this process reads
            shared = [images[:, a:b].clone().share_memory_(), labels[:, a:b].clone().share_memory_(),
                      torch.zeros(()).share_memory_()]
            here, there = multiprocessing.Pipe()
            child = multiprocessing.get_context('fork').Process(
                target=self.child_loop, args=(there, self.sgd_step, group, loss, part, *shared), daemon=True)
            child.start()
            self.children.append((child, here, shared))

    @staticmethod
    def child_loop(connection, sgd_step, group, loss_fn, optimizer, images, labels, loss):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(1)
        while connection.recv_bytes():  # b'' ends it
            loss.copy_(sgd_step(group, loss_fn, optimizer, images, labels))
            connection.send_bytes(b'done')

    def __call__(self, images, labels):
        if not self.children:
            self.fork(images, labels)
        for (_, connection, (shared_images, shared_labels, _)), (a, b) in zip(self.children, self.spans[1:]):
            shared_images.copy_(images[:, a:b])
            shared_labels.copy_(labels[:, a:b])
            connection.send_bytes(b'step')
        torch.set_num_threads(self.threads)
        a, b = self.spans[0]
        first = self.sgd_step(self.groups[0], self.losses[0], self.parts[0], images[:, a:b], labels[:, a:b])
        others = []
        for _, connection, (_, _, loss) in self.children:
            connection.recv_bytes()
            others.append(loss.clone())
        return sum(loss * n for loss, n in zip([first, *others], self.sizes)) / sum(self.sizes)

    def close(self):
        for child, connection, _ in self.children:
            connection.send_bytes(b'')
            child.join()


def training_epoch(build, loss_fn, lr, wd, data, k, spread, weights=None):
    """Seconds of one training epoch of nets 1..k under the scripts' thread policy, the groups spread by `spread`
    (speed.SpreadStep or ProcessSpreadStep; one net runs as the scripts run it). `weights`, a list: the trained
    nets' weights are appended to it."""
    seeds = list(range(1, k + 1))
    threads = speed.choose_threads(None, 10, CPU, k)
    if k == 1:
        torch.manual_seed(1)
        model, loss = build(), loss_fn
    else:
        groups = min(k, max(threads.groups, 2))  # at least two, to compare (OMP_NUM_THREADS=1 would give one)
        model, loss = stacked.seeded(build, seeds, CPU, groups), stacked.summed_over_nets(loss_fn)
    model = model.to(CPU, memory_format=common.memory_format_for(CPU))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    if k == 1:
        step = speed.fast_step(pytorch_mnist_convnet.sgd_step, model, loss, optimizer, threads)
    else:
        step = spread(pytorch_mnist_convnet.sgd_step, model, loss, optimizer, threads.per_group)
    batches = common.Batches(data, 10, seeds if k > 1 else 1, epochs=1, progress=False)

    def train():
        model.train()
        total = sum(step(images, labels) * len(labels) for images, labels in batches)
        total.item()
    seconds = timed(train, CPU)
    if isinstance(step, ProcessSpreadStep):
        step.close()
    if weights is not None:
        weights.append(model.state_dicts() if k > 1 else [model.state_dict()])
    return seconds


def same_nets(build, loss_fn, lr, wd, data, k):
    """Do the two designs train the same k nets, to the last bit? (Were the weights not shared, the children
    would train copies of their own, and this run's nets would not move.)"""
    trained = []
    for spread in (speed.SpreadStep, ProcessSpreadStep):
        training_epoch(build, loss_fn, lr, wd, data, k, spread, trained)
    return all(a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
               for a, b in zip(*trained, strict=True))


def main():
    parser = benchmark_parser(__doc__, limit=10000)
    parser.set_defaults(nets=['simple', 'relu'])
    parser.add_argument('--k', type=int, nargs='+', default=[2, 3, 5], help='how many nets at once (default: 2 3 5)')
    args = parser.parse_args()
    data = common.load_data(args.dataset, args.data_dir, CPU, limit=args.limit)
    print(f'{args.dataset}: {len(data.train)} training images; CPU, {torch.get_num_threads()} cores for torch; '
          f'torch {torch.__version__}; batch 10; {args.repeats} rounds, alternating; medians of the training epoch')
    print(f'{"net":7} {"K":>2} {"one net":>7} {"threads":>7} {"K/1":>5} {"processes":>9} {"K/1":>5} '
          f'{"processes/threads":>17}')
    spreads = {'threads': speed.SpreadStep, 'processes': ProcessSpreadStep}
    for name in args.nets:
        build, loss_fn, lr, wd = NETS[name]
        print(f'{name}: processes train the same {max(args.k)} nets as threads: '
              f'{"yes" if same_nets(build, loss_fn, lr, wd, data, max(args.k)) else "NO"}', flush=True)
        m = medians(args.repeats, lambda: {
            'one': training_epoch(build, loss_fn, lr, wd, data, 1, None),
            **{(k, how): training_epoch(build, loss_fn, lr, wd, data, k, spread)
               for k in args.k for how, spread in spreads.items()}})
        for k in args.k:
            one, threads, processes = m['one'], m[k, 'threads'], m[k, 'processes']
            print(f'{name:7} {k:2} {one:6.2f}s {threads:6.2f}s {threads / one:5.2f} {processes:8.2f}s '
                  f'{processes / one:5.2f} {processes / threads:17.2f}', flush=True)


if __name__ == '__main__':
    main()
