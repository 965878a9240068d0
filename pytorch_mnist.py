"""A dense network on MNIST: Nielsen's "Neural Networks and Deep Learning", chapter 1.

    python pytorch_mnist.py                  # 784-100-10 sigmoid, quadratic cost, lr 3.0, 30 epochs: 0.9758
    python pytorch_mnist.py --net softmax    # 784-256-10, softmax output with cross-entropy

`--net softmax` is the network of the "Neural networks with PyTorch" notebook. Its output layer gives raw
scores (logits); the softmax is applied inside the cross-entropy, which is how PyTorch wants it.
Try either quickly with `--epochs 1 --limit 1000`; `--help` lists every flag.
"""
import torch.nn as nn
import torch.nn.functional as F

import common


def nielsen():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 100), nn.Sigmoid(), nn.Linear(100, 10), nn.Sigmoid())


def softmax():
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.Sigmoid(), nn.Linear(256, 10))


def quadratic_cost(output, label):
    """Mean squared error between the 10 outputs and the one-hot target (1 for the true digit)."""
    return F.mse_loss(output, F.one_hot(label, 10).to(output.dtype))


NETS = {'nielsen': nielsen, 'softmax': softmax}
RECIPES = {'nielsen': dict(epochs=30, lr=3.0, wd=0.0),
           'softmax': dict(epochs=30, lr=0.1, wd=0.0)}
LOSSES = {'nielsen': quadratic_cost, 'softmax': F.cross_entropy}


def main(argv=None):
    args = common.parse_args(common.make_parser(__doc__, NETS, RECIPES), argv)
    return common.run(args, NETS[args.net], LOSSES[args.net])


if __name__ == '__main__':
    common.main_guard(main)
