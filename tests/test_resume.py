"""--resume: a run saved by --save-model (at its end, or when stopped) goes on exactly as if it had never
stopped; flags that contradict it are usage errors; older model files still load."""
import functools
import re

import pytest
import torch

import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import stops
from test_cifar import cifar_dir, skip_md5  # noqa: F401 -- fixtures
from test_stops import stop_at_step

TIME = re.compile(r', \d+\.\d s$')


def run(data_dir, *extra):
    return ['--data-dir', str(data_dir), '--device', 'cpu', '--limit', '100', '--no-progress', *extra]


def epoch_lines(out):
    """The printed epoch lines, without their times (the one thing that differs between runs)."""
    return [TIME.sub('', line) for line in out.splitlines() if ', Epoch ' in line]


def assert_same_run(a, b):
    (model_a, _, history_a), (model_b, _, history_b) = a, b
    assert history_a == history_b
    for (name, x), y in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.numerics
def test_a_run_stopped_mid_epoch_goes_on_exactly(data_dir, tmp_path, monkeypatch, capsys):
    """final has dropout: the resumed run draws the masks the uninterrupted one drew. Fails when the weights,
    the optimizer, the batch order's or dropout's generator, or the history is not put back as it was."""
    whole = pytorch_mnist_convnet.main(run(data_dir, '--net', 'final', '--epochs', '4', '--seed', '3'))
    lines = epoch_lines(capsys.readouterr().out)
    path = tmp_path / 'final.pt'
    with monkeypatch.context() as patch:
        stop_at_step(pytorch_mnist_convnet, patch, 25)  # batch 5 of epoch 3 (10 batches an epoch)
        with pytest.raises(stops.Interrupted, match='in epoch 3/4 at batch 4/10'):
            pytorch_mnist_convnet.main(run(data_dir, '--net', 'final', '--epochs', '4', '--seed', '3',
                                           '--save-model', str(path)))
    capsys.readouterr()
    resumed = pytorch_mnist_convnet.main(run(data_dir, '--resume', str(path)))
    out, err = capsys.readouterr()
    assert_same_run(whole, resumed)
    assert epoch_lines(out) == lines[2:]  # epochs 3 and 4, as the uninterrupted run printed them
    assert f'Going on with the run in {path}: epoch 3 of 4' in err
    saved = torch.load(path, weights_only=True)  # saved back to the same file, at its end
    assert saved['resume']['epoch'] == 4 and saved['resume']['weights'] is None  # not the weights twice


@pytest.mark.numerics
def test_the_optimizer_state_goes_on_too(data_dir, tmp_path, monkeypatch, capsys):
    """A learner's SGD with momentum: the momentum buffers are part of the run. Fails when --resume starts
    them again from zero."""
    monkeypatch.setattr(torch.optim, 'SGD', functools.partial(torch.optim.SGD, momentum=0.9))
    whole = pytorch_mnist.main(run(data_dir, '--epochs', '3'))
    path = tmp_path / 'momentum.pt'
    with monkeypatch.context() as patch:
        stop_at_step(pytorch_mnist, patch, 15)
        with pytest.raises(stops.Interrupted):
            pytorch_mnist.main(run(data_dir, '--epochs', '3', '--save-model', str(path)))
    assert_same_run(whole, pytorch_mnist.main(run(data_dir, '--resume', str(path))))
    capsys.readouterr()


@pytest.mark.numerics
def test_a_finished_run_goes_on_with_more_epochs(data_dir, tmp_path, capsys):
    whole = pytorch_mnist.main(run(data_dir, '--epochs', '5'))
    path = tmp_path / 'dense.pt'
    pytorch_mnist.main(run(data_dir, '--epochs', '2', '--save-model', str(path)))
    again = pytorch_mnist.main(run(data_dir, '--resume', str(path), '--epochs', '5', '--save-model',
                                   str(tmp_path / 'longer.pt')))
    assert_same_run(whole, again)
    assert torch.load(path, weights_only=True)['resume']['epoch'] == 2  # --save-model named another file
    capsys.readouterr()


@pytest.mark.numerics
def test_a_stopped_run_of_five_nets_goes_on_exactly(data_dir, tmp_path, monkeypatch, capsys):
    """--seeds with dropout (final): each net's batch order and dropout generator are part of the run. Fails
    when --resume puts back one batch order for all the nets, or the dropout generators as they were at the
    start, or the mean accuracy without each net's and the vote's."""
    five = ['--net', 'final', '--epochs', '3', '--seeds', '1', '2', '3', '4', '5']
    whole = pytorch_mnist_convnet.main(run(data_dir, *five))
    out = capsys.readouterr().out
    path = tmp_path / 'five.pt'
    with monkeypatch.context() as patch:
        stop_at_step(pytorch_mnist_convnet, patch, 15)  # batch 5 of epoch 2 (10 batches an epoch)
        with pytest.raises(stops.Interrupted, match='in epoch 2/3 at batch 4/10'):
            pytorch_mnist_convnet.main(run(data_dir, *five, '--save-model', str(path)))
    capsys.readouterr()
    resumed = pytorch_mnist_convnet.main(run(data_dir, '--resume', str(path)))
    resumed_out, err = capsys.readouterr()
    assert resumed[2] == whole[2]
    assert len(whole[2]['per_net']) == 5
    for (name, x), y in zip(whole[0].state_dict().items(), resumed[0].state_dict().values()):
        assert torch.equal(x, y), name
    assert epoch_lines(resumed_out) == epoch_lines(out)[1:]  # epochs 2 and 3, as the whole run printed them
    assert resumed_out.splitlines()[-7:] == out.splitlines()[-7:]  # each seed, the vote, the mean
    assert f'Going on with the run in {path}: epoch 2 of 3' in err
    saved = torch.load(path, weights_only=True)
    assert saved['seeds'] == [1, 2, 3, 4, 5] and saved['resume']['weights'] is None  # not the weights twice
    with pytest.raises(SystemExit):  # another set of nets is another run
        pytorch_mnist_convnet.main(run(data_dir, '--resume', str(path), '--seeds', '1', '2', '--epochs', '4'))
    assert f'error: argument --seeds: the run in {path} has --seeds 1 2 3 4 5' in capsys.readouterr().err


@pytest.fixture
def saved_run(data_dir, tmp_path, capsys):
    path = tmp_path / 'simple.pt'
    pytorch_mnist_convnet.main(run(data_dir, '--epochs', '1', '--save-model', str(path)))
    capsys.readouterr()
    return path


@pytest.mark.parametrize('extra,message', [
    (('--net', 'relu'), 'argument --net: the run in {} has --net simple'),
    (('--batch-size', '5'), 'argument --batch-size: the run in {} has --batch-size 10'),
    (('--dataset', 'fashion-mnist'), 'argument --dataset: the run in {} has --dataset mnist'),
    (('--lr', '0.2'), 'argument --lr: the run in {} has --lr 0.1'),
    (('--extend_data',), 'argument --extend_data: the run in {} has no --extend_data'),
    (('--epochs', '1'), 'argument --epochs: the run in {} has done 1 epochs of 1; give --epochs N with N above 1'),
    (('--load-model', 'x.pt'), 'argument --resume: not allowed with --load-model'),
    (('--seeds', '1', '2'), 'argument --seeds: the run in {} has no --seeds'),
])
def test_flags_that_contradict_the_saved_run_are_usage_errors(data_dir, saved_run, extra, message, capsys):
    with pytest.raises(SystemExit) as stop:
        pytorch_mnist_convnet.main(run(data_dir, '--resume', str(saved_run), *extra))
    assert stop.value.code == 2
    assert f'error: {message.format(saved_run)}' in capsys.readouterr().err


def test_flags_that_agree_with_the_saved_run_are_fine(data_dir, saved_run, capsys):
    _, _, history = pytorch_mnist_convnet.main(run(data_dir, '--resume', str(saved_run), '--net', 'simple',
                                                   '--lr', '0.1', '--epochs', '2'))
    assert len(history['accuracy']) == 2


def test_a_saved_run_that_no_longer_fits_the_net_is_one_line(data_dir, saved_run, tmp_path):
    edited = torch.load(saved_run, weights_only=True)
    edited['resume']['weights'] = {**edited['state_dict'], '0.weight': torch.zeros(30, 1, 5, 5)}
    torch.save(edited, tmp_path / 'edited.pt')
    with pytest.raises(stops.UserError, match=r'--resume: the saved run does not fit this net or optimizer, '
                                               r'edited since\? \(.*size mismatch.*\); start a new run'):
        pytorch_mnist_convnet.main(run(data_dir, '--resume', str(tmp_path / 'edited.pt'), '--epochs', '2'))


def test_the_picture_cannot_take_the_place_of_the_run_it_goes_on_with(data_dir, tmp_path, capsys):
    odd = tmp_path / 'run.png'  # a model saved under a picture's name
    pytorch_mnist.main(run(data_dir, '--epochs', '1', '--save-model', str(odd)))
    with pytest.raises(SystemExit):
        pytorch_mnist.main(run(data_dir, '--resume', str(odd), '--epochs', '2', '--plot', str(odd)))
    assert f'argument --plot: {odd} is also the --resume path; the picture would replace the model' in \
        capsys.readouterr().err
    assert torch.load(odd, weights_only=True)['resume']['epoch'] == 1  # the run is still there


def test_a_file_without_a_run_says_so_and_old_files_still_load(data_dir, saved_run, tmp_path, capsys):
    old = torch.load(saved_run, weights_only=True)
    del old['resume']  # as --save-model wrote it before --resume existed
    torch.save(old, tmp_path / 'old.pt')
    with pytest.raises(stops.UserError, match=r'--resume .*old\.pt: it holds weights only'):
        pytorch_mnist_convnet.main(run(data_dir, '--resume', str(tmp_path / 'old.pt')))
    for path in (tmp_path / 'old.pt', saved_run):
        _, _, history = pytorch_mnist_convnet.main(run(data_dir, '--load-model', str(path)))
        assert len(history['accuracy']) == 1
    with pytest.raises(stops.UserError, match="it holds the 'simple' net of pytorch_mnist_convnet.py; run "
                                               r'pytorch_mnist_convnet.py --resume'):
        pytorch_mnist.main(run(data_dir, '--resume', str(saved_run)))
    capsys.readouterr()


@pytest.mark.numerics
def test_cifar_runs_go_on_too_and_classify_colour_images(cifar_dir, skip_md5, tmp_path, monkeypatch, capsys):
    """cifar_convnet.py has no --dataset or --extend_data flag; its run is resumed all the same. Then its
    saved model classifies a colour image, and --plot shows colour filters."""
    import matplotlib.figure
    from PIL import Image

    import cifar_convnet
    argv = ['--data-dir', str(cifar_dir), '--device', 'cpu', '--limit', '40', '--no-progress']
    whole = cifar_convnet.main(argv + ['--epochs', '2'])
    path = tmp_path / 'cifar.pt'
    cifar_convnet.main(argv + ['--epochs', '1', '--save-model', str(path)])
    assert_same_run(whole, cifar_convnet.main(argv + ['--resume', str(path), '--epochs', '2']))
    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', lambda self, f, **k: figures.append(self))
    picture = tmp_path / 'red.png'
    Image.new('RGB', (50, 40), (220, 20, 20)).save(picture)
    capsys.readouterr()
    cifar_convnet.main(['--device', 'cpu', '--load-model', str(path), '--predict', str(picture)])
    assert capsys.readouterr().out.splitlines()[1].startswith(f'{picture}: ')
    cifar_convnet.main(argv + ['--load-model', str(path), '--plot', str(tmp_path / 'p.png')])
    filters = [image for ax in figures[-1].subfigs[2].axes for image in ax.get_images()]
    assert len(filters) == 10 and filters[0].get_array().shape == (5, 5, 3)  # final's 10 colour filters


def test_a_resume_point_is_made_only_when_a_model_file_will_be_written(data_dir, tmp_path, monkeypatch, capsys):
    """Copying every weight and the optimizer's state after every epoch is for a file: fails when a run that
    saves nothing still makes resume points, or a saving run misses one (the start, and each epoch's end)."""
    from plumbing import saving
    made = []
    real = saving.resume_point
    monkeypatch.setattr(saving, 'resume_point', lambda *a: made.append(1) or real(*a))
    pytorch_mnist.main(run(data_dir, '--epochs', '3'))
    assert made == []
    pytorch_mnist.main(run(data_dir, '--epochs', '3', '--save-model', str(tmp_path / 'm.pt')))
    assert len(made) == 4


def test_the_history_is_plain_numbers_as_a_file_keeps_it(data_dir, tmp_path, capsys):
    """Several nets with --book: each net's accuracy, the vote's and the validation accuracy are lists of
    numbers in the history main returns, and torch.load(weights_only=True) reads the saved one back equal.
    Fails when a float subclass (or anything else torch would not load) is left in it."""
    path = tmp_path / 'm.pt'
    _, _, history = pytorch_mnist.main(run(data_dir, '--epochs', '2', '--book', '--seeds', '1', '2',
                                           '--save-model', str(path)))
    assert all(type(a) is float for a in history['accuracy'] + history['vote'] + history['validation']['accuracy'])
    assert len(history['per_net']) == 2 and len(history['validation']['per_net'][1]) == 2
    assert torch.load(path, weights_only=True)['resume']['history'] == history


def own_loop(stop_at=None, leave_at=None):
    """A train() a learner wrote: plain SGD over common.Batches. stop_at: Ctrl-C in that epoch; leave_at: `break`
    after that epoch. Without either it walks range() instead of modes.epochs."""
    import common
    from plumbing import modes

    def train(args, model, data, loss_fn):
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
        batches = common.Batches(data, args.batch_size, args.seed, args.epochs, progress=False)
        history = {'loss': [], 'accuracy': []}
        walk = modes.epochs(args, model, optimizer, batches, history) if leave_at else range(1, args.epochs + 1)
        for epoch in walk:
            for images, labels in batches:
                if epoch == stop_at:
                    raise KeyboardInterrupt
                pytorch_mnist.sgd_step(model, loss_fn, optimizer, images, labels)
            history['loss'].append(0.0)
            history['accuracy'].append(common.test_accuracy(model, data))
            if epoch == leave_at:
                break
        return history
    return train


def test_a_loop_that_leaves_modes_epochs_early_saves_where_it_left(data_dir, tmp_path, monkeypatch, capsys):
    """Early stopping (`break` after epoch 2 of 3): the saved resume point is epoch 2's, as the weights are. Fails
    when the point of epoch 1 is saved with epoch 2's weights (--resume would train epoch 2 again)."""
    monkeypatch.setattr(pytorch_mnist, 'train', own_loop(leave_at=2))
    path = tmp_path / 'm.pt'
    _, _, history = pytorch_mnist.main(run(data_dir, '--epochs', '3', '--save-model', str(path)))
    point = torch.load(path, weights_only=True)['resume']
    assert point['epoch'] == 2 and point['history'] == history and len(history['accuracy']) == 2


def test_a_loop_without_modes_epochs_saves_the_weights_on_a_stop(data_dir, tmp_path, monkeypatch, capsys):
    """A stop in epoch 2 of a learner's own loop: the weights are saved (without what --resume needs), then the
    usual `interrupted` and 130. Fails when such a loop's stop saves nothing."""
    monkeypatch.setattr(pytorch_mnist, 'train', own_loop(stop_at=2))
    path = tmp_path / 'm.pt'
    with pytest.raises(SystemExit) as stopped:
        stops.run_as_command(lambda: pytorch_mnist.main(run(data_dir, '--epochs', '3', '--save-model', str(path))))
    assert stopped.value.code == 130
    saved = torch.load(path, weights_only=True)
    assert 'state_dict' in saved and 'resume' not in saved
    assert capsys.readouterr().err.splitlines()[-2:] == [f'Model saved to {path}', 'interrupted']


def test_resume_with_a_loop_without_modes_epochs_keeps_the_saved_run(data_dir, tmp_path, monkeypatch, capsys):
    """Such a loop cannot put a saved run back: it is one line, exit status 1, and the file is as it was. Fails
    when the run trained anew is saved over the run the user asked to go on with."""
    path = tmp_path / 'm.pt'
    pytorch_mnist.main(run(data_dir, '--epochs', '2', '--save-model', str(path)))
    before = path.read_bytes()
    monkeypatch.setattr(pytorch_mnist, 'train', own_loop())
    with pytest.raises(stops.UserError, match=r'--resume .*: this train\(\) walks its epochs without modes.epochs'):
        pytorch_mnist.main(run(data_dir, '--resume', str(path), '--epochs', '3'))
    assert path.read_bytes() == before
