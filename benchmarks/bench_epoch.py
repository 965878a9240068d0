"""How fast is one epoch? Our pipeline against the textbook one, same net, same optimizer, same run.

(a) ours: the scripts' own epoch: common.Batches (the dataset whole on the device as uint8, batches sliced
    from a permutation) and the script's sgd_step through speed.fast_step, with the scripts' threads.
(b) textbook: torchvision dataset with ToTensor + Normalize transforms, DataLoader(batch_size=10,
    shuffle=True), and a DataLoader(batch_size=1000) for the test pass.

For each net, the two alternate for --repeats rounds; printed are the median seconds of one training epoch
and of one test pass, and the ratio b/a. "load b" is the textbook's data path alone: one epoch of its
DataLoader with nothing trained, so its steps take (train b - load b); "steps" is that over train a: how
much faster our whole epoch is than the textbook's steps alone. On a CPU, where both run the same PyTorch
kernels, it shows what is left once the data path is gone.

Then, for ours, images/s and achieved GFLOP/s (counted by torch.utils.flop_counter for forward + backward)
at batch 10 and batch 128, against the machine's measured float32 matmul peak.

    python benchmarks/bench_epoch.py --data-dir DIR                  # Fashion-MNIST in DIR/FashionMNIST/raw/
    python benchmarks/bench_epoch.py --data-dir DIR --limit 10000 --repeats 3 --nets simple relu
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import pytorch_mnist  # noqa: E402
import pytorch_mnist_convnet  # noqa: E402
from plumbing import speed  # noqa: E402

def lr_wd(script, net):
    """The learning rate and weight decay of the net's published recipe, as the script has them."""
    return script.RECIPES[net]['lr'], script.RECIPES[net]['wd']


NETS = {  # name: (builder, loss, lr, wd)
    'dense': (pytorch_mnist.nielsen, pytorch_mnist.quadratic_cost, *lr_wd(pytorch_mnist, 'nielsen')),
    'simple': (pytorch_mnist_convnet.simple, F.cross_entropy, *lr_wd(pytorch_mnist_convnet, 'simple')),
    '2conv': (pytorch_mnist_convnet.two_conv, F.cross_entropy, *lr_wd(pytorch_mnist_convnet, '2conv')),
    'relu': (pytorch_mnist_convnet.relu, F.cross_entropy, *lr_wd(pytorch_mnist_convnet, 'relu')),
    'final': (pytorch_mnist_convnet.final, F.cross_entropy, *lr_wd(pytorch_mnist_convnet, 'final')),
}


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elif device.type == 'mps':
        torch.mps.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def ours(model, loss_fn, lr, wd, data, batch_size, device):
    """One epoch as the scripts' train() runs it, then their test pass."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)
    threads = speed.choose_threads(None, batch_size, device)  # as the scripts choose them (plumbing/speed.py)
    step = speed.fast_step(pytorch_mnist_convnet.sgd_step, model, loss_fn, optimizer, threads)
    seed = int(torch.randint(2 ** 31, ()))  # a new batch order each repeat
    batches = common.Batches(data, batch_size, seed, epochs=1, progress=False)

    def epoch():
        model.train()
        loss_sum = 0
        for images, labels in batches:
            loss_sum += step(images, labels) * len(labels)
        return loss_sum.item() / len(data.train)

    train = timed(epoch, device)
    accuracy = []
    test = timed(lambda: accuracy.append(common.test_accuracy(model, data)), device)
    return train, test, accuracy[0]


def textbook(model, loss_fn, lr, wd, train_set, test_set, batch_size, device):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd)

    def load_only():
        for images, labels in DataLoader(train_set, batch_size=batch_size, shuffle=True):
            images, labels = images.to(device), labels.to(device)

    def train_epoch():
        model.train()
        for images, labels in DataLoader(train_set, batch_size=batch_size, shuffle=True):
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    accuracy = []

    @torch.no_grad()
    def test_pass():
        model.eval()
        correct = 0
        for images, labels in DataLoader(test_set, batch_size=1000):
            correct += (model(images.to(device)).argmax(1) == labels.to(device)).sum().item()
        accuracy.append(correct / len(test_set))

    return timed(train_epoch, device), timed(test_pass, device), accuracy[0], timed(load_only, device)


def matmul_peak(device, n=2048, repeats=10):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    seconds = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n ** 3 / seconds / 1e9


def flops_per_image(model, loss_fn, shape, device):
    x = torch.randn(10, *shape, device=device)
    y = torch.arange(10, device=device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x), y).backward()
    model.zero_grad()
    return counter.get_total_flops() / 10


def benchmark_parser(doc, limit=None):
    """The flags the epoch benchmarks share: data, nets, how many images, rounds, device."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-dir', default='./data', help='(default: ./data)')
    parser.add_argument('--dataset', choices=('fashion-mnist', 'mnist'), default='fashion-mnist',
                        help='(default: fashion-mnist)')
    parser.add_argument('--nets', nargs='+', choices=list(NETS), default=list(NETS), help='(default: all)')
    parser.add_argument('--limit', type=int, default=limit,
                        help=f'training and test images (default: {limit or "all"})')
    parser.add_argument('--repeats', type=int, default=3, help='(default: 3)')
    parser.add_argument('--device', default='auto', help='(default: auto)')
    return parser


def main():
    parser = benchmark_parser(__doc__)
    parser.add_argument('--no-baseline', action='store_true', help='time ours only (default: both)')
    args = parser.parse_args()
    device = common.choose_device(args.device)
    layout = common.memory_format_for(device)  # ours as the scripts run it; the textbook model stays as built
    torch.manual_seed(0)

    data = common.load_data(args.dataset, args.data_dir, device, limit=args.limit)
    info = common.DATASETS[args.dataset]
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    train_set = info.cls(args.data_dir, train=True, transform=to_tensor)
    test_set = info.cls(args.data_dir, train=False, transform=to_tensor)
    if args.limit:
        train_set = Subset(train_set, range(min(args.limit, len(train_set))))
        test_set = Subset(test_set, range(min(args.limit, len(test_set))))
    n_train, n_test = len(data.train), len(data.test)
    print(f'{args.dataset}: {n_train} training, {n_test} test images; device {device}; '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads; batch 10; {args.repeats} repeats')
    print('train, test: median seconds of one training epoch and one test pass; acc: mean test accuracy after it')
    print(f'{"net":7} {"train a":>8} {"train b":>8} {"b/a":>6} {"load b":>7} {"steps":>5} '
          f'{"test a":>7} {"test b":>7} {"b/a":>6} {"acc a":>6} {"acc b":>6}')
    for name in args.nets:
        build, loss_fn, lr, wd = NETS[name]
        a, b = [], []
        for _ in range(args.repeats):
            a.append(ours(build().to(device, memory_format=layout), loss_fn, lr, wd, data, 10, device))
            if not args.no_baseline:
                b.append(textbook(build().to(device), loss_fn, lr, wd, train_set, test_set, 10, device))
        a_train, a_test, a_acc = zip(*a)
        ta, sa, acc_a = statistics.median(a_train), statistics.median(a_test), statistics.mean(a_acc)
        row = f'{name:7} {ta:7.2f}s'
        if b:
            b_train, b_test, b_acc, b_load = zip(*b)
            tb, sb, load = (statistics.median(t) for t in (b_train, b_test, b_load))
            acc_b = statistics.mean(b_acc)
            row += (f' {tb:7.2f}s {tb / ta:6.1f} {load:6.2f}s {(tb - load) / ta:5.1f} '
                    f'{sa:6.3f}s {sb:6.3f}s {sb / sa:6.1f} {acc_a:6.4f} {acc_b:6.4f}')
        else:
            row += f' {"":>8} {"":>6} {"":>7} {"":>5} {sa:6.3f}s {"":>7} {"":>6} {acc_a:6.4f}'
        print(row, flush=True)

    peak = matmul_peak(device)
    print(f'\nmatmul peak (float32, 2048x2048): {peak:.1f} GFLOP/s')
    print(f'{"net":7} {"batch":>5} {"images/s":>9} {"GFLOP/s":>8} {"of peak":>8}')
    for name in args.nets:
        build, loss_fn, lr, wd = NETS[name]
        model = build().to(device, memory_format=layout)
        flops = flops_per_image(model, loss_fn, data.train.images.shape[1:], device)
        for batch_size in (10, 128):
            seconds = statistics.median(ours(model, loss_fn, lr, wd, data, batch_size, device)[0]
                                        for _ in range(args.repeats))
            rate = n_train / seconds
            print(f'{name:7} {batch_size:5} {rate:9.0f} {rate * flops / 1e9:8.2f} {rate * flops / 1e9 / peak:8.1%}',
                  flush=True)


if __name__ == '__main__':
    main()
