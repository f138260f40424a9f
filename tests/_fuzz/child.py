"""The child process's entry: run one fuzz loop, or replay one case."""
from __future__ import annotations

import sys
import time
import traceback

from .bindings import _fuzz_binding, run_binding_case
from .common import _COUNTS, _FAILURES, CHILD_AS_LIMIT
from .gemm import _fuzz_gemm, run_gemm_case
from .layers import _DEFAULT_MIN_WORK, _fuzz_layer, run_layer_case
from .model import _fuzz_model, run_model_case
from .sizes import _fuzz_huge, _fuzz_huge_rss, _huge_cases

# ---------------------------------------------------------------------------
# Child process entry
# ---------------------------------------------------------------------------

def run_huge_case(c: dict) -> None:
    try:
        _huge_cases()[c["name"]]()
    except (MemoryError, ValueError, OverflowError, TypeError) as e:
        print(f"raised {type(e).__name__}: {e}")


FUZZ = {"layer": (_fuzz_layer, run_layer_case), "model": (_fuzz_model, run_model_case),
        "binding": (_fuzz_binding, run_binding_case), "gemm": (_fuzz_gemm, run_gemm_case),
        "huge": (_fuzz_huge, run_huge_case), "huge_rss": (_fuzz_huge_rss, None)}


def _under_asan() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def _child_setup():
    import faulthandler
    import resource
    faulthandler.enable()  # a crash prints the Python stack too
    if not _under_asan():
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = CHILD_AS_LIMIT if hard == resource.RLIM_INFINITY else min(CHILD_AS_LIMIT, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    import rnncore  # noqa: F401
    from rnncore import _core
    _DEFAULT_MIN_WORK[0] = _core.min_work_per_thread()


def _child_main(name: str, *extra: str) -> int:
    _child_setup()
    t0 = time.perf_counter()

    def counts():
        return (f"examples={_COUNTS['examples']} calls={_COUNTS['cases']} "
                f"(returned {_COUNTS['returned']}, raised {_COUNTS['raised']}) "
                f"time={time.perf_counter() - t0:.1f}s")
    try:
        FUZZ[name][0](*(int(e) for e in extra))
    except BaseException:  # noqa: BLE001 - reported to the parent
        sys.stdout.flush()
        traceback.print_exc()
        print(f"COUNTS {counts()}", file=sys.stderr, flush=True)
        return 1
    if _FAILURES:
        for (cell, _), (case, msg) in _FAILURES.items():
            print(f"\n=== failure ({cell}); replay with --replay {name} '<case>':\n{case}\n{msg}",
                  file=sys.stderr)
        print(f"\n{len(_FAILURES)} distinct failure(s); COUNTS {counts()}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    print(f"DONE {counts()}", flush=True)
    return 0
