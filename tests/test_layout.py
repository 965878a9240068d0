"""How the code is laid out, read from its source: imports that flow one way, main() as the recipe's straight line,
train() as the loop. Each test fails when a change puts a mode back into a script or an import against the flow."""
import ast
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPTS = ('pytorch_mnist.py', 'pytorch_mnist_convnet.py', 'cifar_convnet.py')
PLUMBING = sorted(path.stem for path in (ROOT / 'plumbing').glob('*.py') if path.stem != '__init__')


def module_name(path):
    path = Path(path).relative_to(ROOT)
    return '.'.join(path.with_suffix('').parts)


def project_modules():
    return {module_name(path): path for path in [*ROOT.glob('*.py'), *(ROOT / 'plumbing').glob('*.py')]
            if path.stem != '__init__'}


def imports(path, modules):
    """The project's modules that the file imports, at the top or inside a function (a lazy import)."""
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f'{node.module}.{alias.name}' for alias in node.names)
    return found & modules.keys()


def import_graph():
    modules = project_modules()
    return {name: imports(path, modules) for name, path in modules.items()}


def reached(graph, start):
    seen, todo = set(), [start]
    while todo:
        for name in graph[todo.pop()]:
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_no_module_imports_itself_back_directly_or_through_others():
    graph = import_graph()
    circles = sorted(name for name in graph if name in reached(graph, name))
    assert not circles, circles


def test_common_imports_nothing_from_the_plumbing():
    assert not {name for name in import_graph()['common'] if name.startswith('plumbing')}


def test_parsing_flags_imports_no_pictures_saving_book_or_stacked():
    assert not reached(import_graph(), 'plumbing.flags') & {'plumbing.pictures', 'plumbing.saving', 'book',
                                                            'plumbing.stacked'}


def function(script, name):
    tree = ast.parse((ROOT / script).read_text())
    return next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)


def decision_points(node):
    return sum(isinstance(n, (ast.If, ast.IfExp, ast.For, ast.While, ast.BoolOp, ast.Try, ast.comprehension))
               for n in ast.walk(node))


def plumbing_calls(node):
    """Calls of a function of a plumbing module: `speed.fast_step(...)`, `modes.epochs(...)`."""
    return [f'{n.func.value.id}.{n.func.attr}' for n in ast.walk(node) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
            and n.func.value.id in PLUMBING]


@pytest.mark.parametrize('script', SCRIPTS)
def test_main_is_a_straight_line_of_the_recipe(script):
    assert decision_points(function(script, 'main')) <= 3


@pytest.mark.parametrize('script', SCRIPTS)
def test_train_is_the_loop_with_two_calls_into_the_plumbing_and_returns_the_history(script):
    train = function(script, 'train')
    assert sorted(plumbing_calls(train)) == ['modes.epochs', 'speed.fast_step']
    returns = [n for n in ast.walk(train) if isinstance(n, ast.Return)]
    assert [ast.unparse(n.value) for n in returns] == ['history']
