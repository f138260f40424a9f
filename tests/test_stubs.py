"""The extension's stub file (rnncore/_core.pyi) against the built module:
the same names, each function's parameters by name, order and default as
pybind11 reports them, and CellKind's members with their numbers. A binding
added, renamed or given another argument fails here until the stub follows."""
from __future__ import annotations

import ast
import os

import pytest

import rnncore
from rnncore import _core

STUB = os.path.join(os.path.dirname(rnncore.__file__), "_core.pyi")


def _stub():
    with open(STUB) as f:
        return ast.parse(f.read())


def _params(fn: ast.FunctionDef):
    """(name, has default) of a stub function's parameters, self left out."""
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args]
    defaults = [False] * (len(names) - len(a.defaults)) + [True] * len(a.defaults)
    pairs = list(zip(names, defaults))
    if a.kwonlyargs:  # pybind11 writes the marker as a parameter "*"
        pairs += [("*", False)] + [(p.arg, d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return pairs[1:] if pairs and pairs[0][0] == "self" else pairs


def _split_top(s):
    """s split at the commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _bound_params(obj):
    """(name, has default) from the signature line pybind11 writes into a docstring."""
    line = obj.__doc__.strip().splitlines()[0]
    inner = line[line.index("(") + 1:line.rindex(") ->")]
    pairs = []
    for part in _split_top(inner):
        name = part.split(":")[0].strip()
        pairs.append((name, "=" in part))
    return pairs[1:] if pairs and pairs[0][0] == "self" else pairs


def _public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def test_stub_names_match_the_module():
    tree = _stub()
    stub = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stub.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stub.add(node.target.id)
    assert stub == _public(_core), (f"only in the stub: {sorted(stub - _public(_core))}; "
                                    f"only in the module: {sorted(_public(_core) - stub)}")


def _functions():
    return [n for n in _stub().body if isinstance(n, ast.FunctionDef)]


@pytest.mark.parametrize("fn", _functions(), ids=lambda f: f.name)
def test_stub_function_parameters_match(fn):
    assert _params(fn) == _bound_params(getattr(_core, fn.name)), fn.name


def test_stub_class_methods_match():
    classes = [n for n in _stub().body if isinstance(n, ast.ClassDef) and n.name != "CellKind"]
    assert {c.name for c in classes} == {"Prepared_f32", "Prepared_f64", "CellSpec"}
    for cls in classes:
        methods = {m.name: m for m in cls.body if isinstance(m, ast.FunctionDef)}
        bound = {n for n in vars(getattr(_core, cls.name)) if not n.startswith("_") or n in methods}
        assert set(methods) == bound, cls.name
        for name, method in methods.items():
            assert _params(method) == _bound_params(getattr(getattr(_core, cls.name), name)), \
                f"{cls.name}.{name}"


def test_stub_cell_kinds_match():
    cls = next(n for n in _stub().body if isinstance(n, ast.ClassDef) and n.name == "CellKind")
    stub = {a.targets[0].id: a.value.value for a in cls.body if isinstance(a, ast.Assign)}
    assert stub == {name: int(kind) for name, kind in _core.CellKind.__members__.items()}
