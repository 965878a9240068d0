"""book.py and --book: the pieces of the book's protocol, each against what network3.py and network.py do;
then --book through the scripts, with every other flag."""
import argparse
import contextlib
import io
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import book
import common
import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import modes, own_images, pictures, stops
from test_resume import TIME


def test_the_data_holds_out_the_last_sixth_shifts_the_rest_and_keeps_raw_pixels(data_dir):
    """300 synthetic training images: the last 50 validate, the first 250 are shifted to 1,250. Fails when a
    validation image is trained on, when the shifts reach the validation images, or when the pixels are
    normalized with a mean and std."""
    data = book.load_data('mnist', data_dir, torch.device('cpu'), extend=True)
    images, labels = common.read_split('mnist', data_dir, train=True)
    assert len(data.train) == 1250 and len(data.validation) == 50 and len(data.test) == 100
    assert torch.equal(data.validation.images, images[250:]) and torch.equal(data.validation.labels, labels[250:])
    originals = {bytes(x.numpy()) for x in images[:250]}
    shifted = {bytes(x.numpy()) for x in common.with_shifted_copies(images[:250])}
    trained = {bytes(x.numpy()) for x in data.train.images}
    assert trained == shifted and originals <= trained
    assert not trained & {bytes(x.numpy()) for x in images[250:]}
    assert data.train.labels.tolist() != labels[:250].repeat(5).tolist()  # shuffled once, as expand_mnist.py
    torch.testing.assert_close(data.normalize(data.test.images[:3]), data.test.images[:3].float() / 255)


def test_the_validation_images_are_the_last_ones_and_none_trains():
    images, labels = torch.arange(60_000), torch.arange(60_000) % 10
    (train, train_labels), (validation, validation_labels) = book.split(images, labels)
    assert len(train) == 50_000 and len(validation) == 10_000
    assert train[-1] == 49_999 and validation[0] == 50_000  # mnist.pkl.gz's split
    assert set(train.tolist()).isdisjoint(validation.tolist())
    assert torch.equal(validation_labels, validation % 10) and torch.equal(train_labels, train % 10)
    (small, _), (held_out, _) = book.split(torch.arange(600), torch.arange(600))
    assert (len(small), len(held_out)) == (500, 100)  # another size: the last sixth


@pytest.mark.parametrize('make', [pytorch_mnist_convnet.simple, pytorch_mnist_convnet.relu])
def test_initial_weights_follow_network3(make):
    """Each weight's spread is 1/sqrt(n_out), with network3's n_out; fails with n_in in its place (conv 1:
    std 0.2 instead of 0.089), or without the pool area (0.045)."""
    torch.manual_seed(0)
    net = book.init_weights(make())
    layers = [layer for layer in net if isinstance(layer, (nn.Conv2d, nn.Linear))]
    expected_n_out = {'simple': [20 * 25 / 4, 100], 'relu': [20 * 25 / 4, 40 * 25 / 4, 100]}[make.__name__]
    for layer, n_out in zip(layers, expected_n_out):
        assert abs(layer.weight.mean().item()) < 5 * n_out ** -0.5 / layer.weight.numel() ** 0.5  # 5 std errors
        assert layer.weight.std().item() == pytest.approx(n_out ** -0.5, rel=0.1), layer
    biases = torch.cat([layer.bias for layer in layers[:-1]])
    assert biases.std().item() == pytest.approx(1, rel=0.25) and len(biases) >= 120
    assert not layers[-1].weight.any() and not layers[-1].bias.any()  # the softmax layer starts at zero


def test_weight_decay_leaves_biases_alone():
    torch.manual_seed(0)
    net = pytorch_mnist_convnet.simple()
    book.weight_cost(net, lmbda=0.1, batches=5000).backward()
    for name, parameter in net.named_parameters():
        if name.endswith('bias'):
            assert parameter.grad is None or not parameter.grad.any(), name
        else:
            torch.testing.assert_close(parameter.grad, 0.1 / 5000 * parameter.detach())


def test_dropout_scales_at_test_time_not_in_training():
    torch.manual_seed(0)
    dropout, x = book.Dropout(0.5), torch.full((100_000,), 3.0)
    kept = dropout(x)
    assert set(kept.unique().tolist()) == {0.0, 3.0}  # kept inputs are not scaled up
    assert (kept == 3.0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(dropout.eval()(x), x * 0.5)


def test_the_best_validation_epoch_a_later_one_winning_a_tie():
    assert book.best_epoch([0.90, 0.95, 0.95, 0.94]) == 2
    assert book.best_epoch([0.97, 0.95]) == 0
    assert book.best_epoch([0.5]) == 0
    assert book.best_epoch([0.9, 0.9, 0.9]) == 2


def reported(history, load_model=None):
    """The result lines modes.report prints for a history (made plain first, as training leaves it)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        modes.report(argparse.Namespace(load_model=load_model), modes.record(history))
    return out.getvalue().splitlines()


def test_the_result_is_the_test_accuracy_at_the_best_validation_epoch(tmp_path):
    """Not the last epoch's, not the best test accuracy's: the test accuracy where validation peaked."""
    history = {'loss': [], 'accuracy': [common.Accuracy(t, validation=v) for t, v in
                                        ((0.90, 0.91), (0.97, 0.95), (0.93, 0.95), (0.99, 0.94))]}
    assert f'{history["accuracy"][0]:.4f}' == '0.9000, validation 0.9100'  # as the epoch line shows it
    assert reported(history) == ['Best validation accuracy 0.9500 at epoch 3/4', 'Test data results: 0.9300']
    assert history == {'loss': [], 'accuracy': [0.90, 0.97, 0.93, 0.99],
                       'validation': {'loss': [], 'accuracy': [0.91, 0.95, 0.95, 0.94]}}  # plain numbers
    torch.save(history, tmp_path / 'history.pt')
    assert torch.load(tmp_path / 'history.pt', weights_only=True) == history


def test_the_validation_accuracy_is_measured_on_the_held_out_images(data_dir):
    """A net that answers 3 for every image, with every held-out label made a 3: validation 1, test 0.1.
    Fails when the validation figure is taken on the test images, or the other way round."""
    data = book.load_data('mnist', data_dir, torch.device('cpu'))
    data.validation.labels.fill_(3)
    always_three = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with torch.no_grad():
        always_three[1].weight.zero_()
        always_three[1].bias.copy_(torch.arange(10) == 3)
    accuracy = common.test_accuracy(always_three, data)
    assert (float(accuracy), accuracy.validation) == (pytest.approx(0.1), 1.0)


# ----------------------------------------------------------------------------------------------
# --book through the scripts

BOOK_EPOCH_LINE = re.compile(r'^Test data results: (\d\.\d{4}), validation (\d\.\d{4}), Epoch (\d+)/(\d+), '
                             r'train loss (\d+\.\d{4}), \d+\.\d s$')


def book_run(data_dir, *extra):
    """--book on the 300 synthetic training images (250 train, 50 validate), on the CPU."""
    return ['--data-dir', str(data_dir), '--device', 'cpu', '--no-progress', '--book', *extra]


@pytest.mark.parametrize('script,net,epochs,learned', [(pytorch_mnist_convnet, 'relu', 3, 0.9),
                                                       (pytorch_mnist, 'nielsen', 4, 0.4)])
def test_a_book_run_learns_and_reports_the_test_accuracy_at_the_best_validation_epoch(
        data_dir, script, net, epochs, learned, capsys):
    """Chance is 0.1. Fails when nothing is learned (say, a cost or an initialisation that stalls), when the
    validation accuracy is missing from the epoch lines, or when the result is another epoch's (the last,
    or the best test accuracy's) rather than the test accuracy where validation peaked, later epochs
    winning ties."""
    script.main(book_run(data_dir, '--net', net, '--epochs', str(epochs)))
    lines = capsys.readouterr().out.splitlines()
    epoch_lines = [BOOK_EPOCH_LINE.match(line) for line in lines if ', Epoch ' in line]
    assert len(epoch_lines) == epochs and all(epoch_lines)
    tests, validations = zip(*((float(m.group(1)), float(m.group(2))) for m in epoch_lines))
    best = max(i for i, v in enumerate(validations) if v == max(validations))
    assert lines[-2:] == [f'Best validation accuracy {validations[best]:.4f} at epoch {best + 1}/{epochs}',
                          f'Test data results: {tests[best]:.4f}']
    assert tests[best] >= learned and max(validations) >= learned


def test_network3_batches_keep_one_order_and_drop_a_last_partial_batch(data_dir):
    """130 images: 109 train under --book (the last 21 validate). network3's walk: the same order every
    epoch, 10 full batches, the last 9 images never trained on. network.py's (chapter 1): a new order every
    epoch, 11 batches. Fails when the fixed order reshuffles, or a partial batch is trained on."""
    def two_epochs(fixed_order):
        data = book.load_data('mnist', data_dir, torch.device('cpu'), limit=130, fixed_order=fixed_order)
        batches = common.Batches(data, 10, 1, 2, progress=False)
        return data, [[labels.tolist() for _, labels in batches] for _ in range(2)]

    data, (first, second) = two_epochs(fixed_order=True)
    assert len(data.train) == 109 and first == second and len(first) == 10
    assert sum(first, []) == data.train.labels[:100].tolist()  # in the stored order
    data, (first, second) = two_epochs(fixed_order=False)
    assert first != second and len(first) == 11 and sorted(sum(first, [])) == sorted(data.train.labels.tolist())


def test_chapter_1_starts_every_weight_and_bias_at_n_0_1():
    """network.py draws np.random.randn for every weight and bias. Fails with PyTorch's default
    initialisation (std 0.036 for the first layer)."""
    torch.manual_seed(0)
    net = book.network_py_net(pytorch_mnist.nielsen)()
    for name, parameter in net.named_parameters():
        assert parameter.std().item() == pytest.approx(1, rel=4 / (2 * parameter.numel()) ** 0.5), name  # 4 std errors
        assert abs(parameter.mean().item()) < 5 / parameter.numel() ** 0.5, name


def test_chapter_1_cost_is_half_the_squared_error_summed_over_outputs_averaged_over_the_batch():
    """C = 1/2 |y - a|^2 per image, averaged over the batch: 5 times F.mse_loss (which also averages over
    the 10 outputs). Fails without the 1/2, or averaged over the outputs too."""
    outputs = torch.tensor([[0.2, 0.9, 0.1], [0.5, 0.5, 0.0]])
    labels = torch.tensor([1, 2])
    by_hand = (0.5 * (0.2 ** 2 + 0.1 ** 2 + 0.1 ** 2) + 0.5 * (0.5 ** 2 + 0.5 ** 2 + 1.0 ** 2)) / 2
    assert book.half_squared_error(outputs, labels).item() == pytest.approx(by_hand)
    outputs = torch.rand(7, 10)
    labels = torch.randint(0, 10, (7,))
    expected = 5 * F.mse_loss(outputs, F.one_hot(labels, 10).float())
    torch.testing.assert_close(book.half_squared_error(outputs, labels), expected)


def test_the_results_of_several_nets_each_at_its_own_best_validation_epoch():
    """Seed 1 peaks at epoch 2, seed 2 at epoch 3; the vote is the last epoch's nets' (as the book voted its
    five trained nets). Fails when every net is taken at one shared epoch, or the vote at another epoch."""
    def nets(per_net, vote):
        return common.Accuracy(sum(per_net) / 2, [1, 2], per_net, vote)
    test = [nets([0.80, 0.70], 0.75), nets([0.90, 0.72], 0.85), nets([0.85, 0.78], 0.88)]
    validation = [nets([0.81, 0.70], 0.0), nets([0.92, 0.71], 0.0), nets([0.90, 0.79], 0.0)]
    for t, v in zip(test, validation):
        t.validation = v
    assert f'{test[0]:.4f}' == '0.7500 (mean of 2 nets; min 0.7000, max 0.8000), validation 0.7550'
    history = {'loss': [], 'accuracy': test}
    assert reported(history) == [
        'Seed 1: 0.9000 at epoch 2/3, its best validation accuracy 0.9200',
        'Seed 2: 0.7800 at epoch 3/3, its best validation accuracy 0.7900',
        'Ensemble of 2 nets (majority vote, after the last epoch): 0.8800',
        'Test data results: 0.8400']
    assert history['per_net'] == [[0.80, 0.90, 0.85], [0.70, 0.72, 0.78]] and history['vote'] == [0.75, 0.85, 0.88]
    assert history['validation']['per_net'] == [[0.81, 0.92, 0.90], [0.70, 0.71, 0.79]]


def test_own_images_are_read_as_the_book_trained_raw_pixels():
    """A --book net saw x / 255; a --predict image must reach it the same way. Fails when --book's images are
    normalized with the dataset's mean and std."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    image = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    p = own_images.probabilities(net, image, 'mnist', torch.device('cpu'), raw_pixels=True)
    torch.testing.assert_close(p, net(image.float() / 255).softmax(1))
    normalized = own_images.probabilities(net, image, 'mnist', torch.device('cpu'))
    assert not torch.allclose(p, normalized)


@pytest.mark.numerics
def test_book_save_resume_load_and_plot(data_dir, tmp_path, monkeypatch, capsys):
    """A --book run of 2 epochs saved, then resumed to 3, is the 3-epoch run: each epoch's test and
    validation accuracy, the result line, the weights. The file says --book and raw pixels; --load-model
    tests it on the book's data without --book being given again; the picture gets the validation curve.
    Fails when --resume loses the validation history (the result would be taken over epoch 3 alone), when
    the run's flags leave out --book or --lmbda, or when --load-model tests a book net on normalized data."""
    relu = ['--net', 'relu', '--limit', '150']
    whole = pytorch_mnist_convnet.main(book_run(data_dir, *relu, '--epochs', '3'))
    out = capsys.readouterr().out.splitlines()
    path, picture = tmp_path / 'book.pt', tmp_path / 'book.png'
    plotted = []
    save_plot = pictures.save_plot
    monkeypatch.setattr(pictures, 'save_plot', lambda *a: plotted.append(a[1]) or save_plot(*a))
    pytorch_mnist_convnet.main(book_run(data_dir, *relu, '--epochs', '2', '--save-model', str(path),
                                        '--plot', str(picture)))
    capsys.readouterr()
    assert picture.read_bytes()[:4] == b'\x89PNG' and len(plotted[0]['validation']['accuracy']) == 2
    saved = torch.load(path, weights_only=True)
    assert saved['book'] and (saved['mean'], saved['std']) == ([0.0], [1.0])
    assert saved['resume']['run']['book'] and saved['resume']['run']['lmbda'] == 0.1
    resumed = pytorch_mnist_convnet.main(['--data-dir', str(data_dir), '--no-progress', '--resume', str(path),
                                          '--epochs', '3'])
    resumed_out = capsys.readouterr().out.splitlines()
    assert [TIME.sub('', line) for line in resumed_out if 'Epoch' in line] == \
        [TIME.sub('', line) for line in out if 'Epoch 3/' in line]
    assert resumed_out[-2:] == out[-2:]
    assert resumed[2] == whole[2]
    for (name, x), y in zip(whole[0].state_dict().items(), resumed[0].state_dict().values()):
        assert torch.equal(x, y), name
    pytorch_mnist_convnet.main(['--data-dir', str(data_dir), '--no-progress', '--limit', '150', '--net', 'relu',
                                '--load-model', str(path)])
    test, validation = whole[2]['accuracy'][-1], whole[2]['validation']['accuracy'][-1]
    assert capsys.readouterr().out.splitlines()[-2:] == [f'Validation accuracy {validation:.4f}',
                                                          f'Test data results: {test:.4f}']


@pytest.mark.numerics
def test_book_seeds_go_on_after_a_resume(data_dir, tmp_path, capsys):
    """Chapter 1 (reshuffled every epoch) with two nets: 1 epoch, then --resume to 2, is the 2-epoch run,
    each net's result taken at its own best validation epoch. Fails when the nets' validation accuracies
    are not kept per net through the file."""
    two = ['--limit', '150', '--seeds', '1', '2']
    whole = pytorch_mnist.main(book_run(data_dir, *two, '--epochs', '2'))
    out = capsys.readouterr().out.splitlines()
    path = tmp_path / 'two.pt'
    pytorch_mnist.main(book_run(data_dir, *two, '--epochs', '1', '--save-model', str(path)))
    capsys.readouterr()
    resumed = pytorch_mnist.main(['--data-dir', str(data_dir), '--no-progress', '--resume', str(path),
                                  '--epochs', '2'])
    assert capsys.readouterr().out.splitlines()[-4:] == out[-4:]  # each seed, the vote, the mean
    assert resumed[2] == whole[2]
    assert len(whole[2]['validation']['per_net']) == 2


@pytest.mark.parametrize('script,extra,message', [
    (pytorch_mnist_convnet, ['--book', '--net', 'lenet'], "argument --book: the book has no 'lenet' net; --book "
                                                          'trains --net simple, --net 2conv, --net relu, --net final'),
    (pytorch_mnist, ['--book', '--net', 'softmax'], "argument --book: the book has no 'softmax' net; --book trains "
                                                    '--net nielsen'),
    (pytorch_mnist_convnet, ['--book', '--wd', '0.001'], "argument --wd: --book trains with the book's L2 term "
                                                         'instead of weight decay; give --lmbda L for it'),
    (pytorch_mnist_convnet, ['--lmbda', '0.1'], "argument --lmbda: it is the L2 term of the book's cost; add "
                                                '--book (or use --wd)'),
    (pytorch_mnist_convnet, ['--book', '--lmbda', '-1'], 'argument --lmbda: must be a finite number of at least 0, '
                                                         'got -1'),
])
def test_book_flags_are_checked(script, extra, message, capsys):
    with pytest.raises(SystemExit) as stop:
        script.main(['--limit', '10', *extra])
    assert stop.value.code == 2
    assert f'error: {message}' in capsys.readouterr().err


def test_a_model_trained_without_book_does_not_load_with_book(data_dir, tmp_path, capsys):
    path = tmp_path / 'plain.pt'
    pytorch_mnist.main(['--data-dir', str(data_dir), '--device', 'cpu', '--no-progress', '--limit', '50',
                        '--epochs', '1', '--save-model', str(path)])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        pytorch_mnist.main(['--data-dir', str(data_dir), '--load-model', str(path), '--book'])
    assert (f'error: argument --book: the --load-model file {path} was trained without --book; drop --book'
            in capsys.readouterr().err)


def test_book_with_a_batch_larger_than_its_training_split_is_one_line(data_dir, capsys):
    """--book leaves out a last batch that is not full: fails when a batch larger than the split trains nothing
    and the run reports as if it had trained, or --limit's check has no answer (a traceback)."""
    from test_errors import usage_error
    assert usage_error(capsys, book_run(data_dir, '--net', 'relu', '--limit', '100', '--batch-size', '1000000',
                                        '--epochs', '1')).endswith('give a smaller --batch-size')
    with pytest.raises(stops.UserError, match=r'^--book trains on 250 images here, fewer than one batch of 400; '
                                              r'give a smaller --batch-size$'):
        pytorch_mnist_convnet.main(book_run(data_dir, '--net', 'relu', '--batch-size', '400', '--epochs', '1'))


@pytest.mark.parametrize('limit, left', [('5', '5 to train on and 0 to validate'),
                                         ('10', '9 to train on and 1 to validate')])
def test_book_with_too_few_images_is_a_usage_error(data_dir, capsys, limit, left):
    """None left to validate, or less than one batch to train on: fails when either is a traceback (the first
    only after training) instead of a usage error before any work."""
    from test_errors import usage_error
    line = usage_error(capsys, book_run(data_dir, '--net', 'relu', '--limit', limit, '--epochs', '1'))
    assert line.endswith(f'argument --limit: --book holds out the last sixth of the training images to validate, '
                         f'and of {limit} that leaves {left}; give --limit 11 or more for a batch of 10 and one '
                         f'image to validate')
