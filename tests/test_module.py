"""The module base and registry (rnncore.module): train()/eval() switch
dropout, the registry fills itself and save/load reads it, and the
package's modules import each other without a circle."""
from __future__ import annotations

import ast
import os

import numpy as np
import pytest

import rnncore as rc
from rnncore.module import Module, registered

PKG = os.path.dirname(rc.__file__)


def _top_level_imports(path):
    """The rnncore modules a file imports at module level (relative imports)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def _local_imports(path):
    """Relative imports inside functions: (function, module)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    out.append((fn.name, node.module))
    return out


def test_package_modules_import_without_a_circle():
    mods = {f[:-3] for f in os.listdir(PKG) if f.endswith(".py")}
    graph = {m: _top_level_imports(os.path.join(PKG, m + ".py")) & mods for m in mods}
    state = {}

    def visit(m, path):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", f"import circle: {' -> '.join(path + [m])}"
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, path + [m])
        state[m] = "done"

    for m in sorted(mods - {"__init__"}):
        visit(m, [])


@pytest.mark.parametrize("name", ["io", "layers", "model", "modules", "diagnostics", "module",
                                  "torch_interop", "optim", "losses", "callbacks"])
def test_no_function_local_imports_of_the_package(name):
    assert _local_imports(os.path.join(PKG, name + ".py")) == []


def test_registry_holds_every_public_module_class():
    reg = registered()
    public = {n for n in rc.__all__ if isinstance(getattr(rc, n), type) and issubclass(getattr(rc, n), Module)}
    assert public == {"LSTM", "GRU", "RNN", "LeakyRNN", "SkipRNN", "ClockworkRNN", "IndRNN", "Linear", "Dropout",
                      "Sequential"}
    for n in public:
        assert reg[n] is getattr(rc, n)
    assert not any(n.startswith("_") for n in reg)


def test_train_and_eval_switch_dropout_in_forward():
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    drop = rc.Dropout(0.5, seed=1)
    assert drop.training and drop.eval() is drop and not drop.training
    state = drop._rng.bit_generator.state
    y, mask = drop.forward(x)
    assert y is x and mask is None and drop._rng.bit_generator.state == state  # no mask drawn
    drop.train()
    y, mask = drop.forward(x)
    assert mask is not None and not np.array_equal(y, x)

    lstm = rc.LSTM(4, 6, num_layers=2, dropout=0.5, seed=2)
    y_inf, _ = lstm(x)
    y_tr, _, _ = lstm.forward(x)
    assert not np.allclose(y_tr, y_inf)  # masks between the layers
    lstm.eval()
    state = lstm._rng.bit_generator.state
    y_ev, _, tape = lstm.forward(x)
    np.testing.assert_array_equal(y_ev, y_inf)
    assert lstm._rng.bit_generator.state == state
    dx, _ = lstm.backward(tape, np.ones_like(y_ev))
    assert dx.shape == x.shape


def test_train_takes_a_bool():
    with pytest.raises(TypeError, match="mode must be a bool"):
        rc.Linear(2, 3).train("yes")


def test_sequential_modes_reach_every_layer_and_fit_leaves_them():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((8, 5, 2)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    model = rc.Sequential(rc.LSTM(2, 4, seed=0), rc.Dropout(0.3, seed=0), rc.Linear(4, 1, seed=0))
    assert model.eval() is model
    assert not model.training and not any(l.training for l in model.layers)
    state = model.layers[1]._rng.bit_generator.state
    model.fit(X, Y, epochs=1, batch_size=4, seed=0, progress=False)
    assert model.layers[1]._rng.bit_generator.state != state  # trained with dropout
    assert not model.training and not any(l.training for l in model.layers)  # left as found
    model.train()
    assert all(l.training for l in model.layers)


class Scale(Module):
    """A user's module: y = s * x, one parameter."""

    def __init__(self, features, *, dtype="float32"):
        self.features = features
        self.params = {"s": np.ones(features, dtype)}
        self.grads = {"s": np.zeros(features, dtype)}

    def get_config(self):
        return {"features": self.features, "dtype": self.params["s"].dtype.name}

    def __call__(self, x):
        return x * self.params["s"]

    def forward(self, x):
        return self(x), x

    def backward(self, tape, dy):
        self.grads["s"] += (dy * tape).reshape(-1, self.features).sum(axis=0)
        return dy * self.params["s"]


def test_a_users_module_registers_itself_and_saves(tmp_path):
    assert registered()["Scale"] is Scale
    model = rc.Sequential(rc.GRU(2, 3, seed=0), Scale(3), rc.Linear(3, 1, seed=0))
    model.params["1.s"][...] = [0.5, 2.0, -1.0]
    x = np.random.default_rng(4).standard_normal((2, 6, 2)).astype(np.float32)
    model.save(tmp_path / "m.npz")
    back = rc.load(tmp_path / "m.npz")
    assert isinstance(back.layers[1], Scale)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_a_user_class_does_not_shadow_rnncore_by_name(tmp_path):
    class LSTM(rc.LSTM):  # same name as rnncore's
        pass

    assert registered()["LSTM"] is rc.LSTM
    with pytest.raises(TypeError, match="name is taken"):
        rc.Sequential(LSTM(2, 3), rc.Linear(3, 1)).save(tmp_path / "m.npz")


def test_hidden_grads_is_the_layers_dh_and_touches_nothing():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((4, 7, 3))
    lstm = rc.LSTM(3, 5, num_layers=2, dropout=0.4, dtype=np.float64, seed=1)
    model = rc.Sequential(lstm, rc.Dropout(0.5, seed=2), rc.Linear(5, 1, dtype=np.float64, seed=3))
    dy = rng.standard_normal((7, 4, 5))
    rngs = [lstm._rng.bit_generator.state, model.layers[1]._rng.bit_generator.state]
    got = model.hidden_grads(X, dy=dy)
    assert list(got) == [0] and sorted(got[0]) == [0, 1]
    assert all(not np.any(g) for g in model.grads.values())  # scratch gradients only
    assert model.training and all(l.training for l in model.layers)
    assert [lstm._rng.bit_generator.state, model.layers[1]._rng.bit_generator.state] == rngs
    # the same pass by hand, in eval mode
    lstm.eval()
    _, _, tape = lstm.forward(np.ascontiguousarray(X.transpose(1, 0, 2)))
    dh: dict = {}
    lstm.backward(tape, dy, dh=dh)
    for k in (0, 1):
        np.testing.assert_array_equal(got[0][k], dh[k])
    Y = rng.standard_normal((4, 1))
    with_y = model.hidden_grads(X, Y, loss="mse")
    assert with_y[0][1].shape == (7, 4, 5) and np.all(np.any(with_y[0][1][-1] != 0, axis=-1))  # every row's readout


def test_hidden_grads_checks_its_arguments():
    X = np.zeros((2, 3, 1), np.float32)
    model = rc.Sequential(rc.GRU(1, 2), rc.Linear(2, 1))
    with pytest.raises(ValueError, match="exactly one"):
        model.hidden_grads(X)
    with pytest.raises(ValueError, match="exactly one"):
        model.hidden_grads(X, np.zeros((2, 1)), dy=np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match=r"dy must be \(3, 2, 2\)"):
        model.hidden_grads(X, dy=np.zeros((2, 3, 2)))
    with pytest.raises(TypeError, match="no recurrent layer"):
        rc.Sequential(rc.Linear(1, 1)).hidden_grads(X, dy=np.zeros((3, 2, 1)))
    assert rc.Sequential(rc.Linear(1, 1)).last_recurrent is None and model.last_recurrent == 0
