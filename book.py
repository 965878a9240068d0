"""Nielsen's own protocol: how the book's code (network3.py for chapter 6) trained and reported its nets, in
the pieces where it differs from the scripts' default. Read them beside chapter 6 and src/network3.py of
mnielsen/neural-networks-and-deep-learning.

What differs, and why the book's published column differs from the original PyTorch version's:
- Data: the first 50,000 MNIST training images train and the last 10,000 validate (mnist.pkl.gz's split);
  the pixels are the raw values in [0, 1], with no mean/std normalization. network3 walks the training set
  in the same order every epoch (it never reshuffles), and drops a last batch that is not full.
- Initial weights: N(0, 1/n_out) for conv and fully connected weights (init_weights says what n_out is),
  N(0, 1) for their biases, zeros for the softmax layer.
- Cost: the log-likelihood of the softmax, plus 0.5 * lambda * (sum of every squared weight, biases left
  out) / (mini-batches per epoch) (weight_cost).
- Dropout scales at test time, not in training (Dropout).
- Reporting: the validation accuracy after each epoch picks the epoch, and the published figure is the test
  accuracy at the best validation epoch, a later epoch winning a tie (best_epoch). The default protocol
  reports the last epoch's test accuracy and holds nothing out.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn

import common

# network3.py's runs in chapter 6, mini-batch size 10 (`final` on the expanded training set)
RECIPES = {
    'simple': dict(epochs=60, lr=0.1, lmbda=0.0),
    '2conv': dict(epochs=60, lr=0.1, lmbda=0.0),
    'relu': dict(epochs=60, lr=0.03, lmbda=0.1),
    'final': dict(epochs=40, lr=0.03, lmbda=0.0),
}
VALIDATION = 10_000  # of MNIST's 60,000 training images: the last 10,000


def validation_size(n):
    """How many of n training images validate: MNIST's 10,000 of 60,000; on another size, the last sixth."""
    return VALIDATION if n == 60_000 else n // 6


def split(images, labels):
    """(training images, labels), (validation images, labels): the validation images are the last ones."""
    n = len(images) - validation_size(len(images))
    return (images[:n], labels[:n]), (images[n:], labels[n:])


@dataclass
class Data(common.Data):
    validation: common.Split = None   # the held-out training images, on the device


def load_data(name, data_dir, device, limit=None, extend=False, pad=0, seed=1):
    """common.load_data as network3 had its data: the training split's last images held out to validate
    (split), the rest shifted to 5x (extend: expand_mnist.py shifts the 50,000 only, then shuffles the
    250,000 once, with its own generator here), and raw pixels: x / 255, no mean or std."""
    data = common.load_data(name, data_dir, device, limit=limit, pad=pad)
    (images, labels), validation = split(data.train.images, data.train.labels)
    if extend:
        images, labels = common.with_shifted_copies(images), labels.repeat(5)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).to(device)
        images, labels = images[order], labels[order]
    return Data(name, common.Split(images, labels), data.test, torch.zeros_like(data.mean),
                torch.ones_like(data.std), classes=data.classes, validation=common.Split(*validation))


@torch.no_grad()
def init_weights(net):
    """network3's initial weights, in place, for an nn.Sequential of Conv2d (each followed by its MaxPool2d),
    Linear and weightless layers. A weight gets N(0, 1/n_out): for a Linear layer n_out is its outputs; for a
    conv-pool layer it is filters x kernel area / pool area, the inputs one pooled output unit is fed from,
    seen from the other side. Biases get N(0, 1); the last layer (the softmax layer) starts at zero."""
    layers = list(net)
    weighted = [i for i, layer in enumerate(layers) if isinstance(layer, (nn.Conv2d, nn.Linear))]
    for i in weighted:
        layer = layers[i]
        if i == weighted[-1]:
            layer.weight.zero_()
            layer.bias.zero_()
            continue
        if isinstance(layer, nn.Conv2d):
            pool = next((p for p in layers[i + 1:] if isinstance(p, nn.MaxPool2d)), None)
            area = (pool.kernel_size ** 2 if isinstance(pool.kernel_size, int) else
                    pool.kernel_size[0] * pool.kernel_size[1]) if pool else 1
            n_out = layer.out_channels * layer.kernel_size[0] * layer.kernel_size[1] / area
        else:
            n_out = layer.out_features
        layer.weight.normal_(0, (1 / n_out) ** 0.5)
        layer.bias.normal_(0, 1)
    return net


class Dropout(nn.Module):
    """network3's dropout: in training each input is kept with probability 1 - p and not scaled; at test
    time every input is multiplied by 1 - p instead. PyTorch's nn.Dropout divides by 1 - p in training and
    does nothing at test time: the same function, had the next layer's weights been scaled by 1 - p, but not
    the same training run, since SGD then moves other weights by other steps. This one is exact."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x * (1 - self.p)
        return x * torch.empty_like(x).bernoulli_(1 - self.p)


def weight_cost(net, lmbda, batches):
    """network3's L2 term: 0.5 * lmbda * (sum of the squared weights, biases left out) / batches, where
    batches is the number of mini-batches in an epoch. Its gradient for a weight w is lmbda / batches * w."""
    return 0.5 * lmbda * sum((w ** 2).sum() for name, w in net.named_parameters() if name.endswith('weight')) / batches


class Accuracy(float):
    """An epoch's test accuracy, as a float, that also holds the validation accuracy of that epoch; it prints
    as `0.9876 (validation 0.9880)`."""

    def __new__(cls, test, validation):
        self = super().__new__(cls, test)
        self.validation = validation
        return self

    def __reduce__(self):  # copy and pickle it whole
        return Accuracy, (float(self), self.validation)

    def __format__(self, spec):
        return f'{float(self):{spec}} (validation {self.validation:{spec}})'


def test_accuracy(model, data):
    """The test accuracy, with the validation accuracy beside it (an Accuracy)."""
    held_out = common.Data(data.name, None, data.validation, data.mean, data.std)  # validation as a test split
    return Accuracy(common.test_accuracy(model, data), common.test_accuracy(model, held_out))


def result_lines(history):
    """After training: the epoch of best validation accuracy, then the result line, that epoch's test
    accuracy."""
    accuracies = history['accuracy']
    best = best_epoch([a.validation for a in accuracies])
    return [f'Best validation accuracy {accuracies[best].validation:.4f} at epoch {best + 1}/{len(accuracies)}',
            f'Test data results: {float(accuracies[best]):.4f}']


def best_epoch(validation):
    """The index of the best validation accuracy; a later epoch wins a tie (network3 compares with >=)."""
    best = 0
    for i, accuracy in enumerate(validation):
        if accuracy >= validation[best]:
            best = i
    return best
