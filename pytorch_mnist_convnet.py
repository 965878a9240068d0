"""The convolutional networks of Nielsen's "Neural Networks and Deep Learning", chapter 6, on MNIST.

Cross-entropy on raw logits, plain SGD with weight decay, batch size 10. The published recipes:

    python pytorch_mnist_convnet.py                                                    # 0.9891
    python pytorch_mnist_convnet.py --net 2conv                                        # 0.9913
    python pytorch_mnist_convnet.py --net relu --lr 0.03 --wd 0.00005                  # 0.993
    python pytorch_mnist_convnet.py --net relu --lr 0.03 --wd 0.00005 --extend_data    # 0.9943
    python pytorch_mnist_convnet.py --net final --epochs 40 --lr 0.005 --extend_data   # 0.9964

Also `--net lenet`, the PyTorch tutorial's LeNet, for which the 28x28 images are padded to 32x32.
Try any of them quickly with `--epochs 1 --limit 1000`; `--help` lists every flag.
"""
import torch.nn as nn

import common

# Each conv layer is followed by 2x2 max-pooling, then the activation: pooling first is the same
# function (max-pool commutes with a rising activation) on 4x fewer values.


def simple():
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Sigmoid(),     # 20 x 12 x 12
        nn.Flatten(), nn.Linear(20 * 12 * 12, 100), nn.Sigmoid(),
        nn.Linear(100, 10))


def two_conv(activation=nn.Sigmoid):
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), activation(),     # 20 x 12 x 12
        nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), activation(),    # 40 x 4 x 4
        nn.Flatten(), nn.Linear(40 * 4 * 4, 100), activation(),
        nn.Linear(100, 10))


def relu():
    return two_conv(nn.ReLU)


def final():
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.5),
        nn.Linear(40 * 4 * 4, 1000), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(1000, 1000), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(1000, 10))


def lenet():
    """The PyTorch tutorial's LeNet: 32 x 32 input, so the images get a 2-pixel black border."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2),          # 6 x 15 x 15
        nn.Conv2d(6, 16, 3), nn.ReLU(), nn.MaxPool2d(2),         # 16 x 6 x 6
        nn.Flatten(), nn.Linear(16 * 6 * 6, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


NETS = {'simple': simple, '2conv': two_conv, 'relu': relu, 'final': final, 'lenet': lenet}
RECIPES = {net: dict(epochs=60, lr=0.1, wd=0.0) for net in NETS}
PADDING = {'lenet': 2}


def main(argv=None):
    args = common.parse_args(common.make_parser(__doc__, NETS, RECIPES), argv)
    return common.run(args, NETS[args.net], pad=PADDING.get(args.net, 0))


if __name__ == '__main__':
    common.main_guard(main)
