"""Property-based fuzzing (hypothesis) of every public entry point.

Covered: the layers (rc.LSTM, GRU, RNN, LeakyRNN, SkipRNN, ClockworkRNN:
``__call__``, ``forward``, ``backward``), the model (rc.Sequential:
``predict``, ``fit`` for one step, ``evaluate``) and the private bindings
(``rnncore._core.forward_f32/f64``, ``backward_f32/f64``, ``gemm_f32/f64``:
valid argument tuples captured from a real call, one element mutated at a
time), plus sizes that cannot be allocated.

The contract checked (DESIGN.md, "never a crash and never a silent wrong
answer"): every call either

* returns a correct result: for valid input, the same as the same call on a
  clean C-contiguous float copy of its arguments, the shapes of the contract,
  and (for the layers) the float64 numpy reference of tests/_reference.py on
  every batch row whose input is finite; or
* raises a clear Python exception: ValueError, TypeError, MemoryError,
  OverflowError or KeyError (and rc.NonFiniteError, the documented error of
  a non-finite training step), whose message names the argument when the
  argument is a public one -- never RuntimeError, SystemError or
  AttributeError, and never a crash.

The loops live in the package tests/_fuzz (common.py, then one module per
entry point: layers, model, bindings, gemm, sizes; child.py runs one). Every
fuzz loop runs in a child process (this file run as a script with
``--fuzz-child NAME``), under an address-space limit so that nothing can
exhaust the machine's memory: a segfault, an abort or a hang becomes a failed
test that shows the last case started (a JSON line that ``--replay`` runs
again), instead of killing pytest.

Examples: few by default (the whole file runs in well under a minute, with
``derandomize=True`` so CI is reproducible); many, randomised, with

    RNNCORE_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz.py -s

Replay one case printed by a failure:

    python tests/test_fuzz.py --replay layer '{"cell": "lstm", ...}'
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # workers and --import-mode=importlib
    sys.path.insert(0, HERE)
from _fuzz.common import LONG  # noqa: E402


# ---------------------------------------------------------------------------
# The parent side: run a fuzz loop in a child process
# ---------------------------------------------------------------------------

def _child_env() -> dict:
    import rnncore
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(rnncore.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, HERE] + [p for p in [env.get("PYTHONPATH")] if p])
    # hypothesis keeps a cache in ./.hypothesis; not in the source tree
    env.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                   os.path.join(tempfile.gettempdir(), "rnncore-fuzz-hypothesis"))
    return env


def _run_child(name: str, *extra: str, timeout: float | None = None) -> str:
    """Run fuzz loop ``name`` in a child; fail with the last case on a crash."""
    if timeout is None:
        timeout = None if LONG else 240
    cmd = [sys.executable, os.path.abspath(__file__), "--fuzz-child", name, *extra]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env())
        out, err, code, hung = proc.stdout, proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        code, hung = None, True
    elapsed = time.perf_counter() - t0
    last = None
    done = None
    for line in out.splitlines():
        if line.startswith("CASE "):
            last = line[5:]
        elif line.startswith("DONE "):
            done = line[5:]
    if code == 0 and done is not None:
        print(f"[fuzz {name}] {done} in {elapsed:.1f} s")
        return done
    # a failed check exits with status 1 and says why; anything else is a crash
    failed = code == 1 and ("Traceback" in err or "distinct failure" in err) and not _SANITIZER.search(err)
    if hung:
        what = f"hung (no answer in {timeout} s)"
    elif code is not None and code < 0:
        what = f"crashed with signal {-code}"
    elif not failed:
        what = f"crashed (exit status {code})"
    else:
        what = f"failed (exit status {code})"
    msg = [f"fuzz child {name!r} {what}."]
    if last is not None and not failed:
        msg.append(f"Last case started (replay with: python {os.path.relpath(__file__)} "
                   f"--replay {name} '<case>'):\n{last}")
    san = _sanitizer_report(err)
    if san:
        msg.append("sanitizer report (first frames):\n" + san)
    report = [line for line in out.splitlines() if not line.startswith(("CASE ", "DONE "))]
    if report:
        msg.append("stdout (tail, without the case lines):\n" + "\n".join(report)[-6000:])
    err = "\n".join(line[:400] for line in err.splitlines())  # C++ frames can be very long
    msg.append("stderr (tail):\n" + err[-(30000 if LONG else 8000):])
    pytest.fail("\n".join(msg), pytrace=False)


_SANITIZER = re.compile(r"runtime error: |ERROR: AddressSanitizer|Sanitizer:DEADLYSIGNAL|"
                        r"SUMMARY: (Address|UndefinedBehavior)Sanitizer")


def _sanitizer_report(err: str, frames: int = 8) -> str:
    """The sanitizer lines of a child's stderr, each with its first stack frames."""
    lines = err.splitlines()
    out = []
    for i, line in enumerate(lines):
        if _SANITIZER.search(line):
            out.append(line[:400])
            out += [ln[:300] for ln in lines[i + 1:i + 1 + frames] if ln.lstrip().startswith("#")]
    return "\n".join(out[:200])


def test_fuzz_layers():
    _run_child("layer")


def test_fuzz_model():
    _run_child("model")


def test_fuzz_bindings_forward_backward():
    _run_child("binding")


def test_fuzz_bindings_gemm():
    _run_child("gemm")


def test_huge_sizes_raise_memory_or_value_error():
    # a fixed list: after a crash the child goes on with the next case, and
    # every crash is reported
    crashes, start = [], 0
    while True:
        try:
            _run_child("huge", str(start))
            break
        except pytest.fail.Exception as e:
            text = str(e)
            m = re.search(r'"index": (\d+)', text.split("Last case started")[-1]) \
                if "Last case started" in text else None
            crashes.append(text)
            if m is None:  # failed (not crashed) at the end of the list
                break
            start = int(m.group(1)) + 1
    if crashes:
        pytest.fail("\n\n".join(crashes), pytrace=False)


def test_huge_layer_fails_before_allocating():
    _run_child("huge_rss")


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--fuzz-child":
    from _fuzz.child import _child_main
    sys.exit(_child_main(sys.argv[2], *sys.argv[3:]))

if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "--replay":
    from _fuzz.child import FUZZ, _child_setup
    _child_setup()
    case = json.loads(sys.argv[3])
    case.pop("kind", None)
    FUZZ[sys.argv[2]][1](case)
    print("case passed")
