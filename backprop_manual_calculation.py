"""One step of gradient descent by hand: the chain rule on the smallest network, with numpy only.

    python backprop_manual_calculation.py
    python backprop_manual_calculation.py --a0 0.3 --target 0 --w-l1 -1.2 --lr 0.5

The network is a chain of two sigmoid neurons, one weight and one bias each:

    a0 --(w_l1, b_l1)--> a_l1 --(w_l2, b_l2)--> a_l2,    cost C = (a_l2 - target)^2

Every number is a plain float, so each line below can be checked with a pocket calculator.
backprop_pytorch.py does the same step with autograd; with the same flags both print the same lines.
"""
import argparse
import math

import numpy as np


def finite_float(text):
    """An argparse type: nan or inf would only turn every printed number into nan."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'must be a finite number, got {text}')
    return value


def positive_float(text):
    """An argparse type for the step size: 0 or a negative step would not descend."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'must be a finite number above 0, got {text}')
    return value


def parse_args(argv=None, description=None):
    """The flags of both backprop scripts, so they always take the same settings."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--a0', type=finite_float, default=0.8, help='the input (default: %(default)s)')
    parser.add_argument('--target', type=finite_float, default=1.0,
                        help='the wanted output (default: %(default)s)')
    parser.add_argument('--w-l1', type=finite_float, default=1.58,
                        help='weight of the hidden neuron (default: %(default)s)')
    parser.add_argument('--b-l1', type=finite_float, default=-0.14,
                        help='bias of the hidden neuron (default: %(default)s)')
    parser.add_argument('--w-l2', type=finite_float, default=2.45,
                        help='weight of the output neuron (default: %(default)s)')
    parser.add_argument('--b-l2', type=finite_float, default=-0.11,
                        help='bias of the output neuron (default: %(default)s)')
    parser.add_argument('--lr', type=positive_float, default=0.1,
                        help='step size of gradient descent (default: %(default)s)')
    return parser.parse_args(argv)


def print_values(**values):
    """One `name = value` line each, rounded to 4 places, the same format in both scripts."""
    for name, value in values.items():
        print(f'{name} = {round(float(value), 4)}')


def sigmoid(z):
    # exp(-z) overflows to inf for very negative z; 1 / (1 + inf) = 0 is then the right answer
    with np.errstate(over='ignore'):
        return 1 / (1 + np.exp(-z))


def sigmoid_prime(z):
    # σ'(z) = σ(z)·(1 − σ(z))
    s = sigmoid(z)
    return s * (1 - s)


def forward(a0, w_l1, b_l1, w_l2, b_l2):
    """The forward pass; the weighted inputs z are kept because the backward pass needs σ'(z)."""
    z_l1 = w_l1 * a0 + b_l1
    a_l1 = sigmoid(z_l1)
    z_l2 = w_l2 * a_l1 + b_l2
    a_l2 = sigmoid(z_l2)
    return z_l1, a_l1, z_l2, a_l2


def gradients(a0, w_l1, b_l1, w_l2, b_l2, target):
    """The four partial derivatives (∂C/∂w_l1, ∂C/∂b_l1, ∂C/∂w_l2, ∂C/∂b_l2), in float64."""
    a0, w_l1, b_l1, w_l2, b_l2, target = np.float64([a0, w_l1, b_l1, w_l2, b_l2, target])
    z_l1, a_l1, z_l2, a_l2 = forward(a0, w_l1, b_l1, w_l2, b_l2)

    # output neuron. C = (a_l2 − target)²  →  ∂C/∂a_l2 = 2·(a_l2 − target)
    dC_da_l2 = 2 * (a_l2 - target)
    # a_l2 = σ(z_l2) and z_l2 = w_l2·a_l1 + b_l2 (∂z_l2/∂b_l2 = 1)  →  ∂C/∂b_l2 = σ'(z_l2)·∂C/∂a_l2
    dC_db_l2 = sigmoid_prime(z_l2) * dC_da_l2
    # ∂z_l2/∂w_l2 = a_l1  →  ∂C/∂w_l2 = a_l1·∂C/∂b_l2
    dC_dw_l2 = a_l1 * dC_db_l2
    # ∂z_l2/∂a_l1 = w_l2  →  ∂C/∂a_l1 = w_l2·∂C/∂b_l2: the error handed back to the hidden neuron
    dC_da_l1 = w_l2 * dC_db_l2

    # hidden neuron: the same three steps, one layer down
    dC_db_l1 = sigmoid_prime(z_l1) * dC_da_l1  # ∂C/∂b_l1 = σ'(z_l1)·∂C/∂a_l1
    dC_dw_l1 = a0 * dC_db_l1                   # ∂C/∂w_l1 = a0·∂C/∂b_l1
    # (∂C/∂a0 = w_l1·∂C/∂b_l1 is not needed: the input is not learned)

    return float(dC_dw_l1), float(dC_db_l1), float(dC_dw_l2), float(dC_db_l2)


def main(argv=None):
    args = parse_args(argv, description=__doc__.splitlines()[0])
    w_l1, b_l1, w_l2, b_l2 = args.w_l1, args.b_l1, args.w_l2, args.b_l2
    print_values(w_l1=w_l1, b_l1=b_l1, w_l2=w_l2, b_l2=b_l2)
    print_values(a_l2=forward(args.a0, w_l1, b_l1, w_l2, b_l2)[-1])

    dC_dw_l1, dC_db_l1, dC_dw_l2, dC_db_l2 = gradients(args.a0, w_l1, b_l1, w_l2, b_l2, args.target)
    # gradient descent: step every parameter against its own slope, v ← v − lr·∂C/∂v
    w_l1 -= args.lr * dC_dw_l1
    b_l1 -= args.lr * dC_db_l1
    w_l2 -= args.lr * dC_dw_l2
    b_l2 -= args.lr * dC_db_l2
    print_values(updated_w_l1=w_l1, updated_b_l1=b_l1, updated_w_l2=w_l2, updated_b_l2=b_l2)
    # the same input once more: the output has moved toward the target
    print_values(updated_a_l2=forward(args.a0, w_l1, b_l1, w_l2, b_l2)[-1])


if __name__ == '__main__':
    main()
