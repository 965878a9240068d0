"""The CPU's threads (plumbing/speed.py): the policy and --threads, what the Device line says, the threads a
step really trains with, and --seeds' groups of nets trained side by side in threads of their own: in
parallel, each net as its seed trains it alone, the same numbers however the threads are scheduled, and
--resume going on exactly."""
import threading
import time

import pytest
import torch

import common
import pytorch_mnist
import pytorch_mnist_convnet
from plumbing import speed, stacked, stops
from test_errors import usage_error
from test_resume import assert_same_run, epoch_lines, run
from test_seeds import float64, twenty_steps  # noqa: F401 -- fixture
from test_stops import stop_at_step

CPU = torch.device('cpu')


@pytest.fixture
def cores(monkeypatch):
    """A machine of two cores where nobody chose a thread count: torch's own count is 2 (restored after),
    OMP_NUM_THREADS and MKL_NUM_THREADS are unset. Without it, a test would see the count CI or a developer
    set (OMP_NUM_THREADS=1 runs every net in one group)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(speed, 'THREADS_AT_START', 2)
    for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        monkeypatch.delenv(name, raising=False)
    yield 2
    torch.set_num_threads(before)


def test_the_policy_one_thread_per_net_at_small_batches_unless_the_user_chose(cores, monkeypatch):
    """Fails when the default splits a batch-10 step over every core, when a larger batch does not get them,
    or when --threads, OMP_NUM_THREADS or torch.set_num_threads are not what decides."""
    assert speed.choose_threads(None, 10, CPU) == speed.Threads(1)
    assert speed.choose_threads(None, speed.SMALL_BATCH, CPU).per_group == 1
    assert speed.choose_threads(None, speed.SMALL_BATCH + 1, CPU) == \
        speed.Threads(2, why=f'batches above {speed.SMALL_BATCH} images')
    assert speed.choose_threads(3, 10, CPU) == speed.Threads(3, why='--threads 3')
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    assert speed.choose_threads(None, 10, CPU) == speed.Threads(2, why='OMP_NUM_THREADS=2')
    assert speed.choose_threads(1, 10, CPU).per_group == 1  # the flag wins over the variable
    monkeypatch.delenv('OMP_NUM_THREADS')
    monkeypatch.setattr(speed, 'THREADS_AT_START', 4)  # someone called torch.set_num_threads(2) since
    assert speed.choose_threads(None, 10, CPU) == speed.Threads(2, why='torch.set_num_threads(2)')


def test_several_nets_are_split_into_one_group_per_core(cores):
    assert speed.choose_threads(None, 10, CPU, nets=5) == speed.Threads(1, groups=2, nets=5)
    assert speed.choose_threads(None, 10, CPU, nets=2).groups == 2
    assert speed.choose_threads(None, 10, CPU, nets=5, groups=1).groups == 1   # a --resume run keeps its own
    assert speed.choose_threads(None, 10, torch.device('cuda'), nets=5).groups == 1  # elsewhere: one stack
    assert speed.group_sizes(5, 2) == [3, 2] and speed.spans([3, 2]) == [(0, 3), (3, 5)]
    assert speed.spans(speed.group_sizes(3, 3)) == [(0, 1), (1, 2), (2, 3)]
    assert str(speed.Threads(1)) == '1 thread per net'
    assert str(speed.Threads(1, groups=2, nets=2)) == '1 thread per net, 2 nets side by side'
    assert str(speed.Threads(1, groups=2, nets=5)) == '1 thread per group of nets (3 + 2 nets)'
    assert str(speed.Threads(4, why='--threads 4')) == '4 threads per net (--threads 4)'


def threads_seen(script, monkeypatch):
    """Spy on the script's step, the batches prepared between two steps, and the test pass: the thread count
    torch has while each runs."""
    seen = {'step': set(), 'between': set(), 'test': set()}
    step, test, batch = script.sgd_step, common.test_accuracy, common.Batches.batch
    monkeypatch.setattr(script, 'sgd_step', lambda *args: seen['step'].add(torch.get_num_threads()) or step(*args))
    monkeypatch.setattr(common.Batches, 'batch', lambda self, idx: (
        self.done and seen['between'].add(torch.get_num_threads())) or batch(self, idx))
    monkeypatch.setattr(common, 'test_accuracy',
                        lambda *args: seen['test'].add(torch.get_num_threads()) or test(*args))
    return seen


@pytest.mark.parametrize('extra,step_threads,device_line', [
    ((), 1, 'Device: cpu, 1 thread per net'),
    (('--threads', '2'), 2, 'Device: cpu, 2 threads per net (--threads 2)'),
    (('--batch-size', '50'), 2, 'Device: cpu, 2 threads per net (batches above 32 images)'),
])
def test_a_step_trains_with_the_policys_threads_and_the_test_pass_with_every_core(
        cores, data_dir, monkeypatch, capsys, extra, step_threads, device_line):
    """Fails when the policy is not applied to the step, when the count goes back to every core between two
    steps (torch's spare threads would spin on the other core until the next step), when the test pass does not
    get every core back, when torch's count is left changed after the run, or when the Device line does not say
    the policy."""
    seen = threads_seen(pytorch_mnist, monkeypatch)
    pytorch_mnist.main(twenty_steps(data_dir, *extra))
    assert seen == {'step': {step_threads}, 'between': {step_threads}, 'test': {2}}
    assert torch.get_num_threads() == 2
    assert capsys.readouterr().out.splitlines()[0] == device_line


def test_threads_the_user_set_before_the_script_are_kept(cores, data_dir, monkeypatch, capsys):
    torch.set_num_threads(1)  # as a learner's edit, or OMP_NUM_THREADS=1, would
    seen = threads_seen(pytorch_mnist, monkeypatch)
    pytorch_mnist.main(twenty_steps(data_dir))
    assert seen == {'step': {1}, 'between': {1}, 'test': {1}}
    assert capsys.readouterr().out.splitlines()[0] == 'Device: cpu, 1 thread per net (torch.set_num_threads(1))'


@pytest.mark.parametrize('extra,message', [
    (('--threads', '0'), 'argument --threads: must be at least 1, got 0'),
    (('--threads', 'two'), "argument --threads: invalid integer value: 'two'"),
    (('--threads', '2', '--load-model', 'm.pt'), 'argument --load-model: it tests a saved model and trains nothing, '
                                                 'so --threads would be ignored; drop it'),
])
def test_threads_flag_errors(extra, message, capsys):
    assert usage_error(capsys, ['--limit', '10', *extra], pytorch_mnist).endswith(f'error: {message}')


def test_threads_on_a_gpu_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(common, 'choose_device', lambda name: torch.device('cuda'))
    assert usage_error(capsys, ['--limit', '10', '--threads', '2'], pytorch_mnist).endswith(
        "error: argument --threads: it sets the CPU's threads, and this run trains on cuda; drop it, or add "
        "--device cpu")


def test_the_groups_train_side_by_side_in_threads_of_their_own(cores, data_dir, monkeypatch, capsys):
    """Each step of each group meets the other group's step of the same batch at a barrier: were the groups
    trained one after the other, or in one thread, the first to arrive would wait there in vain (fails after
    60 s). Fails too when a group is left out, or when a group's step runs with more than one thread."""
    meet = threading.Barrier(2, timeout=60)
    calls = []
    step = pytorch_mnist_convnet.sgd_step

    def spy(model, *args):
        calls.append((tuple(model.seeds), threading.get_ident(), torch.get_num_threads()))
        meet.wait()
        return step(model, *args)

    monkeypatch.setattr(pytorch_mnist_convnet, 'sgd_step', spy)
    model, _, _ = pytorch_mnist_convnet.main(twenty_steps(data_dir, '--seeds', '1', '2', '3'))
    assert isinstance(model, stacked.NetGroups)
    assert len(calls) == 40  # 20 steps, each of two groups
    assert {seeds for seeds, _, _ in calls} == {(1, 2), (3,)}
    threads = {seeds: {ident for s, ident, _ in calls if s == seeds} for seeds in ((1, 2), (3,))}
    assert threads[(1, 2)] == {threading.get_ident()} and len(threads[(3,)]) == 1
    assert threads[(1, 2)] != threads[(3,)]
    assert {count for _, _, count in calls} == {1}
    assert capsys.readouterr().out.splitlines()[0] == 'Device: cpu, 1 thread per group of nets (2 + 1 nets)'


@pytest.mark.numerics
@pytest.mark.parametrize('script,net,book', [(pytorch_mnist_convnet, 'final', False),
                                             (pytorch_mnist_convnet, 'relu', True),
                                             (pytorch_mnist, 'nielsen', False)],
                         ids=['final-dropout', 'book-relu-l2', 'nielsen'])
def test_each_net_of_a_group_is_the_net_its_seed_trains_alone(cores, data_dir, float64, script, net, book, capsys):
    """As test_seeds' test of one stack, with the nets in two groups in two threads. Fails when a group gets
    another's slice of the batch, dropout generators or optimizer settings, or the whole model's L2 term
    (--book: book.cost remade for each group's weights)."""
    extra = ['--net', net] + (['--book'] if book else [])
    model, _, _ = script.main(twenty_steps(data_dir, *extra, '--seeds', '1', '2', '5'))
    assert len(model.groups) == 2
    for seed, grouped in zip([1, 2, 5], model.nets()):
        alone, _, _ = script.main(twenty_steps(data_dir, *extra, '--seed', str(seed)))
        for (name, expected), actual in zip(alone.state_dict().items(), grouped.state_dict().values()):
            torch.testing.assert_close(actual, expected, msg=f'seed {seed}, {name}')
    capsys.readouterr()


@pytest.mark.numerics
def test_the_numbers_do_not_depend_on_how_the_threads_are_scheduled(cores, data_dir, monkeypatch, capsys):
    """The same run, with the worker thread's group held back at random steps and then the calling thread's:
    the same weights and lines to the last digit. Fails when the groups share anything they write (the
    optimizer's settings or state, a generator, the loss's sum) in an order the scheduling decides."""
    argv = twenty_steps(data_dir, '--net', 'final', '--seeds', '1', '2', '3')
    plain = pytorch_mnist_convnet.main(argv)
    plain_lines = epoch_lines(capsys.readouterr().out)
    step = pytorch_mnist_convnet.sgd_step
    for held_back in ((3,), (1, 2)):
        def late(model, *args, held_back=held_back):
            if tuple(model.seeds) == held_back and torch.rand((), generator=lateness).item() < 0.5:
                time.sleep(0.003)
            return step(model, *args)
        lateness = torch.Generator().manual_seed(len(held_back))
        monkeypatch.setattr(pytorch_mnist_convnet, 'sgd_step', late)
        assert_same_run(plain, pytorch_mnist_convnet.main(argv))
        assert epoch_lines(capsys.readouterr().out) == plain_lines


@pytest.mark.numerics
def test_a_stopped_run_of_groups_goes_on_exactly_with_its_own_groups(cores, data_dir, tmp_path, monkeypatch, capsys):
    """Stopped in epoch 2, then resumed where torch has one thread (another machine, OMP_NUM_THREADS=1): the
    saved run's two groups come back, and the run ends as the whole one did. Fails when the groups are not
    saved (two stacks' weights would not fit one) or the dropout generators are not each net's."""
    five = ['--net', 'final', '--epochs', '3', '--seeds', '1', '2', '3', '4', '5']
    whole = pytorch_mnist_convnet.main(run(data_dir, *five))
    out = capsys.readouterr().out
    path = tmp_path / 'five.pt'
    with monkeypatch.context() as patch:
        stop_at_step(pytorch_mnist_convnet, patch, 25)  # epoch 2 (two groups: 20 steps an epoch)
        with pytest.raises(stops.Interrupted, match='in epoch 2/3'):
            pytorch_mnist_convnet.main(run(data_dir, *five, '--save-model', str(path)))
    assert torch.load(path, weights_only=True)['resume']['groups'] == 2
    capsys.readouterr()
    torch.set_num_threads(1)
    resumed = pytorch_mnist_convnet.main(run(data_dir, '--resume', str(path)))
    assert len(resumed[0].groups) == 2
    assert resumed[2] == whole[2]
    for (name, x), y in zip(whole[0].state_dict().items(), resumed[0].state_dict().values()):
        assert torch.equal(x, y), name
    assert epoch_lines(capsys.readouterr().out) == epoch_lines(out)[1:]


def test_a_group_that_fails_stops_the_run_with_its_error(cores, data_dir, monkeypatch, capsys):
    """An error in the worker thread's group reaches the caller (here: a diverged net's UserError), after the
    calling thread's group has ended its step."""
    step = pytorch_mnist_convnet.sgd_step

    def fails(model, *args):
        if tuple(model.seeds) == (3,):
            raise stops.UserError('group 2 failed')
        return step(model, *args)

    monkeypatch.setattr(pytorch_mnist_convnet, 'sgd_step', fails)
    with pytest.raises(stops.UserError, match='group 2 failed'):
        pytorch_mnist_convnet.main(twenty_steps(data_dir, '--seeds', '1', '2', '3'))
    capsys.readouterr()


def test_an_optimizer_part_shares_the_state_and_follows_the_settings():
    """A learner's momentum, --resume's load_state_dict (a new state) and a learning-rate schedule reach each
    group's part of the optimizer. Fails when a part keeps a state of its own, or the settings it was made
    with."""
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([a, b], lr=0.1, momentum=0.9)
    part = speed.optimizer_part(optimizer, [b])
    assert [p is b for p in part.param_groups[0]['params']] == [True]
    b.grad = torch.ones(2)
    part.step()
    assert list(optimizer.state) == [b] and torch.equal(b.detach(), torch.full((2,), 0.9))
    optimizer.load_state_dict(optimizer.state_dict())  # as --resume does: a new state, new settings
    optimizer.param_groups[0]['lr'] = 1.0                # as a schedule does
    part.follow(optimizer)
    part.step()  # momentum 0.9 * 1 + gradient 1 = 1.9, times lr 1.0
    assert torch.allclose(b.detach(), torch.full((2,), 0.9 - 1.9))
    assert torch.equal(optimizer.state[b]['momentum_buffer'], torch.full((2,), 1.9))
    assert torch.equal(a.detach(), torch.ones(2))  # not the part's
