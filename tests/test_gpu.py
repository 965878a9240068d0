"""CUDA only (run where a GPU is present): the graphed training step takes the same steps as plain ones,
under a stateful optimizer and a learning-rate schedule too."""
import functools

import pytest
import torch
import torch.nn.functional as F

import common
import pytorch_mnist_convnet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def trained(data, graphed, optimizer_for, schedule_for=None, steps=50):
    """The relu net after `steps` steps at batch 10, taken through the CUDA graph or plainly; the scheduler,
    if any, steps after every step. Returns the parameters and the step object."""
    torch.manual_seed(0)
    model = pytorch_mnist_convnet.relu().cuda()
    optimizer = optimizer_for(model)
    scheduler = schedule_for(optimizer) if schedule_for else None
    args = (pytorch_mnist_convnet.sgd_step, model, F.cross_entropy, optimizer)
    step = common.CudaGraphStep(*args) if graphed else functools.partial(*args)
    batches = common.Batches(data, 10, seed=0, epochs=1, progress=False)
    taken = 0
    while taken < steps:
        for images, labels in batches:
            step(images, labels)
            if scheduler:
                scheduler.step()
            taken += 1
            if taken == steps:
                break
    torch.cuda.synchronize()
    return [p.detach().cpu() for p in model.parameters()], step


def assert_same_training(data, optimizer_for, schedule_for=None):
    eager, _ = trained(data, False, optimizer_for, schedule_for)
    graphed, step = trained(data, True, optimizer_for, schedule_for)
    for a, b in zip(eager, graphed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return step


@pytest.fixture(scope='module')
def cuda_data(data_dir):
    return common.load_data('mnist', data_dir, torch.device('cuda'), limit=95)  # 9 full batches and 5


def test_graph_with_weight_decay(cuda_data):
    step = assert_same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.03, weight_decay=5e-5))
    assert step.off is None and step.graph is not None


def test_graph_with_momentum(cuda_data):
    step = assert_same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9))
    assert step.off is None and step.graph is not None


def test_graph_with_a_step_lr_schedule(cuda_data):
    step = assert_same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
                                lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=24, gamma=0.5))
    assert step.off is None and step.recorded_at == 48  # recorded at step 3, anew at 24 and 48


def test_graph_off_for_a_schedule_that_changes_every_step(cuda_data, capsys):
    step = assert_same_training(cuda_data, lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
                                lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.98))
    assert step.off and 'CUDA graph off' in capsys.readouterr().err


def test_graph_with_capturable_adam(cuda_data):
    step = assert_same_training(cuda_data, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True))
    assert step.off is None and step.graph is not None


def test_graph_off_for_plain_adam(cuda_data, capsys):
    step = assert_same_training(cuda_data, lambda m: torch.optim.Adam(m.parameters(), lr=1e-3))
    assert 'capturable=False' in step.off
    assert capsys.readouterr().err.startswith('CUDA graph off: Adam with capturable=False')


def test_script_on_cuda(data_dir, capsys):
    _, _, history = pytorch_mnist_convnet.main(['--device', 'cuda', '--net', 'final', '--data-dir', str(data_dir),
                                                '--epochs', '3', '--no-progress'])
    assert history['loss'][-1] < history['loss'][0]
    assert 'CUDA graph off' not in capsys.readouterr().err
