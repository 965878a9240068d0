"""--seeds: several nets trained at once (stacked.py). Each is the net its seed trains alone; the vote;
the printed lines; saving, loading, plotting and stopping every net; the flags."""
import re

import pytest
import torch
import torch.nn as nn

import cifar_convnet
import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import stacked, stops
from conftest import run_script
from test_common import FINAL_LINE
from test_errors import usage_error
from test_cifar import cifar_dir, skip_md5  # noqa: F401 -- fixtures
from test_stops import stop_at_step

MEAN_LINE = re.compile(r'^Test data results: (\d\.\d{4}) \(mean of (\d+) nets; min (\d\.\d{4}), max (\d\.\d{4})\), '
                       r'Epoch (\d+)/(\d+), train loss (\d+\.\d{4}), \d+\.\d s$')
SEED_LINE = re.compile(r'^Seed (-?\d+): (\d\.\d{4})$')
VOTE_LINE = re.compile(r'^Ensemble of (\d+) nets \(majority vote\): (\d\.\d{4})$')


def twenty_steps(data_dir, *extra):
    """100 training images in batches of 10, two epochs (each its own order): 20 SGD steps, on the CPU."""
    return ['--data-dir', str(data_dir), '--device', 'cpu', '--epochs', '2', '--limit', '100', '--no-progress',
            *extra]


@pytest.fixture
def float64():
    """Train in float64 (nets and data follow torch's default dtype). The stacked nets add up in another
    order than a single net (a grouped convolution, a batched matrix product): in float32 the two paths
    round differently, and a max-pooling window whose two largest values lie within that rounding sends its
    gradient to one or the other. On some CPUs and seeds that happens within 20 steps, and the runs part
    (seed 5's relu net: 3e-4 after 20 steps between two kernel sets, from one pooling window in step 1). In
    float64 the rounding is a billion times smaller than such gaps, so equal arithmetic gives equal weights."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.numerics
@pytest.mark.parametrize('script,net,book', [
    (pytorch_mnist_convnet, 'relu', False), (pytorch_mnist_convnet, 'final', False),
    (pytorch_mnist, 'nielsen', False), (pytorch_mnist_convnet, 'lenet', False),
    (pytorch_mnist_convnet, 'relu', True), (pytorch_mnist_convnet, 'final', True), (pytorch_mnist, 'nielsen', True)],
    ids=['relu', 'final-dropout', 'nielsen-mse', 'lenet-padded', 'book-relu-l2', 'book-final-dropout',
         'book-nielsen'])
def test_each_stacked_net_is_the_net_its_seed_trains_alone(data_dir, script, net, book, float64, capsys):
    """After 20 steps, stacked net i has the weights of a plain run with --seed Si. Fails when a net gets
    another's batches or initial weights, when the loss is the nets' mean instead of their sum (each net
    would learn at lr / K), when Flatten orders the features differently, or (final) when a net's dropout
    masks are not the ones its seed draws. With --book: when the book's L2 term reaches each net K times
    or 1/K times, or its dropout is stacked as PyTorch's (scaled in training)."""
    seeds, extra = [1, 2, 5], ['--net', net] + (['--book'] if book else [])
    model, _, history = script.main(twenty_steps(data_dir, *extra, '--seeds', *map(str, seeds)))
    nets = model.nets()
    plain = history
    for k, (seed, stacked_net) in enumerate(zip(seeds, nets)):
        alone, _, alone_history = script.main(twenty_steps(data_dir, *extra, '--seed', str(seed)))
        for (name, expected), actual in zip(alone.state_dict().items(), stacked_net.state_dict().values()):
            assert actual.dtype == torch.float64
            torch.testing.assert_close(actual, expected, msg=f'seed {seed}, {name}')
        alone_plain = alone_history
        assert [a[k] for a in zip(*plain['per_net'])] == alone_plain['accuracy']
        if book:
            assert [a[k] for a in zip(*plain['validation']['per_net'])] == alone_plain['validation']['accuracy']
        assert len(alone_plain['accuracy']) == 2
    first = [n.state_dict() for n in nets]
    assert not torch.equal(first[0]['1.weight' if net == 'nielsen' else '0.weight'],
                           first[1]['1.weight' if net == 'nielsen' else '0.weight'])  # three different nets
    capsys.readouterr()


@pytest.mark.numerics
def test_cifar_nets_stack_too(cifar_dir, skip_md5, float64):
    """cifar_convnet's nets (3 colour channels, a conv without pooling) train stacked as alone."""
    argv = ['--data-dir', str(cifar_dir), '--device', 'cpu', '--epochs', '1', '--limit', '40', '--no-progress']
    for net in ('conv', 'final'):
        model, _, _ = cifar_convnet.main(argv + ['--net', net, '--seeds', '3', '4'])
        alone, _, _ = cifar_convnet.main(argv + ['--net', net, '--seed', '4'])
        for expected, actual in zip(alone.state_dict().values(), model.nets()[1].state_dict().values()):
            torch.testing.assert_close(actual, expected)


def outputs_voting(*votes_and_confidences):
    """Hand-made outputs, K x N x 3: for each image, each net's (voted class, its logit), other logits 0."""
    nets = len(votes_and_confidences[0])
    outputs = torch.zeros(nets, len(votes_and_confidences), 3)
    for image, votes in enumerate(votes_and_confidences):
        for net, (cls, logit) in enumerate(votes):
            outputs[net, image, cls] = logit
    return outputs


def test_majority_vote_on_hand_made_outputs():
    outputs = outputs_voting(
        [(2, 1.0), (2, 1.0), (0, 9.0), (1, 9.0)],   # two votes for 2 beat one each for 0 and 1, however sure
        [(0, 5.0), (0, 5.0), (1, 1.0), (1, 1.0)],   # a 2-2 tie: 0, where the nets are surer on average
        [(0, 1.0), (0, 1.0), (1, 5.0), (1, 5.0)],   # the same tie the other way: 1
        [(2, 3.0), (1, 3.0), (0, 3.0), (2, 3.0)],   # 2 votes win
    )
    assert stacked.majority_vote(outputs).tolist() == [2, 0, 1, 2]
    # a 1-1 tie of equal confidence (each net all but certain, so both probabilities average to 0.5 exactly)
    # goes to the lower class
    equal = outputs_voting([(2, 100.0), (1, 100.0)])
    assert equal.softmax(2).mean(0)[0, 1] == equal.softmax(2).mean(0)[0, 2]
    assert stacked.majority_vote(equal).tolist() == [1]
    # only the tied classes count: class 2, which no net voted for, has the highest mean probability
    unvoted = torch.tensor([[[3.0, 0.0, 2.9]], [[0.0, 3.0, 2.9]]])
    assert unvoted.softmax(2).mean(0).argmax().item() == 2
    assert stacked.majority_vote(unvoted).tolist() == [0]


def test_the_printed_lines_and_learning(data_dir):
    """Through the script's real __main__: one line per epoch with the nets' mean, min and max; then each
    seed, the vote, and the mean as the last line; and the nets learn."""
    result = run_script('pytorch_mnist_convnet.py', '--net', 'relu', '--data-dir', data_dir, '--epochs', '3',
                        '--limit', '200', '--no-progress', '--device', 'cpu', '--seeds', '1', '2', '3', timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    epochs = [MEAN_LINE.match(line) for line in lines[1:4]]
    assert all(epochs), lines
    assert [m.group(2, 5, 6) for m in epochs] == [('3', '1', '3'), ('3', '2', '3'), ('3', '3', '3')]
    seeds = [SEED_LINE.match(line) for line in lines[5:8]]
    assert all(seeds), lines
    assert [m.group(1) for m in seeds] == ['1', '2', '3']
    accuracies = [float(m.group(2)) for m in seeds]
    mean, low, high = (float(epochs[-1].group(i)) for i in (1, 3, 4))
    assert (low, high) == (min(accuracies), max(accuracies))
    assert mean == pytest.approx(sum(accuracies) / 3, abs=0.0001)
    assert int(VOTE_LINE.match(lines[8]).group(1)) == 3
    assert float(FINAL_LINE.match(lines[9]).group(1)) == mean and len(lines) == 10
    losses = [float(m.group(7)) for m in epochs]
    assert losses[2] < losses[0] and min(accuracies) >= 0.5  # every net learned (chance: 0.1)


@pytest.mark.numerics
def test_save_then_load_tests_every_net_and_the_vote(data_dir, tmp_path, capsys):
    path = tmp_path / 'five.pt'
    argv = ['--data-dir', str(data_dir), '--device', 'cpu', '--limit', '200', '--no-progress']
    pytorch_mnist_convnet.main(argv + ['--net', 'relu', '--epochs', '2', '--seeds', '4', '5', '6',
                                       '--save-model', str(path)])
    trained = capsys.readouterr().out.splitlines()[-5:]
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint['seeds'] == [4, 5, 6] and len(checkpoint['state_dicts']) == 3
    for state_dict in checkpoint['state_dicts']:  # each net as the plain net keeps its weights
        pytorch_mnist_convnet.relu().load_state_dict(state_dict)
    model, _, history = pytorch_mnist_convnet.main(argv + ['--net', 'relu', '--load-model', str(path)])
    assert capsys.readouterr().out.splitlines()[-5:] == trained  # the same Seed, Ensemble, result lines
    assert history['loss'] == [] and len(model.nets()) == 3
    with pytest.raises(stops.UserError, match='the weights do not fit'):
        checkpoint['state_dicts'][1] = pytorch_mnist_convnet.simple().state_dict()
        torch.save(checkpoint, tmp_path / 'bad.pt')
        pytorch_mnist_convnet.main(argv + ['--net', 'relu', '--load-model', str(tmp_path / 'bad.pt')])


def test_plot_shows_every_net(data_dir, tmp_path, monkeypatch):
    import matplotlib.axes
    labels = []
    plot = matplotlib.axes.Axes.plot

    def plot_and_note(self, *args, **kwargs):
        labels.append(kwargs.get('label'))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, 'plot', plot_and_note)
    path = tmp_path / 'nets.png'
    pytorch_mnist.main(['--data-dir', str(data_dir), '--device', 'cpu', '--limit', '100', '--epochs', '2',
                        '--no-progress', '--seeds', '7', '8', '--plot', str(path)])
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert labels[:3] == ['seed 7', 'seed 8', 'majority vote']


@pytest.mark.parametrize('script', [pytorch_mnist, pytorch_mnist_convnet])
def test_seeds_train_through_the_scripts_own_loop_and_step(script, data_dir, monkeypatch, capsys):
    """A learner's edit to train() or sgd_step reaches --seeds too. Fails when --seeds trains with a loop or a
    step of its own."""
    loops, steps = [], []
    train, step = script.train, script.sgd_step
    monkeypatch.setattr(script, 'train', lambda *args, **kwargs: loops.append(1) or train(*args, **kwargs))
    monkeypatch.setattr(script, 'sgd_step', lambda *args: steps.append(1) or step(*args))
    script.main(twenty_steps(data_dir, '--seeds', '1', '2'))
    assert loops == [1] and len(steps) == 20  # 2 epochs of 10 batches, each step for both nets
    capsys.readouterr()


def test_a_stop_saves_every_net(data_dir, tmp_path, monkeypatch, capsys):
    path = tmp_path / 'nets.pt'
    stop_at_step(pytorch_mnist, monkeypatch, 13)  # in epoch 2 of 10 batches
    with pytest.raises(stops.Interrupted, match='interrupted in epoch 2/3 at batch 2/10; last test accuracy: 0'):
        pytorch_mnist.main(['--data-dir', str(data_dir), '--device', 'cpu', '--epochs', '3', '--limit', '100',
                            '--no-progress', '--seeds', '1', '2', '--save-model', str(path)])
    assert torch.load(path, weights_only=True)['seeds'] == [1, 2]


@pytest.mark.parametrize('extra,message', [
    (('--seed', '1', '--seeds', '2', '3'), 'argument --seeds: not allowed with argument --seed'),
    (('--seeds', '2', '3', '2'), 'argument --seeds: 2 is given twice; two nets with one seed are the same net'),
    (('--seeds', '1', 'x'), "argument --seeds: invalid integer value: 'x'"),
    (('--seeds', '2', '3', '--load-model', 'm.pt'), 'argument --load-model: it tests a saved model and trains '
                                                     'nothing, so --seeds would be ignored; drop it'),
])
def test_seed_flags_are_checked(extra, message, capsys):
    assert usage_error(capsys, ['--limit', '10', *extra]).endswith(f'error: {message}')


@pytest.mark.numerics
def test_one_seed_in_seeds_is_the_plain_run(data_dir, capsys):
    argv = ['--data-dir', str(data_dir), '--device', 'cpu', '--limit', '100', '--epochs', '1', '--no-progress']
    model, _, _ = pytorch_mnist.main(argv + ['--seeds', '7'])
    plain = capsys.readouterr().out.splitlines()
    pytorch_mnist.main(argv + ['--seed', '7'])
    assert isinstance(model, nn.Module) and [line[:30] for line in capsys.readouterr().out.splitlines()] == \
        [line[:30] for line in plain]


def test_a_net_that_cannot_be_stacked_is_one_clear_error():
    with pytest.raises(stops.UserError, match=r'--seeds cannot stack layer 1 \(BatchNorm2d'):
        stacked.StackedNets([nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)) for _ in range(2)], [1, 2])
    with pytest.raises(stops.UserError, match='this net is a Linear: train one seed at a time with --seed'):
        stacked.StackedNets([nn.Linear(2, 2) for _ in range(2)], [1, 2])


def test_two_seeds_torch_takes_as_one_are_a_usage_error(data_dir, capsys):
    """-1 and 18446744073709551615 give torch's generator one state: fails when they train one net twice and
    vote as two."""
    assert usage_error(capsys, twenty_steps(data_dir, '--seeds', '-1', '3', str(2 ** 64 - 1)), pytorch_mnist) \
        .endswith(f'argument --seeds: -1 and {2 ** 64 - 1} are one seed to torch (it counts modulo 2**64); two nets '
                  f'with one seed are the same net')
