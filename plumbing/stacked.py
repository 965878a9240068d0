"""Several nets trained at the same time, as one computation: `--seeds 1 2 3 4 5` on every training script.

    python pytorch_mnist_convnet.py --net relu --seeds 1 2 3                      # the spread of three runs
    python pytorch_mnist_convnet.py --net final --extend_data --seeds 1 2 3 4 5   # Nielsen's five nets voting

Why. One run's accuracy moves with its seed, so one run cannot tell a better recipe from a lucky one; a
few seeds show the spread. And chapter 6 of Nielsen's book ends on five `final` nets voting: 0.9967 on MNIST.

What. Net i is the net that `--seed Si` trains: built right after torch.manual_seed(Si), trained on the
batches of its own seeded order (common.Batches), with the same SGD step. On the CPU it also draws the
dropout masks that run draws. On CUDA and MPS each net gets dropout masks of its own, but not that run's:
there the single run draws them with the device's generator, in an order the stacked nets cannot repeat.

How. At batch size 10 one net keeps a machine mostly idle, waiting on many tiny operations. StackedNets puts
the K nets side by side in one module, so that every operation does the work of K nets:
- a convolution runs once, with groups=K: the nets' channels lie side by side, and each net's filters see
  only its own channels (images: B x K*C x H x W);
- a Linear layer is one batched matrix product over the K nets (torch.baddbmm; K x B x features);
- pooling and activations act on each number alone, so one call serves all nets.
The loss is the sum of each net's own mean loss: the gradient of each net's weights is its own. SGD updates
every number by itself, so one optimizer over the stacked weights is K separate optimizers.
"""
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from plumbing import cuda_graph, own_images, saving, stops

SAME_FOR_EVERY_NET = (nn.Sigmoid, nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Identity,
                      nn.MaxPool2d, nn.AvgPool2d)  # no weights: one call acts on every net's numbers alike


def main(args, make_net, sgd_step, loss_fn, pad=0, images=None):
    """A script's main() for several nets: build each as its seed would, train them at once (or load them),
    print each net's test accuracy and their vote, save; classify the --predict images (own_images.read_for)
    by the nets' mean probabilities. Returns (the nets, data, history)."""
    seeds = args.saved_model['seeds'] if args.load_model else args.seeds  # --load-model: the file's nets
    nets, generators = seeded_nets(make_net, seeds)
    if args.load_model:
        for net, state_dict in zip(nets, args.saved_model['state_dicts']):
            saving.load_weights_into(net, state_dict, args)
    model = StackedNets(nets, seeds, generators if args.device.type == 'cpu' else None)
    model = model.to(args.device, memory_format=common.memory_format_for(args.device))
    if args.load_model and args.predict:  # classify your own images: no dataset needed
        own_images.predict(args, model, images)
        return nets, None, None
    data = common.load_data(args.dataset, args.data_dir, args.device, limit=args.limit,
                            extend=args.extend_data, pad=pad)
    if args.load_model:
        accuracies, vote = test_accuracies(model, data)
        history = {'loss': [], 'accuracy': [sum(accuracies) / len(accuracies)], 'seeds': seeds,
                   'per_net': [[a] for a in accuracies], 'vote': [vote]}
    else:
        history = train_seeds(args, model, data, loss_fn, sgd_step)
        print()
    for seed, accuracies in zip(seeds, history['per_net']):
        print(f'Seed {seed}: {accuracies[-1]:.4f}')
    print(f'Ensemble of {len(seeds)} nets (majority vote): {history["vote"][-1]:.4f}')
    print(f'Test data results: {history["accuracy"][-1]:.4f}', flush=True)  # the mean of the nets
    saving.save_outputs(args, model, data, history)  # --save-model (every net), --plot
    if args.predict:
        own_images.predict(args, model, images)
    return [net.to(args.device) for net in model.unstacked(nets)], data, history


def seeded_nets(make_net, seeds):
    """Each net as `--seed S` builds it, and a generator in the state that run's dropout starts from."""
    nets, generators = [], []
    for seed in seeds:
        torch.manual_seed(seed)  # as --seed S: its initial weights, then the dropout masks it will draw
        nets.append(make_net())
        generators.append(torch.Generator().set_state(torch.get_rng_state()))
    return nets, generators


def train_seeds(args, model, data, loss_fn, sgd_step):
    """The script's train(), for the stacked nets: the same epochs, SGD step and printed line, where each
    batch holds batch i of every net's own order. Returns the history: the mean over the nets, each net's
    accuracy (per_net) and the vote's. An edit to train() (another optimizer, a scheduler) belongs here too."""
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.wd)
    step = cuda_graph.graphed_on_cuda(sgd_step, model, summed_over_nets(loss_fn), optimizer)
    batches = StackedBatches(data, args.batch_size, args.seeds, args.epochs, progress=not args.no_progress)
    nets = len(args.seeds)
    history = {'loss': [], 'accuracy': [], 'seeds': list(args.seeds), 'per_net': [[] for _ in range(nets)],
               'vote': []}
    try:
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            model.train()
            loss_sum = 0
            for images, labels in batches:  # K x B x C x H x W, K x B
                loss_sum += step(images, labels) * labels.shape[1]
            mean_loss = loss_sum.item() / (nets * len(data.train))  # the nets' mean training loss
            common.stop_if_diverged(mean_loss, epoch)
            accuracies, vote = test_accuracies(model, data)
            history['loss'].append(mean_loss)
            history['accuracy'].append(sum(accuracies) / nets)
            for net_history, accuracy in zip(history['per_net'], accuracies):
                net_history.append(accuracy)
            history['vote'].append(vote)
            print(f'Test data results: {history["accuracy"][-1]:.4f} (mean of {nets} nets; min {min(accuracies):.4f}, '
                  f'max {max(accuracies):.4f}), Epoch {epoch}/{args.epochs}, train loss {mean_loss:.4f}, '
                  f'{time.perf_counter() - start:.1f} s', flush=True)
    except KeyboardInterrupt as stop:  # as in train(): keep what was learned
        saving.save_outputs(args, model, data, history, stopped=True)
        raise stops.Interrupted(stop, batches, history) from None
    return history


def summed_over_nets(loss_fn):
    """loss(outputs K x B x classes, labels K x B): the sum of each net's own loss_fn (a mean over its batch),
    so that the gradient of each net's weights is exactly its own."""
    def loss(outputs, labels):
        return loss_fn(outputs.flatten(0, 1), labels.flatten()) * len(outputs)
    return loss


def majority_vote(outputs):
    """The class each image gets from K nets voting: outputs K x N x classes -> N.

    Each net votes for its highest output; the class with most votes wins. A tie goes to the tied class
    with the highest softmax probability averaged over the nets (and, were those equal too, the lowest).
    """
    votes = F.one_hot(outputs.argmax(2), outputs.shape[2]).sum(0)           # N x classes
    tied = votes == votes.max(1, keepdim=True).values
    confidence = outputs.softmax(2).mean(0)
    return torch.where(tied, confidence, -1.0).argmax(1)


def test_accuracies(model, data):
    """Each net's test accuracy, and the vote's."""
    outputs = model.test_outputs(data)
    labels = data.test.labels
    accuracies = (outputs.argmax(2) == labels).float().mean(1).tolist()
    return accuracies, (majority_vote(outputs) == labels).float().mean().item()


class StackedBatches(common.Batches):
    """common.Batches for K nets at once: batch i holds batch i of each seed's own order, K x B x C x H x W."""

    def __init__(self, data, batch_size, seeds, epochs, progress=True):
        super().__init__(data, batch_size, seeds[0], epochs, progress)  # its own generator goes unused
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]  # as Batches(seed=S) draws

    def shuffled_order(self):
        train = self.data.train
        return torch.stack([torch.randperm(len(train), generator=g) for g in self.generators]).to(train.labels.device)

    def batch(self, idx):
        nets, size = idx.shape
        images, labels = super().batch(idx.flatten())  # one gather and one normalization for all nets
        return images.view(nets, size, *images.shape[1:]), labels.view(nets, size)


class StackedNets(nn.Module):
    """K nets of one nn.Sequential architecture as one module: images K x B x C x H x W -> K x B x classes.

    Each layer of the nets becomes one layer that computes all K (see this file's docstring). Weights are
    copied in; state_dicts() gives them back in the nets' own layout. `generators`: one per net, for its
    dropout masks (CPU); None: the device's generator draws them.
    """

    def __init__(self, nets, seeds, generators=None):
        super().__init__()
        if not all(isinstance(net, nn.Sequential) for net in nets):
            raise stops.UserError(f'--seeds stacks nn.Sequential nets layer by layer; this net is a '
                                   f'{type(nets[0]).__name__}: train one seed at a time with --seed')
        self.seeds = list(seeds)
        self.layers = nn.Sequential()
        flat = False  # the layers before Flatten see the nets side by side (B x K*C x H x W)
        for i, layers in enumerate(zip(*nets)):
            self.layers.append(stacked_layer(i, layers, flat, generators))
            flat = flat or isinstance(layers[0], nn.Flatten)

    def forward(self, images):
        return self.layers(images)

    def state_dicts(self):
        """Each net's weights, as its own nn.Sequential names and shapes them (on the CPU)."""
        return [{f'{i}.{name}': tensor.detach().cpu().clone()
                 for i, layer in enumerate(self.layers) if hasattr(layer, 'weights_of')
                 for name, tensor in layer.weights_of(k).items()}
                for k in range(len(self.seeds))]

    def unstacked(self, nets):
        """The nets, each holding its trained weights again."""
        for net, state_dict in zip(nets, self.state_dicts()):
            net.load_state_dict(state_dict)
        return nets

    @torch.no_grad()
    def test_outputs(self, data):
        """Every net's outputs for every test image, K x N x classes, in eval mode (no dropout)."""
        was_training = self.training
        self.eval()
        nets, outputs = len(self.seeds), []
        batch_size = max(500 // nets, 1)  # 500 images' worth of work at a time, as common.predict
        for i in range(0, len(data.test), batch_size):
            images = data.normalize(data.test.images[i:i + batch_size])
            outputs.append(self(images.expand(nets, *images.shape)))  # the same images for every net
        self.train(was_training)
        return torch.cat(outputs, dim=1)

    def vote(self, data):
        """The vote's class for every test image."""
        return majority_vote(self.test_outputs(data))


def stacked_layer(i, layers, flat, generators):
    """Layer i of each of the K nets, as one layer that computes all of them."""
    first = layers[0]
    if isinstance(first, nn.Conv2d) and not flat:
        return StackedConv2d(layers)
    if isinstance(first, nn.Linear) and flat:
        return StackedLinear(layers)
    if isinstance(first, nn.Flatten) and (first.start_dim, first.end_dim) == (1, -1):
        return StackedFlatten(len(layers))
    if isinstance(first, nn.Dropout) and flat:
        return StackedDropout(first.p, generators)
    if isinstance(first, SAME_FOR_EVERY_NET):
        return copy.deepcopy(first)
    raise stops.UserError(f'--seeds cannot stack layer {i} ({first}): it knows Conv2d before Flatten, Linear and '
                           f'Dropout after it, pooling and activations; train one seed at a time with --seed')


def side_by_side(images):
    """K x B x C x H x W -> B x K*C x H x W: each image of batch position b, the K nets' side by side."""
    nets, batch, channels, height, width = images.shape
    layout = common.memory_format_for(images.device)
    return images.transpose(0, 1).reshape(batch, nets * channels, height, width).contiguous(memory_format=layout)


class StackedConv2d(nn.Module):
    """K Conv2d layers as one convolution with groups=K: net k's filters see only net k's channels."""

    def __init__(self, convs):
        super().__init__()
        first = convs[0]
        if first.groups != 1 or first.padding_mode != 'zeros' or first.bias is None:
            raise stops.UserError(f'--seeds cannot stack {first}: only plain convolutions with a bias')
        self.nets, self.stride, self.padding, self.dilation = len(convs), first.stride, first.padding, first.dilation
        self.weight = nn.Parameter(torch.cat([conv.weight.detach() for conv in convs]))   # K*O x C x kh x kw
        self.bias = nn.Parameter(torch.cat([conv.bias.detach() for conv in convs]))       # K*O

    def forward(self, x):
        if x.dim() == 5 and x.stride(0) == 0:  # the same images for every net (a test pass): no groups needed
            return F.conv2d(x[0], self.weight, self.bias, self.stride, self.padding, self.dilation)
        if x.dim() == 5:  # the images, K x B x C x H x W
            x = side_by_side(x)
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
    """Flatten for K nets: B x K*C x H x W (side by side), or the images K x B x C x H x W, -> K x B x C*H*W."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nets

    def forward(self, x):
        if x.dim() == 5:
            return x.flatten(2)
        batch, _, height, width = x.shape
        # One copy, reading x in its memory order, so that the gradient going back gets x's layout too
        if x.is_contiguous(memory_format=torch.channels_last):   # memory: B x H x W x K x C
            x = x.permute(0, 2, 3, 1).view(batch, height, width, self.nets, -1).permute(3, 0, 4, 1, 2)
        else:                                                    # memory: B x K x C x H x W
            x = x.view(batch, self.nets, -1, height, width).transpose(0, 1)
        return x.reshape(self.nets, batch, -1)


class StackedDropout(nn.Module):
    """Dropout for K x B x F. With one generator per net, net k's mask is drawn from its own generator,
    exactly as F.dropout draws it on the CPU (a Bernoulli sample, divided by 1 - p): the single run's masks."""

    def __init__(self, p, generators=None):
        super().__init__()
        self.p, self.generators = p, generators

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        if self.generators is None:
            return F.dropout(x, self.p, training=True)
        keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        for mask, generator in zip(keep, self.generators):
            mask.bernoulli_(1 - self.p, generator=generator)
        return x * keep.div_(1 - self.p)
