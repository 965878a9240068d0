"""Pictures: --plot's curves, misclassified images and first-layer filters, through matplotlib (imported only
when a picture is drawn)."""
import math
import os

import torch

import common
from plumbing import saving


def save_plot(path, history, model, data):
    """One picture: loss and test accuracy per epoch (left), up to 25 misclassified test images (right), in
    the format the extension names. Several nets trained at once (stacked.StackedNets): each net's curve and
    their vote's, and the images the vote gets wrong. With --book, the validation accuracy too. Returns
    saving.save_with_fallback's failure lines."""
    import matplotlib
    matplotlib.use('Agg')  # no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    several = common.nets_in(model) > 1
    predicted = model.vote(data) if several else common.predict(model, data)
    wrong = (predicted != data.test.labels).nonzero().flatten()[:25].cpu()
    images = data.test.images[wrong].cpu().permute(0, 2, 3, 1).numpy()  # N x H x W x C, as matplotlib wants
    predicted, labels = predicted[wrong].tolist(), data.test.labels[wrong].tolist()

    filters = first_filters(model)
    fig = plt.figure(figsize=(13 if filters is None else 17, 6), layout='constrained')
    left, right, *rest = fig.subfigures(1, 2 if filters is None else 3,
                                        width_ratios=(1, 1) if filters is None else (1, 1, 0.55))
    if filters is not None:
        draw_filters(rest[0], filters, f'first layer\'s {len(filters)} filters'
                                       + (f' (seed {model.seeds[0]})' if several else ''))
    ax = left.subplots()
    epochs = range(1, len(history['accuracy']) + 1)
    if several:
        for seed, accuracies in zip(history['seeds'], history['per_net']):
            ax.plot(epochs, accuracies, '-', linewidth=1, alpha=0.6, label=f'seed {seed}')
        ax.plot(epochs, history['vote'], 'o-', color='black', label='majority vote')
        ax.legend(loc='lower right', fontsize=8)
    else:
        ax.plot(epochs, history['accuracy'], 'o-', color='tab:blue', label='test accuracy')
    if 'validation' in history:  # --book: the held-out images' accuracy, which picks the reported epoch
        ax.plot(epochs, history['validation']['accuracy'], 'D:', color='tab:green',
                label='validation accuracy' + (' (mean of the nets)' if several else ''))
        ax.legend(loc='lower right', fontsize=8)
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel('test accuracy', color='tab:blue')
    if history['loss']:
        loss_ax = ax.twinx()
        loss_ax.plot(epochs, history['loss'], 's--', color='tab:red', label='training loss')
        loss_ax.set_ylabel('mean training loss', color='tab:red')
    if several:
        ax.set_title(f'{data.name}: {len(history["seeds"])} nets, mean test accuracy {history["accuracy"][-1]:.4f}, '
                     f'vote {history["vote"][-1]:.4f}')
    else:
        ax.set_title(f'{data.name}: test accuracy {history["accuracy"][-1]:.4f}')
    right.suptitle(f'misclassified test images{" (by the vote)" if several else ""} (predicted / true), '
                   f'{len(wrong)} shown')
    for i, cell in enumerate(right.subplots(5, 5).flatten()):
        cell.axis('off')
        if i < len(wrong):
            if images.shape[-1] == 1:
                cell.imshow(images[i].squeeze(-1), cmap='gray')
            else:
                cell.imshow(images[i])
            cell.set_title(f'{data.classes[predicted[i]]} / {data.classes[labels[i]]}', fontsize=8)
    return save_figure(fig, path, 'plot')


def save_figure(fig, path, what):
    """A matplotlib figure saved at `path` in the format its extension names (through saving.save_with_fallback),
    then closed. Returns the failure lines."""
    import matplotlib.pyplot as plt
    picture_format = os.path.splitext(path)[1].lower().lstrip('.')
    failures = saving.save_with_fallback(path, what, lambda f: fig.savefig(f, format=picture_format, dpi=80))
    plt.close(fig)
    return failures


def first_filters(model):
    """The first convolution's learned filters, O x C x kh x kw on the CPU (the first net's, when the model
    holds several), or None for a net without convolutions."""
    first_net = model.nets()[0] if common.nets_in(model) > 1 else model
    for module in first_net.modules():
        weight = getattr(module, 'weight', None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 4:
            return weight.detach().float().cpu()
    return None


def draw_filters(subfigure, filters, title):
    """The filters as a grid of small pictures. Grey filters share one scale, white the largest weight, so
    that they can be compared; colour filters are each stretched to the full range."""
    count, channels = filters.shape[:2]
    columns = math.ceil(math.sqrt(count))
    scale = filters.abs().max().item() or 1
    for i, cell in enumerate(subfigure.subplots(math.ceil(count / columns), columns, squeeze=False).flatten()):
        cell.axis('off')
        if i >= count:
            continue
        if channels == 3:
            f = filters[i].permute(1, 2, 0)
            cell.imshow(((f - f.min()) / ((f.max() - f.min()) or 1)).numpy())
        else:
            cell.imshow(filters[i, 0].numpy(), cmap='gray', vmin=-scale, vmax=scale)
    subfigure.suptitle(title)
