"""The CIFAR-10 progression of the "PyTorch With Baby Steps" walk-through: dense, conv, pool, final.

Each channel normalized with mean 0.5 and std 0.5, batch size 4, plain SGD, cross-entropy. The
walk-through applied a sigmoid (or ReLU) to the last layer's output before the cross-entropy; here the
last layer gives raw logits, which is what cross-entropy expects (it takes the log-softmax itself).
The published recipes and their accuracies:

    python cifar_convnet.py                  # 25 epochs, lr 0.01: 62 %
    python cifar_convnet.py --net dense      #  3 epochs, lr 0.1:  39 %
    python cifar_convnet.py --net conv       #  3 epochs, lr 0.1:  45 %
    python cifar_convnet.py --net pool       #  3 epochs, lr 0.1:  45 %

The first run downloads CIFAR-10 (about 170 MB) into ./data/cifar-10-batches-py. After the test
accuracy come the accuracy of each class and the predicted classes of the first 8 test images.
Try any of them quickly with `--epochs 1 --limit 1000`; `--help` lists every flag.
"""
import plumbing.first  # noqa: F401 -- before torch: Ctrl-C while it loads is one line

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from plumbing import flags, modes, own_images, speed, stops

# As in pytorch_mnist_convnet.py, 2x2 max-pooling comes before the activation: pooling first is the
# same function (max-pool commutes with a rising activation) on 4x fewer values.


def dense():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 32 * 32, 25), nn.Sigmoid(),
        nn.Linear(25, 10))


def conv():
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.Sigmoid(),                        # 6 x 28 x 28
        nn.Flatten(), nn.Linear(6 * 28 * 28, 120), nn.Sigmoid(),
        nn.Linear(120, 10))


def pool():
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.MaxPool2d(2), nn.Sigmoid(),       # 6 x 14 x 14
        nn.Flatten(), nn.Linear(6 * 14 * 14, 120), nn.Sigmoid(),
        nn.Linear(120, 10))


def final():
    return nn.Sequential(
        nn.Conv2d(3, 10, 5), nn.MaxPool2d(2), nn.ReLU(),         # 10 x 14 x 14
        nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(),        # 20 x 5 x 5
        nn.Flatten(), nn.Linear(20 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 10))


NETS = {'final': final, 'dense': dense, 'conv': conv, 'pool': pool}  # the first is the default
RECIPES = {'final': dict(epochs=25, lr=0.01, wd=0.0),
           'dense': dict(epochs=3, lr=0.1, wd=0.0),
           'conv': dict(epochs=3, lr=0.1, wd=0.0),
           'pool': dict(epochs=3, lr=0.1, wd=0.0)}


def parse_args(argv=None):
    parser = flags.make_parser(__doc__, NETS, RECIPES, datasets=('cifar10',), batch_size=4, extend=False)
    return modes.parse_args(parser, argv)


def sgd_step(model, loss_fn, optimizer, images, labels):
    """One step of stochastic gradient descent on one batch; returns the batch's mean loss."""
    loss = loss_fn(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def train(args, model, data, loss_fn=F.cross_entropy):
    """Epoch after epoch, one SGD step per batch; after each epoch, the test accuracy. Returns the history.
    (With --seeds, `model` is several nets trained as one, and this loop trains them all: plumbing/stacked.py
    says how.)"""
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.wd)
    step = speed.fast_step(sgd_step, model, loss_fn, optimizer, args.threads)  # the same step, made fast
    batches = common.Batches(data, args.batch_size, args.seeds or args.seed, args.epochs,
                             progress=not args.no_progress)  # --seeds: a batch order for each net
    history = {'loss': [], 'accuracy': []}  # each epoch's (--seeds and --book add theirs: modes.record)
    for epoch in modes.epochs(args, model, optimizer, batches, history):  # --resume: from where it stopped
        start = time.perf_counter()
        model.train()  # training mode: dropout on (the test pass turns it off while it runs)
        loss_sum = 0
        for images, labels in batches:
            loss_sum += step(images, labels) * len(labels)
        mean_loss = loss_sum.item() / len(data.train)  # waits for the device; the batch loop never does
        common.stop_if_diverged(mean_loss, epoch)
        accuracy = common.test_accuracy(model, data)
        history['loss'].append(mean_loss)
        history['accuracy'].append(accuracy)
        print(f'Test data results: {accuracy:.4f}, Epoch {epoch}/{args.epochs}, '
              f'train loss {mean_loss:.4f}, {time.perf_counter() - start:.1f} s', flush=True)
    return history


def class_report(predicted, labels, classes, first=8):
    """The lines after the result: each class's test accuracy, then the true and predicted classes of
    the first `first` test images. Counted on the device; one transfer to the host."""
    n = len(classes)
    correct = torch.bincount(labels[predicted == labels], minlength=n)
    total = torch.bincount(labels, minlength=n)
    numbers = torch.cat([correct, total, labels[:first], predicted[:first]]).tolist()
    correct, total, numbers = numbers[:n], numbers[n:2 * n], numbers[2 * n:]
    shown = len(numbers) // 2
    lines = [f'Accuracy of {name}: {100 * c / t:.0f} %' if t else f'Accuracy of {name}: n/a (no test images)'
             for name, c, t in zip(classes, correct, total)]
    lines.append('GroundTruth:  ' + ' '.join(classes[i] for i in numbers[:shown]))
    lines.append('Predicted:  ' + ' '.join(classes[i] for i in numbers[shown:]))
    return lines


def main(argv=None):
    args = parse_args(argv)
    print(f'Device: {speed.device_line(args)}', flush=True)  # on the CPU, with its threads
    images = own_images.read_for(args)  # --predict: your own images, read first
    model = modes.net(args, NETS[args.net])  # --seeds: one net per seed, trained as one (plumbing/stacked.py)
    if modes.only_predicting(args):  # --load-model --predict: your own images to classify, no dataset
        own_images.predict(args, model, images)
        return model, None, None
    data = modes.data(args)
    loss_fn = modes.loss(args, F.cross_entropy, model, data)  # --seeds: each net's own
    history = modes.train(args, train, model, data, loss_fn)  # --load-model: test the saved model instead
    modes.report(args, history)  # the result line (--seeds: each net's and their vote's)
    modes.save(args, model, data, history, images)  # --save-model (resumable), --plot, --predict
    print()  # each class's accuracy (the vote's, for several nets), and the first test images
    print('\n'.join(class_report(common.predict(model, data), data.test.labels, data.classes)), flush=True)
    return model, data, history


if __name__ == '__main__':
    stops.run_as_command(main)
