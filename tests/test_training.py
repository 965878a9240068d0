"""The training loop in each script, its step, and the CUDA-graph step's decisions (made on the CPU here)."""
import functools
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cifar_convnet
import common
import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import cuda_graph, flags, modes, stops

SCRIPTS = [pytorch_mnist, pytorch_mnist_convnet, cifar_convnet]


def quick(data_dir, *extra):
    return ['--data-dir', str(data_dir), '--epochs', '1', '--limit', '100', '--no-progress', *extra]


# ---- the step and the loop live in the script -------------------------------------------------

@pytest.mark.numerics
@pytest.mark.parametrize('script', SCRIPTS, ids=lambda s: s.__name__)
def test_sgd_step_takes_one_step_and_returns_the_loss(script):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    expected_loss = F.cross_entropy(model(x), y)
    expected_loss.backward()
    expected = [b - 0.5 * p.grad for b, p in zip(before, model.parameters())]
    model.zero_grad()

    loss = script.sgd_step(model, F.cross_entropy, optimizer, x, y)
    assert not loss.requires_grad and loss.item() == pytest.approx(expected_loss.item())
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e)


def test_the_loop_runs_the_scripts_own_step(data_dir, monkeypatch, capsys):
    """A learner who edits sgd_step in the script changes training: the loop calls it once per batch."""
    calls = []
    step = pytorch_mnist_convnet.sgd_step

    def counted(*args):
        calls.append(len(args[-1]))
        return step(*args)

    monkeypatch.setattr(pytorch_mnist_convnet, 'sgd_step', counted)
    pytorch_mnist_convnet.main(quick(data_dir, '--epochs', '2', '--limit', '95', '--device', 'cpu'))
    assert calls == [10] * 9 + [5] + [10] * 9 + [5]


def test_interrupt_says_where_and_saves(data_dir, tmp_path, monkeypatch, capsys):
    """Ctrl-C during the 7th step of epoch 2: six steps of it finished, the model is saved."""
    path = tmp_path / 'm.pt'
    calls = []
    step = pytorch_mnist.sgd_step

    def interrupted_at_call_17(*args):
        calls.append(1)
        if len(calls) == 17:  # epoch 1 has 10 batches of 10
            raise KeyboardInterrupt
        return step(*args)

    monkeypatch.setattr(pytorch_mnist, 'sgd_step', interrupted_at_call_17)
    with pytest.raises(stops.Interrupted) as info:
        pytorch_mnist.main(quick(data_dir, '--epochs', '3', '--device', 'cpu', '--save-model', str(path)))
    accuracy = capsys.readouterr().out.splitlines()[1].split()[3].rstrip(',')
    assert str(info.value) == f'interrupted in epoch 2/3 at batch 6/10; last test accuracy: {accuracy} after epoch 1'
    assert torch.load(path, weights_only=True)['net'] == 'nielsen'


@pytest.mark.numerics
def test_loss_is_averaged_over_images_not_batches(data_dir, capsys):
    """95 images in batches of 10: the last batch of 5 weighs half as much as the others."""
    _, _, history = pytorch_mnist_convnet.main(quick(data_dir, '--limit', '95', '--batch-size', '10'))
    torch.manual_seed(1)
    model = pytorch_mnist_convnet.simple().to(memory_format=torch.channels_last)
    data = common.load_data('mnist', data_dir, torch.device('cpu'), limit=95)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    total = 0.0
    for images, labels in common.Batches(data, 10, seed=1, epochs=1, progress=False):
        total += pytorch_mnist_convnet.sgd_step(model, F.cross_entropy, optimizer, images, labels).item() * len(labels)
    assert history['loss'][0] == pytest.approx(total / 95, rel=1e-5)


# ---- recipes ---------------------------------------------------------------------------------

def recipe(script, *argv):
    args = modes.parse_args(flags.make_parser('', script.NETS, script.RECIPES), list(argv))
    return args.epochs, args.lr, args.wd


def test_each_net_defaults_to_its_published_recipe():
    assert recipe(pytorch_mnist_convnet, '--net', 'simple') == (60, 0.1, 0.0)
    assert recipe(pytorch_mnist_convnet, '--net', '2conv') == (60, 0.1, 0.0)
    assert recipe(pytorch_mnist_convnet, '--net', 'relu') == (60, 0.03, 0.00005)
    assert recipe(pytorch_mnist_convnet, '--net', 'final') == (40, 0.005, 0.0)
    assert recipe(pytorch_mnist) == (30, 3.0, 0.0)


def test_help_shows_every_published_command(capsys):
    with pytest.raises(SystemExit):
        pytorch_mnist_convnet.main(['--help'])
    out = capsys.readouterr().out
    for command, accuracy in (('python pytorch_mnist_convnet.py', '0.9891'),
                              ('python pytorch_mnist_convnet.py --net 2conv', '0.9913'),
                              ('python pytorch_mnist_convnet.py --net relu', '0.993'),
                              ('python pytorch_mnist_convnet.py --net relu --extend_data', '0.9943'),
                              ('python pytorch_mnist_convnet.py --net final --extend_data', '0.9964')):
        assert re.search(rf'^ +{re.escape(command)} +#.* {re.escape(accuracy)}$', out, re.M), command
    assert '0.03 for relu' in out and '0.00005 for relu' in out and '40 for final' in out


# ---- the CUDA graph: its decisions, on the CPU ------------------------------------------------

def plain(model, loss_fn, optimizer, images, labels):
    return pytorch_mnist_convnet.sgd_step(model, loss_fn, optimizer, images, labels)


def test_off_cuda_the_step_is_the_scripts_own():
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = cuda_graph.graphed_on_cuda(plain, model, F.cross_entropy, optimizer)
    assert isinstance(step, functools.partial) and step.func is plain


@pytest.fixture
def cpu_graph(monkeypatch):
    """CudaGraphStep with its three CUDA calls replaced by plain steps: every decision it makes runs as on
    CUDA, and `actions` lists them."""
    actions = []
    decide = cuda_graph.CudaGraphStep.next_action

    def next_action(self, images):
        action, reason = decide(self, images)
        actions.append(action)
        return action, reason

    def eager(self, images, labels):
        return self.sgd_step(self.model, self.loss_fn, self.optimizer, images, labels)

    monkeypatch.setattr(cuda_graph.CudaGraphStep, 'next_action', next_action)
    monkeypatch.setattr(cuda_graph.CudaGraphStep, 'record', lambda self, images, labels: 'a recording')
    monkeypatch.setattr(cuda_graph.CudaGraphStep, 'warm_up', eager)
    monkeypatch.setattr(cuda_graph.CudaGraphStep, 'replay', eager)
    return actions


def run_steps(optimizer_for, steps, after_step=lambda step, i: None, batch_sizes=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 3))
    optimizer = optimizer_for(model)
    step = cuda_graph.CudaGraphStep(plain, model, F.cross_entropy, optimizer)
    for i in range(steps):
        n = batch_sizes[i] if batch_sizes else 10
        step(torch.randn(n, 4), torch.randint(0, 3, (n,)))
        after_step(step, i)
    return step


def where(actions, action):
    return [i for i, a in enumerate(actions) if a == action]


def test_graph_warm_up_then_record_then_replay(cpu_graph, capsys):
    sizes = [10] * 9 + [5]
    step = run_steps(lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), 10, batch_sizes=sizes)
    assert cpu_graph == ['warm-up'] * 3 + ['record'] + ['replay'] * 5 + ['eager']
    assert step.off_because is None and capsys.readouterr().err == ''


def test_graph_replays_the_first_batchs_shape(cpu_graph):
    """A smaller batch right after the warm-up is taken as it is; the full batches are recorded."""
    run_steps(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), 6, batch_sizes=[10, 10, 10, 5, 10, 10])
    assert cpu_graph == ['warm-up'] * 3 + ['eager', 'record', 'replay']


def test_graph_recorded_anew_when_a_scheduler_changes_the_lr(cpu_graph, capsys):
    schedulers = []

    def optimizer_for(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        schedulers.append(torch.optim.lr_scheduler.StepLR(optimizer, step_size=25, gamma=0.5))
        return optimizer

    step = run_steps(optimizer_for, 60, after_step=lambda step, i: schedulers[0].step())
    assert where(cpu_graph, 'warm-up') == [0, 1, 2, 25, 50]  # a real step before each new recording
    assert where(cpu_graph, 'record') == [3, 26, 51]
    assert step.off_because is None and capsys.readouterr().err == ''


def test_graph_recorded_anew_when_the_model_changes_mode(cpu_graph):
    def toggle(step, i):
        if i == 29:
            step.model.eval()  # dropout off: the recorded step would still drop

    run_steps(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), 40, after_step=toggle)
    assert where(cpu_graph, 'record') == [3, 31]


def test_graph_recorded_anew_when_a_layer_is_frozen(cpu_graph):
    def freeze(step, i):
        if i == 29:
            step.model[0].weight.requires_grad_(False)

    run_steps(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), 40, after_step=freeze)
    assert where(cpu_graph, 'record') == [3, 31]


def test_graph_off_when_the_lr_changes_every_step(cpu_graph, capsys):
    schedulers = []

    def optimizer_for(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        schedulers.append(torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.99))
        return optimizer

    step = run_steps(optimizer_for, 30, after_step=lambda step, i: schedulers[0].step())
    assert cpu_graph == ['warm-up'] * 3 + ['record'] + ['eager'] * 26
    assert step.off_because and step.graph is None
    [line] = capsys.readouterr().err.splitlines()
    assert line == ('CUDA graph off: the optimizer settings or the model mode changed within 20 steps of the '
                    'last recording; training goes on with plain steps')


def test_graph_off_for_an_optimizer_that_cannot_be_recorded(cpu_graph, capsys):
    step = run_steps(lambda m: torch.optim.Adam(m.parameters(), lr=0.01), 8)
    assert cpu_graph == ['warm-up'] * 3 + ['eager'] * 5
    assert step.off_because == ('Adam with capturable=False cannot be recorded '
                                '(create it with Adam(..., capturable=True))')
    assert capsys.readouterr().err.startswith('CUDA graph off: Adam with capturable=False')


def test_which_optimizers_can_be_recorded():
    params = [nn.Parameter(torch.zeros(2))]
    assert cuda_graph.why_not_recordable(torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)) is None
    assert cuda_graph.why_not_recordable(torch.optim.Adam(params, capturable=True)) is None
    assert 'capturable=False' in cuda_graph.why_not_recordable(torch.optim.AdamW(params))
    assert cuda_graph.why_not_recordable(torch.optim.Adagrad(params)) == \
        'Adagrad is not known to be safe to record (only SGD and optimizers with capturable=True are)'


def test_graph_off_when_recording_fails(cpu_graph, monkeypatch, capsys):
    def fails(self, images, labels):
        try:  # as torch.cuda.graph reports a .item() in the step: its own error on top of the real one
            raise RuntimeError('CUDA error: operation not permitted when stream is capturing\n'
                               'CUDA kernel errors might be asynchronously reported at some other API call')
        except RuntimeError:
            raise RuntimeError('CUDA error: operation failed due to a previous error during capture')

    monkeypatch.setattr(cuda_graph.CudaGraphStep, 'record', fails)
    step = run_steps(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), 6)
    assert cpu_graph == ['warm-up'] * 3 + ['record'] + ['eager'] * 2
    assert step.steps == 6 and step.graph is None
    assert capsys.readouterr().err == ('CUDA graph off: the step could not be recorded (CUDA error: operation '
                                       'not permitted when stream is capturing); training goes on with plain '
                                       'steps\n')


def test_baked_in_settings_see_what_a_replay_would_miss():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    lr = torch.tensor(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    recorded = cuda_graph.baked_in_settings(model, optimizer)

    def same():
        return cuda_graph.same_settings(cuda_graph.baked_in_settings(model, optimizer), recorded)

    lr.fill_(0.05)  # a tensor is read where it lies: a replay sees the new value
    assert same()
    optimizer.param_groups[0]['lr'] = torch.tensor(0.05)  # another tensor: the recording reads the old one
    assert not same()
    optimizer.param_groups[0]['lr'] = lr
    optimizer.param_groups[0]['momentum'] = 0.5
    assert not same()
    optimizer.param_groups[0]['momentum'] = 0.9
    model.eval()
    assert not same()
    model.train()
    model[0].bias.requires_grad_(False)
    assert not same()
    model[0].bias.requires_grad_(True)
    assert same()
