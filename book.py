"""Nielsen's own protocol (`--book`): how the book's code trained and reported its nets, in the pieces where
it differs from the scripts' default. Read them beside chapters 1 and 6 and src/network.py, src/network3.py
and src/expand_mnist.py of mnielsen/neural-networks-and-deep-learning.

What differs, and why the book's published column differs from the original PyTorch version's:
- Data (load_data): the first 50,000 MNIST training images train and the last 10,000 validate
  (mnist.pkl.gz's split); the pixels are the raw values in [0, 1], with no mean/std normalization.
  network3 walks the training set in the same order every epoch (it never reshuffles) and drops a last batch
  that is not full; network.py (chapter 1) shuffles every epoch.
- Initial weights (network3_net, network_py_net): network3 draws N(0, 1/n_out) for conv and fully connected
  weights and N(0, 1) for their biases, and starts the softmax layer at zero; network.py draws N(0, 1) for
  everything.
- Cost (cost): network3 minimizes the log-likelihood of the softmax plus 0.5 * lambda * (sum of every
  squared weight, biases left out) / (mini-batches per epoch); network.py the quadratic cost 1/2 |y - a|^2,
  averaged over the batch.
- Dropout scales at test time, not in training (Dropout).
- Reporting (best_epoch): the validation accuracy after each epoch picks the epoch, and the published
  figure is the test accuracy at the best validation epoch, a later epoch winning a tie. The default
  protocol holds nothing out and reports the last epoch's test accuracy.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import common

# The book's runs, at mini-batch size 10: network3.py's in chapter 6 (`final` and `relu --extend_data` on
# the expanded training set), network.py's [784, 100, 10] in chapter 1 (96.59 % on MNIST).
RECIPES = {
    'nielsen': dict(epochs=30, lr=3.0, lmbda=0.0),
    'simple': dict(epochs=60, lr=0.1, lmbda=0.0),
    '2conv': dict(epochs=60, lr=0.1, lmbda=0.0),
    'relu': dict(epochs=60, lr=0.03, lmbda=0.1),
    'final': dict(epochs=40, lr=0.03, lmbda=0.0),
}
VALIDATION = 10_000  # of MNIST's 60,000 training images: the last 10,000
RESHUFFLED = {'nielsen'}  # network.py reshuffles the training images every epoch; network3 never does


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

    def test_accuracy(self, model):
        """The test accuracy, with the validation accuracy beside it (a common.Accuracy): common.test_accuracy
        asks data that has a validation split for this."""
        test = common.Data(self.name, None, self.test, self.mean, self.std)
        held_out = common.Data(self.name, None, self.validation, self.mean, self.std)  # validation as a test split
        accuracy = common.test_accuracy(model, test)
        accuracy = accuracy if isinstance(accuracy, common.Accuracy) else common.Accuracy(accuracy)
        accuracy.validation = common.test_accuracy(model, held_out)
        return accuracy


def load_data(name, data_dir, device, limit=None, extend=False, pad=0, seed=1, fixed_order=True):
    """common.load_data as the book's code had its data: the training split's last images held out to
    validate (split), the rest shifted to 5x (extend: expand_mnist.py shifts the 50,000 only, then shuffles
    the 250,000 once, with its own generator here), and raw pixels: x / 255, no mean or std.
    fixed_order: network3's batches, the same order every epoch; False: network.py's, reshuffled each epoch."""
    data = common.load_data(name, data_dir, device, limit=limit, pad=pad)
    (images, labels), validation = split(data.train.images, data.train.labels)
    if extend:
        images, labels = common.with_shifted_copies(images), labels.repeat(5)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).to(device)
        images, labels = images[order], labels[order]
    return Data(name, common.Split(images, labels), data.test, torch.zeros_like(data.mean),
                torch.ones_like(data.std), classes=data.classes, fixed_order=fixed_order,
                validation=common.Split(*validation))


def as_in_the_book(net, make_net):
    """make_net as the book's code builds it: network.py's (network_py_net) for chapter 1's net, else network3's."""
    return network_py_net(make_net) if net == 'nielsen' else network3_net(make_net)


def network3_net(make_net):
    """make_net, built as network3 builds its layers: its dropout is the book's (Dropout), and its initial
    weights are network3's (init_weights)."""
    def make():
        net = make_net()
        for i, layer in enumerate(net):
            if isinstance(layer, nn.Dropout):
                net[i] = Dropout(layer.p)
        return init_weights(net)
    return make


def network_py_net(make_net):
    """make_net, with network.py's initial weights: N(0, 1) for every weight and bias (chapter 1)."""
    def make():
        net = make_net()
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.normal_(0, 1)
        return net
    return make


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


class Dropout(nn.Dropout):
    """network3's dropout: in training each input is kept with probability 1 - p and not scaled; at test
    time every input is multiplied by 1 - p instead. PyTorch's nn.Dropout divides by 1 - p in training and
    does nothing at test time: the same function, had the next layer's weights been scaled by 1 - p, but not
    the same training run, since SGD then moves other weights by other steps. This one is exact."""

    scaled_at_test = True  # (--seeds stacks it as such)

    def forward(self, x):
        if not self.training:
            return x * (1 - self.p)
        return x * torch.empty_like(x).bernoulli_(1 - self.p)


def weight_cost(net, lmbda, batches):
    """network3's L2 term: 0.5 * lmbda * (sum of the squared weights, biases left out) / batches, where
    batches is the number of mini-batches in an epoch. Its gradient for a weight w is lmbda / batches * w.
    (Several nets stacked as one, --seeds: their mean, which plumbing/stacked.py's loss turns into each net's
    own gradient.)"""
    squares = sum((w ** 2).sum() for name, w in net.named_parameters() if name.endswith('weight'))
    return 0.5 * lmbda * squares / batches / common.nets_in(net)


def half_squared_error(outputs, labels):
    """network.py's quadratic cost: 1/2 |y - a|^2 for the one-hot target y, averaged over the batch."""
    return 0.5 * (outputs - F.one_hot(labels, outputs.shape[-1]).to(outputs.dtype)).pow(2).sum(-1).mean()


COSTS = {'nielsen': half_squared_error}  # the cost of the book's code where it is not the script's own


def cost(loss_fn, net, lmbda, batches):
    """The cost network3 minimizes: loss_fn plus weight_cost."""
    if not lmbda:
        return loss_fn

    def loss_plus_weight_cost(outputs, labels):
        return loss_fn(outputs, labels) + weight_cost(net, lmbda, batches)
    loss_plus_weight_cost.for_nets = lambda nets: cost(loss_fn, nets, lmbda, batches)  # (--seeds: each group's)
    return loss_plus_weight_cost


def best_epoch(validation):
    """The index of the best validation accuracy; a later epoch wins a tie (network3 compares with >=)."""
    best = 0
    for i, accuracy in enumerate(validation):
        if accuracy >= validation[best]:
            best = i
    return best
