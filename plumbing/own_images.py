"""Your own images: `--predict IMAGE [IMAGE ...]` classifies photos and drawings with a trained net.

    python pytorch_mnist_convnet.py --load-model model.pt --predict seven.png two.jpg
    seven.png: 7 (97.1 %), 2 (1.8 %), 1 (0.6 %)

A net only knows images like the ones it was trained on, so each image is first made to look like them:
- MNIST, as its digits were made: greyscale; inverted when the background is light (MNIST has light ink on
  black); the ink's bounding box scaled to fit 20 x 20, keeping its aspect ratio; placed in 28 x 28 so
  that the ink's centre of mass is at the centre.
- Fashion-MNIST, as its photos were made: the same, but the box is scaled to fit the whole 28 x 28 and
  centred by its middle.
- CIFAR-10: colour, resized to 32 x 32.
Pillow reads and resizes the images; `--plot` shows each one as the net saw it, beside its probabilities.
"""
import io
import os
import sys
import threading
import warnings

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps, UnidentifiedImageError

import common
from plumbing import flags, pictures, stops

INK = 0.2  # a pixel is ink when it is at least this bright (0..1) against the background, after inversion


def read_images(paths, dataset, pad=0):
    """{path: uint8 C x H x W tensor, prepared for `dataset` (and padded by `pad`), or the reason it could not
    be read}, in the order given."""
    prepared = {}
    for path in paths:
        source, kind = path, flags.non_regular(path)
        if kind == 'a FIFO (named pipe)':  # `--predict /dev/stdin`, `<(curl ...)`: what is written to it, in time
            source = read_pipe(path)
            if source is None:
                prepared[path] = f'a FIFO (named pipe) that nothing wrote an image to within {FIFO_WAIT} s'
                continue
        elif kind:  # (reading a terminal or a device would wait for what never comes)
            prepared[path] = f'{kind}, not an image file'
            continue
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter('always')  # (what Pillow warns of is said below, one line each)
                with Image.open(source) as image:
                    image.load()
                    prepared[path] = prepare(image, dataset, pad)
            for warning in said:
                if issubclass(warning.category, Image.DecompressionBombWarning):
                    print(f'--predict {path}: a very large image ({image.width * image.height / 1e6:.0f} '
                          f'megapixels), read all the same', file=sys.stderr)
                else:
                    print(f'--predict {path}: {stops.first_line(warning.message)}', file=sys.stderr)
        except FileNotFoundError:
            prepared[path] = 'no such file'
        except IsADirectoryError:
            prepared[path] = 'a folder, not an image'
        except PermissionError:
            prepared[path] = 'permission denied'
        except UnidentifiedImageError:
            prepared[path] = 'not an image Pillow can read'
        except Image.DecompressionBombError:
            prepared[path] = 'too large: Pillow refuses images this big (or a damaged header says so)'
        except (OSError, ValueError) as e:
            if getattr(e, 'errno', None):  # the system's error (a symbolic link loop, a failing disk), not Pillow's
                prepared[path] = f'cannot be read ({e.strerror})'
            else:  # a damaged image: Pillow says what it found
                prepared[path] = f'damaged image ({stops.first_line(e)})'
    return prepared


FIFO_WAIT = 10  # seconds a named pipe may take to start giving its image


def read_pipe(path):
    """All a named pipe gives, or None when nothing writes to it within FIFO_WAIT seconds (opening one that
    nothing writes to waits forever: the reader is left waiting in a thread of its own)."""
    got = []
    reader = threading.Thread(target=lambda: got.append(io.BytesIO(open(path, 'rb').read())), daemon=True)
    reader.start()
    reader.join(FIFO_WAIT)
    return got[0] if got else None


def read_for(args, pad=0):
    """The --predict images, read before anything else. When training is to come, an image that cannot be
    read stops the run now, not after the training."""
    prepared = read_images(args.predict or [], args.dataset, pad)
    failures = unreadable(prepared)
    if failures and not args.load_model:
        raise stops.UserError('\n'.join(failures) + '\nnothing was trained: fix or drop that image first')
    return prepared


def unreadable(prepared):
    """One line per image that could not be read."""
    return [f'--predict {path}: {reason}' for path, reason in prepared.items() if isinstance(reason, str)]


def prepare(image, dataset, pad=0):
    """A PIL image -> uint8 C x H x W tensor, shaped like the dataset's own images."""
    image = eight_bit(ImageOps.exif_transpose(image))
    if dataset == 'cifar10':
        rgb = on_white(image).convert('RGB').resize((32, 32), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
    grey = np.asarray(on_white(image).convert('L'), dtype=np.float32) / 255
    box = 20 if dataset == 'mnist' else 28
    digit = centred(ink_box(grey), box, by_mass=dataset == 'mnist')
    tensor = torch.from_numpy(np.round(digit * 255).astype(np.uint8)).unsqueeze(0)
    return torch.nn.functional.pad(tensor, (pad,) * 4) if pad else tensor


def eight_bit(image):
    """16-bit and floating-point greyscale images scaled to 0..255 (converting would clip them at 255)."""
    if image.mode not in ('I', 'I;16', 'I;16L', 'I;16B', 'F'):
        return image
    pixels = np.asarray(image, dtype=np.float32)
    if not np.isfinite(pixels).all():
        raise ValueError('some of its pixels are not numbers (NaN or infinity)')
    top = 65535 if image.mode.startswith('I;16') else max(float(pixels.max()), 1e-12)
    return Image.fromarray(np.round(pixels.clip(0, None) / top * 255).astype(np.uint8))


def on_white(image):
    """A drawing with a transparent background, as it looks on white paper."""
    if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
        rgba = image.convert('RGBA')
        paper = Image.new('RGBA', rgba.size, 'white')
        return Image.alpha_composite(paper, rgba)
    return image


def ink_box(grey):
    """Greyscale 0..1 -> the ink's bounding box, light ink on black (0), its brightest pixel 1."""
    edge = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = np.median(edge)
    if background > 0.5:  # dark ink on light paper
        grey, background = 1 - grey, 1 - background
    ink = np.clip(grey - background, 0, None)
    if ink.max() == 0:
        return np.zeros((1, 1), dtype=np.float32)  # one colour: a blank image (predict says so)
    ink /= ink.max()
    rows, cols = np.nonzero((ink >= INK).any(1))[0], np.nonzero((ink >= INK).any(0))[0]
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def centred(box, size, by_mass):
    """The box scaled to fit size x size (aspect kept), placed in 28 x 28: its centre of mass (by_mass) or
    its middle at the centre."""
    height, width = box.shape
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(box.astype(np.float32)).resize(shape, Image.Resampling.LANCZOS)).clip(0, 1)
    height, width = small.shape
    if by_mass and small.sum() > 0:
        rows, cols = np.indices(small.shape)
        centre_row, centre_col = (rows * small).sum() / small.sum(), (cols * small).sum() / small.sum()
    else:
        centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    top = int(np.clip(round(13.5 - centre_row), 0, 28 - height))
    left = int(np.clip(round(13.5 - centre_col), 0, 28 - width))
    out = np.zeros((28, 28), dtype=np.float32)
    out[top:top + height, left:left + width] = small
    return out


@torch.no_grad()
def probabilities(model, images, dataset, device, raw_pixels=False):
    """The model's probability of each class for uint8 images N x C x H x W, on the CPU: N x classes.
    raw_pixels: the net was trained on x / 255 with no mean or std (--book).

    Softmax of the outputs; for a net whose outputs are ten separate sigmoids (Nielsen's chapter 1 net), the
    outputs scaled to sum to 1. A model of several nets (stacked.StackedNets) gives the nets' mean.
    """
    mean, std = common.normalization(dataset, device)
    if raw_pixels:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    data = common.Data(dataset, None, None, mean, std)  # for its normalize
    x = data.normalize(images.to(device))
    several = common.nets_in(model) > 1
    with common.evaluating(model):
        outputs = model.each_net(x) if several else model(x)
    last = model.layers[-1] if several else model[-1] if isinstance(model, nn.Sequential) else None
    p = outputs / outputs.sum(-1, keepdim=True) if isinstance(last, nn.Sigmoid) else outputs.softmax(-1)
    return (p.mean(0) if several else p).cpu()


def predict(args, model, prepared):
    """Print `IMAGE: CLASS (P %), ...` for each image read_for prepared (the top three classes); with --plot,
    the picture of them all. Images that could not be read are one line each, and a UserError at the end."""
    good = {path: image for path, image in prepared.items() if not isinstance(image, str)}
    classes = common.DATASETS[args.dataset].classes
    failures = unreadable(prepared)
    if good:
        p = probabilities(model, torch.stack(list(good.values())), args.dataset, args.device, raw_pixels=args.book)
        for path, row in zip(good, p):
            if not good[path].any():
                print(f'--predict {path}: the image is one colour, with nothing drawn on it; classified as a blank',
                      file=sys.stderr)
            top = row.topk(3)
            print(f'{path}: ' + ', '.join(f'{classes[i]} ({100 * v:.1f} %)'
                                          for v, i in zip(top.values.tolist(), top.indices.tolist())), flush=True)
        if args.plot:
            where = args.plot if args.load_model else flags.beside(args.plot, 'predictions')
            failures += save_picture(where, good, p, classes)
    if failures:
        raise stops.UserError('\n'.join(failures))


def save_picture(path, images, p, classes):
    """Each image as the net saw it, beside a bar chart of its class probabilities."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(images), 2, figsize=(8, 2.2 * len(images)), squeeze=False,
                             width_ratios=(1, 2.5), layout='constrained')
    for (name, image), row, (left, right) in zip(images.items(), p, axes):
        pixels = image.permute(1, 2, 0).numpy()  # H x W x C, as matplotlib wants
        if pixels.shape[-1] == 1:
            left.imshow(pixels.squeeze(-1), cmap='gray', vmin=0, vmax=255)
        else:
            left.imshow(pixels)
        left.set_title(os.path.basename(name), fontsize=9)
        left.axis('off')
        right.barh(range(len(classes)), row.numpy() * 100, color='tab:blue')
        right.set_yticks(range(len(classes)), classes, fontsize=8)
        right.invert_yaxis()
        right.set_xlim(0, 100)
        right.set_xlabel('probability (%)', fontsize=8)
    return pictures.save_figure(fig, path, 'prediction picture')
