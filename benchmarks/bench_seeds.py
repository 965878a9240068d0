"""How much does training K nets at once (--seeds) cost, against one net (--seed)?

For each net, in one process and alternating for --repeats rounds:
(1) one net: one training epoch as the scripts' train() runs it (common.Batches, the script's sgd_step
    through speed.fast_step), then its test pass;
(K) K nets at once: the same epoch as the scripts' train() runs it with --seeds (common.Batches given the seeds,
    the same sgd_step on stacked.StackedNets, in groups side by side), then their test pass (each net's outputs and the vote).
Printed: median seconds of each, "K/1" (the K nets' time over one net's: 1.0 would make them free) and
"gain" (K separate runs over the K nets at once: how many times the throughput of running them one by one).

    python benchmarks/bench_seeds.py --data-dir DIR                       # Fashion-MNIST in DIR/FashionMNIST/raw/
    python benchmarks/bench_seeds.py --data-dir DIR --limit 10000 --nets simple --repeats 5
"""
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import pytorch_mnist_convnet  # noqa: E402
from plumbing import speed, stacked  # noqa: E402
from bench_epoch import NETS, benchmark_parser, ours, timed  # noqa: E402


def one_net(build, loss_fn, lr, wd, data, device):
    """bench_epoch's own timing of one net: a training epoch, then a test pass."""
    torch.manual_seed(1)
    train, test, _ = ours(build().to(device, memory_format=common.memory_format_for(device)), loss_fn, lr, wd,
                          data, 10, device)
    return train, test


def k_nets(build, loss_fn, lr, wd, data, device, seeds):
    """The same for K nets at once, as the scripts' train() runs them."""
    threads = speed.choose_threads(None, 10, device, len(seeds))  # as the scripts choose them: groups side by side
    model = stacked.seeded(build, seeds, device, threads.groups)
    model = model.to(device, memory_format=common.memory_format_for(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    step = speed.fast_step(pytorch_mnist_convnet.sgd_step, model, stacked.summed_over_nets(loss_fn), optimizer,
                           threads)
    batches = common.Batches(data, 10, seeds, epochs=1, progress=False)

    def epoch():
        model.train()
        loss_sum = 0
        for images, labels in batches:
            loss_sum += step(images, labels) * len(labels)
        return loss_sum.item()

    return timed(epoch, device), timed(lambda: common.test_accuracy(model, data), device)


def main():
    parser = benchmark_parser(__doc__, limit=10000)
    parser.add_argument('--k', type=int, default=5, help='how many nets at once: seeds 1..K (default: 5)')
    args = parser.parse_args()
    device = common.choose_device(args.device)
    seeds = list(range(1, args.k + 1))
    data = common.load_data(args.dataset, args.data_dir, device, limit=args.limit)
    print(f'{args.dataset}: {len(data.train)} training, {len(data.test)} test images; device {device}; '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads; batch 10; K = {args.k}; '
          f'{args.repeats} rounds, alternating; medians')
    print(f'{"net":7} {"train 1":>8} {"train K":>8} {"K/1":>5} {"gain":>5} {"test 1":>7} {"test K":>7} {"K/1":>5}')
    for name in args.nets:
        build, loss_fn, lr, wd = NETS[name]
        one, many = [], []
        for _ in range(args.repeats):
            one.append(one_net(build, loss_fn, lr, wd, data, device))
            many.append(k_nets(build, loss_fn, lr, wd, data, device, seeds))
        (train1, test1), (train_k, test_k) = ([statistics.median(t) for t in zip(*runs)] for runs in (one, many))
        print(f'{name:7} {train1:7.2f}s {train_k:7.2f}s {train_k / train1:5.2f} {args.k * train1 / train_k:5.2f} '
              f'{test1:6.3f}s {test_k:6.3f}s {test_k / test1:5.2f}', flush=True)


if __name__ == '__main__':
    main()
