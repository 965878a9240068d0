"""The two backprop scripts: the hand-checkable numbers, and hand-written chain rule == autograd.

    python -m pytest -q tests/test_backprop.py
"""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the scripts live in the repository root, not in a package
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import backprop_manual_calculation as manual  # noqa: E402
import backprop_pytorch  # noqa: E402

EXPECTED = """\
w_l1 = 1.58
b_l1 = -0.14
w_l2 = 2.45
b_l2 = -0.11
a_l2 = 0.8506
updated_w_l1 = 1.5814
updated_b_l1 = -0.1383
updated_w_l2 = 2.4529
updated_b_l2 = -0.1062
updated_a_l2 = 0.8515
""".splitlines()

LINEAR = 'Linear(in_features=1, out_features=1, bias=True)'

SETTINGS = [  # non-default flags, on which both scripts must print the same lines
    ('--a0', '0.3', '--target', '0', '--w-l1', '-1.2', '--lr', '0.5'),
    ('--a0', '-2', '--target', '0.25', '--b-l1', '0.7', '--w-l2', '-0.4', '--b-l2', '1.5', '--lr', '2'),
]


def start(script, *flags):
    return subprocess.Popen([sys.executable, script, *flags], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def printed_lines(process):
    """The printed lines; for backprop_pytorch.py the topology lines are checked and cut off first."""
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    lines = stdout.splitlines()
    if process.args[1] == 'backprop_pytorch.py':  # args = [python, script, *flags]
        topology, lines = '\n'.join(lines[:-len(EXPECTED)]), lines[-len(EXPECTED):]
        assert topology.startswith('network topology: ')
        assert f'(hidden_layer): {LINEAR}' in topology
        assert f'(output_layer): {LINEAR}' in topology
    return lines


@pytest.fixture(scope='module')
def pytorch_lines():
    """backprop_pytorch.py's lines for the default and each of SETTINGS.

    The runs start at once and overlap: each spends seconds importing torch, most of this file's time.
    """
    processes = {flags: start('backprop_pytorch.py', *flags) for flags in [(), *SETTINGS]}
    return {flags: printed_lines(process) for flags, process in processes.items()}


def test_manual_script_prints_the_numbers():
    assert printed_lines(start('backprop_manual_calculation.py')) == EXPECTED


def test_pytorch_script_prints_the_numbers(pytorch_lines):
    assert pytorch_lines[()] == EXPECTED


def test_manual_script_needs_no_torch():
    assert 'import torch' not in (ROOT / 'backprop_manual_calculation.py').read_text()


@pytest.mark.numerics
def test_manual_gradients_equal_autograd():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a0, w_l1, b_l1, w_l2, b_l2 = rng.uniform(-3, 3, size=5)
        target = rng.uniform(0, 1)
        settings = (a0, w_l1, b_l1, w_l2, b_l2, target)
        expected = torch.tensor(backprop_pytorch.autograd_gradients(*settings), dtype=torch.float64)
        actual = torch.tensor(manual.gradients(*settings), dtype=torch.float64)
        torch.testing.assert_close(actual, expected, msg=lambda m: f'{settings}: {m}')


@pytest.mark.numerics
@pytest.mark.parametrize('flags', SETTINGS)
def test_scripts_agree_on_other_settings(flags, pytorch_lines):
    assert printed_lines(start('backprop_manual_calculation.py', *flags)) == pytorch_lines[flags]


BAD_FLAGS = [('--lr', 'nan'), ('--lr', '0'), ('--lr', '-0.1'), ('--w-l1', 'inf'), ('--target', '-inf'),
             ('--a0', 'nan')]


@pytest.mark.parametrize('flags', BAD_FLAGS)
def test_bad_flag_value_is_an_argparse_error(flags):
    result = subprocess.run([sys.executable, 'backprop_manual_calculation.py', *flags], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert f'argument {flags[0]}:' in result.stderr


@pytest.mark.parametrize('flags', BAD_FLAGS)
def test_pytorch_script_rejects_the_same_values(flags, capsys):
    # in-process: the flags are parsed by the same parse_args, and a subprocess would re-import torch
    with pytest.raises(SystemExit) as exit_info:
        backprop_pytorch.main(list(flags))
    assert exit_info.value.code == 2
    assert f'argument {flags[0]}:' in capsys.readouterr().err
