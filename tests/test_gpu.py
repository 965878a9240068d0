"""CUDA only (run where a GPU is present): the graphed training step takes exactly the eager steps."""
import pytest
import torch
import torch.nn.functional as F

import common
import pytorch_mnist_convnet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def trained(data, graphed):
    torch.manual_seed(0)
    model = pytorch_mnist_convnet.relu().cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, weight_decay=0.00005)
    total = torch.zeros((), device='cuda')
    if graphed:
        step = common.graphed_step(model, F.cross_entropy, optimizer, data, 10, total)
    else:
        step = lambda idx: common.sgd_step(model, F.cross_entropy, optimizer, data, idx, total)  # noqa: E731
    loss = common.train_epoch(step, total, data, 10, torch.Generator().manual_seed(0))
    return loss, [p.detach().cpu() for p in model.parameters()]


def test_graphed_step_equals_eager_steps(data_dir):
    data = common.load_data('mnist', data_dir, torch.device('cuda'), limit=95)  # 9 full batches and 5
    eager_loss, eager = trained(data, graphed=False)
    graph_loss, graph = trained(data, graphed=True)
    assert graph_loss == pytest.approx(eager_loss, rel=1e-4)
    for a, b in zip(eager, graph):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_script_on_cuda(data_dir, capsys):
    _, _, history = pytorch_mnist_convnet.main(['--device', 'cuda', '--net', 'final', '--data-dir', str(data_dir),
                                                '--epochs', '3', '--no-progress'])
    assert history['loss'][-1] < history['loss'][0]
