"""The package's import graph has no circle, counting every import statement that can run:
at module level and inside functions alike (a function-level import that closes a circle
works only by the luck of call order). Imports under ``if TYPE_CHECKING:`` never run and
are left out: ``tdfast/__init__`` names its lazily loaded exports there for type checkers."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info < (3, 11):
    pytest.skip("tomllib (Python 3.11+) reads pyproject.toml", allow_module_level=True)
import tomllib

REPO = Path(__file__).resolve().parents[1]


def package_modules() -> dict[str, Path]:
    """Module name -> file, for every package pyproject.toml ships (through its package-dir)."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup["package-dir"]
    modules: dict[str, Path] = {}
    for package in setup["packages"]:
        root, rest = max(((k, package[len(k):]) for k in dirs if package == k or package.startswith(k + ".")),
                         key=lambda kr: len(kr[0]))
        folder = REPO / dirs[root] / Path(*rest.strip(".").split(".")) if rest else REPO / dirs[root]
        assert folder.is_dir(), f"pyproject lists package {package} at {folder}, which is not a folder"
        for f in folder.glob("*.py"):
            modules[package if f.stem == "__init__" else f"{package}.{f.stem}"] = f
    return modules


def _runnable_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``tree`` imports anywhere; ``from a.b import c`` counts
    as a.b.c when that is a module, else as a.b (never a's ``__init__`` implicitly)."""
    out: set[str] = set()
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in _runnable_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            targets = [f"{parent}.{a.name}" if f"{parent}.{a.name}" in known else parent for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != module)
    return out


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    return {m: imported(ast.parse(f.read_text()), m, f.stem == "__init__", known) for m, f in modules.items()}


def test_finder_sees_function_level_and_relative_imports():
    known = {"p", "p.a", "p.b", "p.c", "p.d"}
    tree = ast.parse("import p.a\ndef f():\n    from p.b import thing\n    from . import c\n"
                     "if TYPE_CHECKING:\n    from .d import X\nelse:\n    from p import d\n")
    assert imported(tree, "p.x", False, known) == {"p.a", "p.b", "p.c", "p.d"}
    assert imported(ast.parse("if TYPE_CHECKING:\n    import p.a\n"), "p.x", False, known) == set()
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert {"tdfast.retrieval.retriever", "tdfast.model.checkpoint", "tdfast.benchmarks.timing",
            "tdfast.experiments.spurious"} <= set(graph)
    assert find_cycles(graph) == []


def test_the_model_does_not_import_inference_training_or_the_annexes():
    """The network and its checkpoint format stand alone: inference, training, the benchmarks
    and the experiments build on them, never the reverse."""
    graph = import_graph()
    above = ("tdfast.retrieval", "tdfast.training", "tdfast.benchmarks", "tdfast.experiments", "tdfast.cli")
    leaks = {m: sorted(t for t in targets if t.startswith(above))
             for m, targets in graph.items() if m.startswith("tdfast.model")}
    assert {m: t for m, t in leaks.items() if t} == {}


def test_presets_and_protocols_load_without_torch_or_numpy():
    """``tdfast/presets.py`` is the one table of presets and protocol names: ``tdfast train
    --help`` and ``tdfast eval --help`` list them without loading PyTorch (nor NumPy, which the
    scorers load when a split is scored). A fresh interpreter, so no earlier test's imports count."""
    code = ("import json, sys, tdfast.presets as p; print(json.dumps([sorted(p.PRESETS), list(p.PROTOCOLS), "
            "'torch' in sys.modules, 'numpy' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [["charades", "qd-detr", "qvhighlights", "tiny"], ["qvhighlights", "charades"],
                               False, False]


def test_every_protocol_names_a_scorer_of_tdfast_eval():
    import tdfast.eval
    from tdfast.presets import DEFAULT_PROTOCOL, PROTOCOLS

    assert DEFAULT_PROTOCOL == "qvhighlights"
    assert {n: p.scorer for n, p in PROTOCOLS.items()} == {"qvhighlights": "eval_submission",
                                                           "charades": "eval_charades"}
    for p in PROTOCOLS.values():
        assert callable(getattr(tdfast.eval, p.scorer))
