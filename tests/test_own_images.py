"""--predict: your own images, prepared as the datasets' images were, classified, drawn; and the first
layer's filters in --plot."""
import errno
import io
import os
import re
import subprocess
import sys
import warnings

import matplotlib.figure
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import common
import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import own_images, stacked
from conftest import ROOT, run_script

PREDICTION = re.compile(r'^(.+): (.+) \((\d+\.\d) %\), (.+) \((\d+\.\d) %\), (.+) \((\d+\.\d) %\)$')


def drawing(background='white', ink='black', size=(120, 200), mode='L'):
    """A tall, off-centre stroke like a hand-drawn 1 with a foot, on a page of another shape than 28 x 28."""
    image = Image.new(mode, size, background)
    pen = ImageDraw.Draw(image)
    pen.line([(40, 30), (50, 160)], fill=ink, width=9)
    pen.line([(30, 160), (75, 160)], fill=ink, width=9)
    return image


def centre_of_mass(pixels):
    rows, cols = np.indices(pixels.shape)
    return (rows * pixels).sum() / pixels.sum(), (cols * pixels).sum() / pixels.sum()


def test_a_dark_stroke_on_light_paper_becomes_an_mnist_digit():
    digit = own_images.prepare(drawing(), 'mnist')[0].numpy().astype(float)
    assert digit.shape == (28, 28)
    rows, cols = np.nonzero(digit.any(1))[0], np.nonzero(digit.any(0))[0]
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert height == 20 and width < 20  # the ink's box fits 20 x 20, its aspect kept
    assert digit[0].max() == digit[:, 0].max() == 0 and digit.max() >= 250  # light ink on black
    assert centre_of_mass(digit) == pytest.approx((13.5, 13.5), abs=0.5)  # the ink's centre of mass, centred


def test_light_ink_on_black_is_not_inverted_and_transparency_reads_as_white_paper():
    light = own_images.prepare(drawing(), 'mnist')
    dark = own_images.prepare(drawing(background='black', ink='white'), 'mnist')
    assert torch.equal(light, dark)  # the same digit, whichever way round it was drawn
    transparent = drawing(background=(0, 0, 0, 0), ink=(0, 0, 0, 255), mode='RGBA')  # black ink, clear page
    assert torch.equal(own_images.prepare(transparent, 'mnist'), light)


def test_fashion_mnist_and_cifar10_images_are_prepared_as_theirs_were():
    item = own_images.prepare(drawing(), 'fashion-mnist')[0].numpy()
    rows = np.nonzero(item.any(1))[0]
    assert rows[-1] - rows[0] + 1 == 28  # the whole frame, as Fashion-MNIST's photos
    colour = own_images.prepare(drawing(mode='RGB', ink=(200, 30, 30)), 'cifar10')
    assert colour.shape == (3, 32, 32) and colour.dtype == torch.uint8
    assert colour[0].float().mean() > colour[1].float().mean()  # still red
    assert own_images.prepare(drawing(), 'mnist', pad=2).shape == (1, 32, 32)  # LeNet's border


@pytest.fixture
def trained(data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp('model') / 'simple.pt'
    pytorch_mnist_convnet.main(['--data-dir', str(data_dir), '--device', 'cpu', '--limit', '100', '--epochs', '1',
                                '--no-progress', '--save-model', str(path)])
    return path


@pytest.mark.numerics
def test_predict_prints_the_top_three_and_names_what_it_cannot_read(data_dir, trained, tmp_path):
    one, seven = tmp_path / 'one.png', tmp_path / 'one-dark.jpg'
    drawing().save(one)
    drawing(background='black', ink='white').save(seven)
    text = tmp_path / 'notes.txt'
    text.write_text('not a picture')
    blank = tmp_path / 'blank.png'
    Image.new('L', (30, 30), 128).save(blank)
    result = run_script('pytorch_mnist_convnet.py', '--load-model', trained, '--data-dir', tmp_path / 'no-data',
                        '--device', 'cpu', '--predict', one, text, seven, tmp_path / 'missing.png', blank)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()[1:]
    assert [PREDICTION.match(line).group(1) for line in lines] == [str(one), str(seven), str(blank)]  # no data
    assert result.stderr.splitlines()[-3:] == [
        f'--predict {blank}: the image is one colour, with nothing drawn on it; classified as a blank',
        f'--predict {text}: not an image Pillow can read', f'--predict {tmp_path / "missing.png"}: no such file']
    # the figures are the net's softmax on the prepared image, most likely first
    model = pytorch_mnist_convnet.simple()
    model.load_state_dict(torch.load(trained, weights_only=True)['state_dict'])
    info = common.DATASETS['mnist']
    x = (own_images.prepare(Image.open(one), 'mnist').float() / 255 - info.mean[0]) / info.std[0]
    p = model.eval()(x.unsqueeze(0)).softmax(1)[0]
    top = p.topk(3)
    expected = ', '.join(f'{i} ({100 * v:.1f} %)' for v, i in zip(top.values.tolist(), top.indices.tolist()))
    assert lines[0] == f'{one}: {expected}'


def test_an_image_that_cannot_be_reached_is_not_called_damaged(tmp_path):
    loop = tmp_path / 'loop.png'
    loop.symlink_to(loop)
    damaged = tmp_path / 'cut.png'
    buffer = io.BytesIO()
    drawing().save(buffer, format='PNG')
    damaged.write_bytes(buffer.getvalue()[:200])
    reasons = own_images.read_images([str(loop), str(damaged)], 'mnist')
    assert reasons[str(loop)] == f'cannot be read ({os.strerror(errno.ELOOP)})'
    assert reasons[str(damaged)].startswith('damaged image (')


def test_predict_after_training_and_its_picture(data_dir, tmp_path, capsys):
    image = tmp_path / 'one.png'
    drawing().save(image)
    plot = tmp_path / 'run.png'
    pytorch_mnist.main(['--data-dir', str(data_dir), '--device', 'cpu', '--limit', '100', '--epochs', '1',
                        '--no-progress', '--predict', str(image), '--plot', str(plot)])
    out, err = capsys.readouterr()
    assert PREDICTION.match(out.splitlines()[-1]).group(1) == str(image)
    assert plot.read_bytes()[:4] == b'\x89PNG'
    predictions = tmp_path / 'run.predictions.png'
    assert predictions.read_bytes()[:4] == b'\x89PNG' and f'Prediction picture saved to {predictions}' in err


def test_an_unreadable_image_stops_a_training_run_before_it_starts(data_dir, tmp_path):
    result = run_script('pytorch_mnist.py', '--data-dir', data_dir, '--device', 'cpu', '--limit', '100',
                        '--predict', tmp_path / 'missing.png')
    assert result.returncode == 1
    assert result.stderr.splitlines()[-2:] == [f'--predict {tmp_path / "missing.png"}: no such file',
                                               'nothing was trained: fix or drop that image first']
    assert 'Test data results' not in result.stdout


@pytest.mark.numerics
def test_the_nielsen_net_gives_its_outputs_as_shares(data_dir):
    """Ten separate sigmoids: the figures are the outputs scaled to sum to 1, not a softmax of them."""
    torch.manual_seed(0)
    model = pytorch_mnist.nielsen()
    image = own_images.prepare(drawing(), 'mnist').unsqueeze(0)
    p = own_images.probabilities(model, image, 'mnist', torch.device('cpu'))
    info = common.DATASETS['mnist']
    outputs = model((image.float() / 255 - info.mean[0]) / info.std[0])
    torch.testing.assert_close(p, outputs / outputs.sum())


@pytest.mark.numerics
def test_several_nets_give_their_mean(data_dir):
    model = stacked.seeded(pytorch_mnist_convnet.simple, [1, 2], torch.device('cpu'))
    model = model.to(memory_format=torch.channels_last)
    nets = model.nets()
    image = own_images.prepare(drawing(), 'mnist').unsqueeze(0)
    alone = [own_images.probabilities(net, image, 'mnist', torch.device('cpu')) for net in nets]
    mean = own_images.probabilities(model, image, 'mnist', torch.device('cpu'))
    torch.testing.assert_close(mean, (alone[0] + alone[1]) / 2)


def drawn_figures(monkeypatch):
    figures = []
    savefig = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', keep)
    return figures


@pytest.mark.parametrize('script,net,filters', [(pytorch_mnist_convnet, 'simple', 20),
                                                (pytorch_mnist_convnet, 'lenet', 6),
                                                (pytorch_mnist, 'nielsen', 0)])
def test_plot_shows_the_first_layer_filters(data_dir, tmp_path, monkeypatch, script, net, filters, capsys):
    figures = drawn_figures(monkeypatch)
    model, _, _ = script.main(['--net', net, '--data-dir', str(data_dir), '--device', 'cpu', '--limit', '100',
                               '--epochs', '1', '--no-progress', '--plot', str(tmp_path / 'p.png')])
    [figure] = figures
    if not filters:
        assert len(figure.subfigs) == 2  # a dense net: curves and mistakes only
        return
    panel = figure.subfigs[2]
    pictures = [image for ax in panel.axes for image in ax.get_images()]
    assert len(pictures) == filters
    first = model[0].weight.detach()[0, 0].numpy()
    assert np.array_equal(pictures[0].get_array(), first)  # the learned weights themselves
    assert panel._suptitle.get_text() == f"first layer's {filters} filters"


def test_sixteen_bit_images_are_scaled_not_clipped_and_huge_ones_refused(tmp_path, monkeypatch):
    light = drawing(background=4, ink=156)  # a grey line on a near-black page, 8 bits
    deep = Image.fromarray(np.where(np.asarray(light) == 156, 40000, 1000).astype(np.uint16))  # 16 bits
    assert deep.mode.startswith('I;16')
    deep.save(tmp_path / 'deep.png')
    prepared = own_images.read_images([tmp_path / 'deep.png'], 'mnist')[tmp_path / 'deep.png']
    assert torch.equal(prepared, own_images.prepare(light, 'mnist'))  # not clipped to a blank
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)  # Pillow refuses images above 2x this
    drawing().save(tmp_path / 'big.png')
    reason = own_images.read_images([tmp_path / 'big.png'], 'mnist')[tmp_path / 'big.png']
    assert reason.startswith('too large')


def test_a_fifo_nothing_writes_to_is_refused_not_waited_on(tmp_path):
    """Opening a named pipe waits for a writer forever: fails (times out) when --predict waits on one."""
    fifo = tmp_path / 'seven.png'
    os.mkfifo(fifo)
    code = (f'from plumbing import own_images; own_images.FIFO_WAIT = 0.5; '
            f'print(own_images.read_images([{str(fifo)!r}], "mnist"))')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == repr({str(fifo): 'a FIFO (named pipe) that nothing wrote an image to within '
                                                     '0.5 s'}), result.stderr


def test_an_image_through_a_pipe_is_read(tmp_path):
    """`cat seven.png | ... --predict /dev/stdin`, `--predict <(curl ...)`: fails when every pipe is refused."""
    image, fifo = tmp_path / 'seven.png', tmp_path / 'pipe'
    Image.new('L', (28, 28)).save(image)
    os.mkfifo(fifo)
    writer = subprocess.Popen(['sh', '-c', f'cat {image} > {fifo}'])
    try:
        prepared = own_images.read_images([str(fifo)], 'mnist')
    finally:
        writer.kill()  # (were the pipe never read, its writer would wait forever)
        writer.wait()
    assert isinstance(prepared[str(fifo)], torch.Tensor) and prepared[str(fifo)].shape == (1, 28, 28)


def test_a_very_large_image_is_one_line_not_library_warnings(tmp_path, monkeypatch, capsys):
    """Pillow warns of a decompression bomb above its limit (lowered here to 100 pixels): fails when its
    warning reaches the user, or no line says why reading took long."""
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
    path = tmp_path / 'big.png'
    Image.new('L', (12, 12), 'white').save(path)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter('always')
        prepared = own_images.read_images([str(path)], 'mnist')
    assert not escaped and not isinstance(prepared[str(path)], str)
    assert capsys.readouterr().err.splitlines() == [f'--predict {path}: a very large image (0 megapixels), read all '
                                                    f'the same']


def test_an_image_of_nan_is_refused_not_called_blank(tmp_path):
    """A float image holding NaN: fails when numpy's RuntimeWarning escapes and the image is classified."""
    pixels = np.full((28, 28), 0.5, dtype=np.float32)
    pixels[3, 3] = np.nan
    path = tmp_path / 'nan.tiff'
    Image.fromarray(pixels, mode='F').save(path)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter('always')
        prepared = own_images.read_images([str(path)], 'mnist')
    assert not escaped
    assert prepared == {str(path): 'damaged image (some of its pixels are not numbers (NaN or infinity))'}
