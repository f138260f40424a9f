"""The scripts in examples/ run end to end with tiny settings and print a sane
metric. scikit-learn and statsmodels are optional (the ``examples`` extra):
each test skips when its package is missing."""
from __future__ import annotations

import importlib.util
import math
import pathlib
import re

import numpy as np
import pytest

import rnncore as rc

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    """Import examples/<name>.py as a module (examples/ is not a package)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_rnncore_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_threads():
    old = rc.get_num_threads()
    yield
    rc.set_num_threads(old)


def test_digits_classification(capsys, restore_threads):
    pytest.importorskip("sklearn", reason="scikit-learn is an optional extra: pip install 'rnncore[examples]'")
    example = _load("digits_classification")
    result = example.main(["--epochs", "2", "--seed", "0", "--threads", "1", "--quiet"])
    out = capsys.readouterr().out
    m = re.search(r"^test accuracy: ([0-9.]+) \((\d+)/(\d+)\) after 2 epochs in [0-9.]+ s$", out, re.M)
    assert m, out
    accuracy = float(m.group(1))
    assert accuracy == pytest.approx(result["accuracy"], abs=1e-4)
    assert int(m.group(3)) == 450                     # a quarter of the 1797 images
    assert 0.3 < accuracy <= 1.0, out                 # chance is 0.1


def test_sunspots_forecast(capsys, restore_threads, tmp_path):
    sm = pytest.importorskip("statsmodels.api",
                             reason="statsmodels is an optional extra: pip install 'rnncore[examples]'")
    example = _load("sunspots_forecast")
    result = example.main(["--epochs", "10", "--seed", "0", "--threads", "1", "--quiet",
                           "--plot", str(tmp_path / "sunspots.png")])
    out = capsys.readouterr().out
    rmse = {}
    for key, pattern in (("lstm", r"LSTM\(32\) \+ Linear"), ("naive", r"naive \(last value\)"),
                         ("seasonal", r"seasonal naive \(11 years back\)"),
                         ("ar", r"linear AR\(20\), least squares")):
        m = re.search(rf"^  {pattern} +RMSE +([0-9.]+|nan|inf)$", out, re.M)
        assert m, f"no RMSE line for {key}:\n{out}"
        rmse[key] = float(m.group(1))
        assert rmse[key] == pytest.approx(result[key], abs=0.01)
    std = float(np.std(sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()))
    assert math.isfinite(rmse["lstm"]) and 0 < rmse["lstm"] < std, (rmse, std)
    # the baselines are computed from the data alone: fixed figures
    assert rmse["naive"] == pytest.approx(32.79, abs=0.01)
    assert rmse["seasonal"] == pytest.approx(37.73, abs=0.01)
