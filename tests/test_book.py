"""book.py: the pieces of network3.py's protocol, each against what network3.py does."""
import copy
import pickle

import pytest
import torch
import torch.nn as nn

import book
import common
import pytorch_mnist_convnet


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


def test_the_result_is_the_test_accuracy_at_the_best_validation_epoch():
    """Not the last epoch's, not the best test accuracy's: the test accuracy where validation peaked."""
    history = {'accuracy': [book.Accuracy(0.90, 0.91), book.Accuracy(0.97, 0.95), book.Accuracy(0.93, 0.95),
                            book.Accuracy(0.99, 0.94)]}
    assert book.result_lines(history) == ['Best validation accuracy 0.9500 at epoch 3/4', 'Test data results: 0.9300']
    assert f'{history["accuracy"][0]:.4f}' == '0.9000, validation 0.9100'
    for twin in (copy.deepcopy(history['accuracy'][1]), pickle.loads(pickle.dumps(history['accuracy'][1]))):
        assert (float(twin), twin.validation) == (0.97, 0.95)


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
