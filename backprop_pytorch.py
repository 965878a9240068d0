"""One step of gradient descent with PyTorch: the network of backprop_manual_calculation.py, by autograd.

    python backprop_pytorch.py
    python backprop_pytorch.py --a0 0.3 --target 0 --w-l1 -1.2 --lr 0.5

The same two sigmoid neurons and cost C = (a_l2 - target)^2, but here loss.backward() finds the
gradients and torch.optim.SGD takes the step. Everything is float64, like numpy's default, so the
printed lines match those of backprop_manual_calculation.py for the same flags.
"""
import torch
import torch.nn as nn

from backprop_manual_calculation import parse_args, print_values


class Net(nn.Module):
    """a0 → sigmoid neuron → sigmoid neuron: one weight and one bias per layer."""

    def __init__(self):
        super().__init__()
        self.hidden_layer = nn.Linear(1, 1, dtype=torch.float64)
        self.output_layer = nn.Linear(1, 1, dtype=torch.float64)

    def forward(self, a0):
        a_l1 = torch.sigmoid(self.hidden_layer(a0))
        return torch.sigmoid(self.output_layer(a_l1))


def build_net(w_l1, b_l1, w_l2, b_l2):
    net = Net()
    # overwrite the random initial values; no_grad because setting them is not part of the computation
    with torch.no_grad():
        net.hidden_layer.weight.fill_(w_l1)
        net.hidden_layer.bias.fill_(b_l1)
        net.output_layer.weight.fill_(w_l2)
        net.output_layer.bias.fill_(b_l2)
    return net


def cost(a_l2, target):
    # C = (a_l2 − target)²; sum() turns the 1×1 tensor into the scalar that backward() starts from
    return (a_l2 - target).pow(2).sum()


def as_input(a0):
    return torch.tensor([[a0]], dtype=torch.float64)  # a batch of one sample with one feature


def autograd_gradients(a0, w_l1, b_l1, w_l2, b_l2, target):
    """(∂C/∂w_l1, ∂C/∂b_l1, ∂C/∂w_l2, ∂C/∂b_l2) as autograd finds them, as float64 numbers."""
    net = build_net(w_l1, b_l1, w_l2, b_l2)
    cost(net(as_input(a0)), target).backward()
    return (net.hidden_layer.weight.grad.item(), net.hidden_layer.bias.grad.item(),
            net.output_layer.weight.grad.item(), net.output_layer.bias.grad.item())


def main(argv=None):
    args = parse_args(argv, description=__doc__.splitlines()[0])
    net = build_net(args.w_l1, args.b_l1, args.w_l2, args.b_l2)
    print(f'network topology: {net}')
    print_values(w_l1=net.hidden_layer.weight.item(), b_l1=net.hidden_layer.bias.item(),
                 w_l2=net.output_layer.weight.item(), b_l2=net.output_layer.bias.item())

    a0 = as_input(args.a0)
    a_l2 = net(a0)
    print_values(a_l2=a_l2.item())

    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    optimizer.zero_grad()  # a habit from training loops; the fresh net has no gradients yet
    cost(a_l2, args.target).backward()  # fills .grad of every parameter with ∂C/∂parameter
    optimizer.step()  # v ← v − lr·∂C/∂v for every parameter v
    print_values(updated_w_l1=net.hidden_layer.weight.item(), updated_b_l1=net.hidden_layer.bias.item(),
                 updated_w_l2=net.output_layer.weight.item(), updated_b_l2=net.output_layer.bias.item())

    with torch.no_grad():  # only looking at the new output, no gradients wanted
        print_values(updated_a_l2=net(a0).item())


if __name__ == '__main__':
    main()
