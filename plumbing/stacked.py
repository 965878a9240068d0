"""Several nets trained at the same time, as one computation: `--seeds 1 2 3 4 5` on every training script.

    python pytorch_mnist_convnet.py --net relu --seeds 1 2 3                      # the spread of three runs
    python pytorch_mnist_convnet.py --net final --extend_data --seeds 1 2 3 4 5   # Nielsen's five nets voting

Why. One run's accuracy moves with its seed, so one run cannot tell a better recipe from a lucky one; a
few seeds show the spread. And chapter 6 of Nielsen's book ends on five `final` nets voting: 0.9967 on MNIST.

What. Net i is the net that `--seed Si` trains: built right after torch.manual_seed(Si), trained on the
batches of its own seeded order, with the script's own train() and SGD step. On the CPU it also draws the
dropout masks that run draws. On CUDA and MPS each net gets dropout masks of its own, but not that run's:
there the single run draws them with the device's generator, in an order the stacked nets cannot repeat.

Where it plugs in. A script's main() builds the nets with seeded() and wraps its loss with summed_over_nets();
its train() then runs as for one net:
- common.Batches, given the seeds, draws each net's own order: batch i holds batch i of every order
  (images B x K x C x H x W, labels B x K);
- the loss's gradient is the sum of each net's own mean loss, so that each net's weights get exactly their
  own; its value is the nets' mean, the train loss the loop prints;
- common.test_accuracy asks the nets for theirs: a common.Accuracy, the nets' mean that also holds each
  net's accuracy and their vote's, and prints as `0.9812 (mean of 3 nets; min 0.9800, max 0.9830)`.
SGD updates every number by itself, so one optimizer over the stacked weights is K separate optimizers,
and --resume, --save-model and stops work as for one net.

How. At batch size 10 one net keeps a machine mostly idle, waiting on many tiny operations. StackedNets puts
the K nets side by side in one module, so that every operation does the work of K nets:
- a convolution runs once, with groups=K: the nets' channels lie side by side, and each net's filters see
  only its own channels (B x K*C x H x W);
- a Linear layer is one batched matrix product over the K nets (torch.baddbmm; K x B x features);
- pooling and activations act on each number alone, so one call serves all nets.
On a CPU with C cores, the nets are split into min(K, C) such stacks (NetGroups), and each trains in a thread of
its own with one thread per operation, side by side with the others (speed.SpreadStep): the script's step is
called once per group, each with its slice of the batch.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from plumbing import speed, stops

SAME_FOR_EVERY_NET = (nn.Sigmoid, nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Identity,
                      nn.MaxPool2d, nn.AvgPool2d)  # no weights: one call acts on every net's numbers alike


def seeded(make_net, seeds, device, groups=1):
    """The nets that `--seed S` builds, one per seed, as one StackedNets, or as `groups` of them side by side
    (NetGroups, which speed.SpreadStep trains in threads of their own). On the CPU each net draws its dropout
    masks from a generator in the state that run's dropout starts from."""
    nets, generators = [], []
    for seed in seeds:
        torch.manual_seed(seed)  # as --seed S: its initial weights, then the dropout masks it will draw
        nets.append(make_net())
        generators.append(torch.Generator().set_state(torch.get_rng_state()))
    cpu = device.type == 'cpu'
    if groups == 1:
        return StackedNets(nets, seeds, generators if cpu else None)
    return NetGroups([StackedNets(nets[a:b], seeds[a:b], generators[a:b] if cpu else None)
                      for a, b in speed.spans(speed.group_sizes(len(seeds), groups))])


def summed_over_nets(loss_fn):
    """The loss for sgd_step: loss(outputs K x B x classes, labels B x K). Its gradient is that of the sum of
    each net's own loss_fn (a mean over its batch), so that each net's weights get exactly their own; its
    value is the nets' mean, which the loop adds up as the train loss."""
    def loss(outputs, labels):
        nets = len(outputs)
        mean = loss_fn(outputs.flatten(0, 1), labels.t().flatten())  # over every net's every image
        return GradientTimes.apply(mean, nets)
    loss.for_nets = lambda nets: summed_over_nets(speed.loss_of(loss_fn, nets))  # each group's (speed.SpreadStep)
    return loss


class GradientTimes(torch.autograd.Function):
    """x itself going forward; its gradient times `factor` going back (the gradient of factor * x)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def vote_scores(outputs):
    """Scores whose largest is the class the K nets vote for: outputs K x N x classes -> N x classes.

    Each net votes for its highest output; the class with most votes wins. A tie goes to the tied class
    with the highest softmax probability averaged over the nets (and, were those equal too, the lowest).
    """
    votes = F.one_hot(outputs.argmax(2), outputs.shape[2]).sum(0)           # N x classes
    tied = votes == votes.max(1, keepdim=True).values
    confidence = outputs.softmax(2).mean(0)
    return torch.where(tied, confidence, -1.0)


def majority_vote(outputs):
    """The class each image gets from K nets voting: outputs K x N x classes -> N (vote_scores says how)."""
    return vote_scores(outputs).argmax(1)


class SeveralNets(nn.Module):
    """What StackedNets and NetGroups share: K nets' outputs (each_net), the vote, the test pass, and the nets
    one by one again (nets), from each_net, state_dicts and `template` (net 0 as it was built)."""

    def forward(self, images):
        """Images B x K x C x H x W, each net its own (training): each net's outputs, K x B x classes. Images
        N x C x H x W, the same for every net: scores whose largest is the nets' vote (vote_scores), so that
        common.predict gives the vote's classes."""
        if images.dim() == 4:
            return vote_scores(self.each_net(images))
        return self.own_images(images)

    def nets(self):
        """The nets as nn.Sequential modules again, each with its weights, on this module's device."""
        device = next(self.parameters()).device
        nets = []
        for state_dict in self.state_dicts():
            net = copy.deepcopy(self.template[0])
            net.load_state_dict(state_dict)
            nets.append(net.to(device))
        return nets

    @torch.no_grad()
    def test_outputs(self, data):
        """Every net's outputs for every test image, K x N x classes, in eval mode (no dropout)."""
        batch_size = max(500 // len(self.seeds), 1)  # 500 images' worth of work at a time, as common.predict
        with common.evaluating(self):
            return torch.cat([self.each_net(data.normalize(data.test.images[i:i + batch_size]))
                              for i in range(0, len(data.test), batch_size)], dim=1)

    def test_accuracy(self, data):
        """Each net's test accuracy and their vote's, as a common.Accuracy (common.test_accuracy asks for it)."""
        outputs = self.test_outputs(data)
        labels = data.test.labels
        per_net = (outputs.argmax(2) == labels).float().mean(1).tolist()
        vote = (majority_vote(outputs) == labels).float().mean().item()
        return common.Accuracy(sum(per_net) / len(per_net), list(self.seeds), per_net, vote)

    def vote(self, data):
        """The vote's class for every test image."""
        return majority_vote(self.test_outputs(data))


class StackedNets(SeveralNets):
    """K nets of one nn.Sequential architecture as one module. Each layer of the nets becomes one layer that
    computes all K (see this file's docstring); their weights are copied in. What it takes and gives:
    SeveralNets.forward. `generators`: one per net, for its dropout masks (CPU); None: the device's generator
    draws them.
    """

    def __init__(self, nets, seeds, generators=None):
        super().__init__()
        if not all(isinstance(net, nn.Sequential) for net in nets):
            raise stops.UserError(f'--seeds stacks nn.Sequential nets layer by layer; this net is a '
                                  f'{type(nets[0]).__name__}: train one seed at a time with --seed')
        self.seeds, self.generators = list(seeds), generators
        self.layers = nn.Sequential()
        seen = set()  # the layers before the first Conv2d and Flatten see the images themselves
        for i, layers in enumerate(zip(*nets)):
            self.layers.append(stacked_layer(i, layers, seen, generators))
            seen.add(type(layers[0]))
        self.template = [copy.deepcopy(nets[0])]  # in a list: not a part of this module

    def own_images(self, images):
        return self.layers(images)

    def each_net(self, images):
        """Every net's outputs for the same images N x C x H x W: K x N x classes."""
        return self.layers(images)

    def state_dicts(self):
        """Each net's weights, as its own nn.Sequential names and shapes them (on the CPU)."""
        return [{f'{i}.{name}': tensor.detach().cpu().clone()
                 for i, layer in enumerate(self.layers) if hasattr(layer, 'weights_of')
                 for name, tensor in layer.weights_of(k).items()}
                for k in range(len(self.seeds))]

    @torch.no_grad()
    def load_nets(self, state_dicts):
        """Put each net's weights (state_dicts() gives them) back in; weights that do not fit the net are the
        RuntimeError of nn.Module.load_state_dict."""
        if len(state_dicts) != len(self.seeds):
            raise RuntimeError(f'{len(state_dicts)} nets saved, {len(self.seeds)} here')
        net = self.template[0]
        for k, state_dict in enumerate(state_dicts):
            net.load_state_dict(state_dict)
            weights = net.state_dict()
            for i, layer in enumerate(self.layers):
                for name, tensor in (layer.weights_of(k) if hasattr(layer, 'weights_of') else {}).items():
                    tensor.copy_(weights[f'{i}.{name}'])


class NetGroups(SeveralNets):
    """K nets as groups of StackedNets side by side, so that each group can train in a thread of its own
    (speed.SpreadStep): on a CPU with C cores, min(K, C) groups. Seen from outside it is one StackedNets of
    all the nets: the same seeds, outputs, vote, weights per net, and the dropout generators in net order."""

    def __init__(self, groups):
        super().__init__()
        self.groups = nn.ModuleList(groups)
        self.spans = speed.spans([len(group.seeds) for group in groups])  # each group's nets
        self.seeds = [seed for group in groups for seed in group.seeds]
        self.generators = None if groups[0].generators is None else [g for group in groups for g in group.generators]
        self.template = groups[0].template

    def own_images(self, images):
        return torch.cat([group(images[:, a:b]) for group, (a, b) in zip(self.groups, self.spans)])

    def each_net(self, images):
        return torch.cat([group.each_net(images) for group in self.groups])

    def state_dicts(self):
        return [state_dict for group in self.groups for state_dict in group.state_dicts()]

    def load_nets(self, state_dicts):
        if len(state_dicts) != len(self.seeds):
            raise RuntimeError(f'{len(state_dicts)} nets saved, {len(self.seeds)} here')
        for group, (a, b) in zip(self.groups, self.spans):
            group.load_nets(state_dicts[a:b])


def stacked_layer(i, layers, seen, generators):
    """Layer i of each of the K nets, as one layer that computes all of them. `seen`: the layer types before it."""
    first = layers[0]
    flat = nn.Flatten in seen
    if isinstance(first, nn.Conv2d) and not flat:
        return StackedConv2d(layers, on_images=nn.Conv2d not in seen)
    if isinstance(first, nn.Linear) and flat:
        return StackedLinear(layers)
    if isinstance(first, nn.Flatten) and (first.start_dim, first.end_dim) == (1, -1) and not flat:
        return StackedFlatten(len(layers), on_images=nn.Conv2d not in seen)
    if isinstance(first, nn.Dropout) and flat:
        return StackedDropout(first.p, generators, scaled_at_test=getattr(first, 'scaled_at_test', False))
    if isinstance(first, SAME_FOR_EVERY_NET):
        return copy.deepcopy(first)
    raise stops.UserError(f'--seeds cannot stack layer {i} ({first}): it knows Conv2d before Flatten, Linear and '
                          f'Dropout after it, pooling and activations; train one seed at a time with --seed')


class StackedConv2d(nn.Module):
    """K Conv2d layers as one convolution with groups=K: net k's filters see only net k's channels, which lie
    side by side (B x K*C x H x W). The first convolution takes the images: each net's own, B x K x C x H x W,
    or the same for all, N x C x H x W (then every filter sees them, and no groups are needed)."""

    def __init__(self, convs, on_images):
        super().__init__()
        first = convs[0]
        if first.groups != 1 or first.padding_mode != 'zeros' or first.bias is None:
            raise stops.UserError(f'--seeds cannot stack {first}: only plain convolutions with a bias')
        self.nets, self.stride, self.padding, self.dilation = len(convs), first.stride, first.padding, first.dilation
        self.on_images = on_images
        self.weight = nn.Parameter(torch.cat([conv.weight.detach() for conv in convs]))   # K*O x C x kh x kw
        self.bias = nn.Parameter(torch.cat([conv.bias.detach() for conv in convs]))       # K*O

    def forward(self, x):
        if self.on_images and x.dim() == 4:  # the same images for every net
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        if self.on_images:  # each net's own: B x K x C x H x W -> B x K*C x H x W
            x = x.flatten(1, 2).contiguous(memory_format=common.memory_format_for(x.device))
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, groups=self.nets)

    def weights_of(self, k):
        return {'weight': self.weight.chunk(self.nets)[k], 'bias': self.bias.chunk(self.nets)[k]}


class StackedLinear(nn.Module):
    """K Linear layers as one batched matrix product: K x B x I -> K x B x O."""

    def __init__(self, linears):
        super().__init__()
        if linears[0].bias is None:
            raise stops.UserError(f'--seeds cannot stack {linears[0]}: only Linear layers with a bias')
        # K x I x O, so that the gradient torch.baddbmm produces has the weight's own layout (no copy)
        self.weight = nn.Parameter(torch.stack([linear.weight.detach().t() for linear in linears]).contiguous())
        self.bias = nn.Parameter(torch.stack([linear.bias.detach() for linear in linears]).unsqueeze(1))  # K x 1 x O

    def forward(self, x):
        return torch.baddbmm(self.bias, x, self.weight)

    def weights_of(self, k):
        return {'weight': self.weight[k].t(), 'bias': self.bias[k, 0]}


class StackedFlatten(nn.Module):
    """Flatten for K nets, -> K x B x features. Before it a convolution left the nets side by side,
    B x K*C x H x W; or it takes the images: each net's own, B x K x C x H x W, or the same for all."""

    def __init__(self, nets, on_images):
        super().__init__()
        self.nets, self.on_images = nets, on_images

    def forward(self, x):
        if self.on_images and x.dim() == 4:  # the same images for every net
            return x.flatten(1).expand(self.nets, -1, -1).contiguous()
        if self.on_images:
            return x.flatten(2).transpose(0, 1).contiguous()
        batch, _, height, width = x.shape
        # One copy, reading x in its memory order, so that the gradient going back gets x's layout too
        if x.is_contiguous(memory_format=torch.channels_last):   # memory: B x H x W x K x C
            x = x.permute(0, 2, 3, 1).view(batch, height, width, self.nets, -1).permute(3, 0, 4, 1, 2)
        else:                                                    # memory: B x K x C x H x W
            x = x.view(batch, self.nets, -1, height, width).transpose(0, 1)
        return x.reshape(self.nets, batch, -1)


class StackedDropout(nn.Module):
    """Dropout for K x B x F. With one generator per net, net k's mask is drawn from its own generator,
    exactly as F.dropout draws it on the CPU (a Bernoulli sample, divided by 1 - p): the single run's masks.
    scaled_at_test: the book's dropout (book.Dropout), kept inputs unscaled, every input times 1 - p at test."""

    def __init__(self, p, generators=None, scaled_at_test=False):
        super().__init__()
        self.p, self.generators, self.scaled_at_test = p, generators, scaled_at_test

    def forward(self, x):
        if not self.training:
            return x * (1 - self.p) if self.scaled_at_test else x
        if self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        if self.generators is None and not self.scaled_at_test:
            return F.dropout(x, self.p, training=True)
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for mask, generator in zip(keep, self.generators or [None] * len(keep)):
            mask.bernoulli_(1 - self.p, generator=generator)
        return x * (keep if self.scaled_at_test else keep.div_(1 - self.p))
