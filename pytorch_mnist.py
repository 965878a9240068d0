"""A dense network on MNIST: Nielsen's "Neural Networks and Deep Learning", chapter 1.

    python pytorch_mnist.py                  # 784-100-10 sigmoid, quadratic cost, lr 3.0, 30 epochs: 0.9758
    python pytorch_mnist.py --net softmax    # 784-256-10, softmax output with cross-entropy

`--net softmax` is the network of the "Neural networks with PyTorch" notebook. Its output layer gives raw
scores (logits); the softmax is applied inside the cross-entropy, which is how PyTorch wants it.
Try either quickly with `--epochs 1 --limit 1000`; `--help` lists every flag.
Then: `--seeds 1 2 3 4 5` trains five nets at once and lets them vote; `--save-model m.pt` keeps a run,
`--resume m.pt` goes on with it after a stop, and `--load-model m.pt --predict my_digit.png` classifies
your own images. `--book` trains as the book's own network.py did (book.py): the book's 96.59 %.
"""
import plumbing.first  # noqa: F401 -- before torch: Ctrl-C while it loads is one line

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import book
import common
from plumbing import flags, modes, own_images, speed, stops


def nielsen():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 100), nn.Sigmoid(), nn.Linear(100, 10), nn.Sigmoid())


def softmax():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.Sigmoid(), nn.Linear(256, 10))


def quadratic_cost(output, label):
    """Mean squared error between the 10 outputs and the one-hot target (1 for the true digit).

    F.mse_loss averages over the 10 outputs as well as over the batch, so its gradient is 2/10 = 1/5 of
    that of the book's cost, 1/2 |y - a|^2 averaged over the batch: lr 3.0 here is eta = 0.6 in chapter 1's
    convention, and the book's eta = 3.0 would be --lr 15.
    """
    return F.mse_loss(output, F.one_hot(label, 10).to(output.dtype))


NETS = {'nielsen': nielsen, 'softmax': softmax}
RECIPES = {'nielsen': dict(epochs=30, lr=3.0, wd=0.0),    # the published recipe (eta = 0.6 in the book's terms)
           'softmax': dict(epochs=30, lr=0.1, wd=0.0)}
LOSSES = {'nielsen': quadratic_cost, 'softmax': F.cross_entropy}


def sgd_step(model, loss_fn, optimizer, images, labels):
    """One step of stochastic gradient descent on one batch; returns the batch's mean loss."""
    loss = loss_fn(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def train(args, model, data, loss_fn):
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


def main(argv=None):
    args = modes.parse_args(flags.make_parser(__doc__, NETS, RECIPES, book=book.RECIPES), argv)
    print(f'Device: {speed.device_line(args)}', flush=True)  # on the CPU, with its threads
    images = own_images.read_for(args)  # --predict: your own images, read first
    model = modes.net(args, NETS[args.net])  # --seeds: one net per seed, trained as one (plumbing/stacked.py)
    if modes.only_predicting(args):  # --load-model --predict: your own images to classify, no dataset
        own_images.predict(args, model, images)
        return model, None, None
    data = modes.data(args)  # --book: 10,000 training images held out, raw pixels (book.py)
    loss_fn = modes.loss(args, LOSSES[args.net], model, data)  # --book: the book's cost, 1/2 |y - a|^2
    history = modes.train(args, train, model, data, loss_fn)  # --load-model: test the saved model instead
    modes.report(args, history)  # the result line (--seeds: each net's and their vote's; --book: its best epoch)
    modes.save(args, model, data, history, images)  # --save-model (resumable), --plot, --predict
    return model, data, history


if __name__ == '__main__':
    stops.run_as_command(main)
