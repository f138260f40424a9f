"""Run-time configuration: BLAS binding, thread count, instruction set.

One thread setting governs both rnncore's OpenMP team and its BLAS products
(OpenBLAS runs single-threaded; rnncore splits large products over its own
team, so only one pool of threads is ever busy), following
scikit-learn's convention: ``None`` the default (all cores, or
``OMP_NUM_THREADS`` when set), ``-1`` all cores, ``-k`` all but ``k - 1``,
``0`` an error.
"""
from __future__ import annotations

import glob
import numbers
import os
import sys
import threading

from . import _core

__all__ = ["set_num_threads", "get_num_threads", "show_runtime", "runtime_info",
           "available_isas", "get_isa", "tuning_info"]

_lock = threading.Lock()
_threads: int | None = None


def _bind_blas() -> str:
    """Bind OpenBLAS from the scipy-openblas32 wheel; return the reason if not."""
    try:
        import scipy_openblas32 as sob
    except ImportError as e:  # pragma: no cover - a runtime dependency
        return f"scipy_openblas32 not importable ({e})"
    libdir = sob.get_lib_dir()
    name = sob.get_library()
    pattern = {"win32": f"{name}*.dll", "darwin": f"lib{name}*.dylib"}.get(sys.platform, f"lib{name}*.so*")
    candidates = sorted(glob.glob(os.path.join(libdir, pattern)))
    if not candidates:
        return f"no {pattern} in {libdir}"
    err = _core.bind_blas(candidates[0], "scipy_")
    return err


_blas_error = _bind_blas()


def _tune_malloc() -> str:
    """Keep glibc from trimming the heap after every call (see memory.hpp);
    RNNCORE_MALLOC=system leaves the allocator alone."""
    if os.environ.get("RNNCORE_MALLOC", "").lower() == "system":
        return "left alone (RNNCORE_MALLOC=system)"
    return _core.tune_malloc()


_malloc = _tune_malloc()

_CACHE_ENV = ("RNNCORE_L1_BYTES", "RNNCORE_L2_BYTES", "RNNCORE_L3_BYTES")
_UNITS = {"": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def _parse_bytes(name: str, text: str) -> int:
    """A cache size from the environment: bytes, or with a K/M/G suffix (binary)."""
    t = text.strip().upper()
    digits = t.rstrip("KMGIB")
    unit = t[len(digits):]
    if not digits.isdigit() or unit not in _UNITS or int(digits) <= 0:
        raise ValueError(f"{name} must be a positive size in bytes such as 1048576 or 1M, got {text!r}")
    return int(digits) * _UNITS[unit]


def _tune_from_env() -> None:
    """Apply RNNCORE_L1_BYTES / _L2_ / _L3_ (override the detected cache sizes,
    from which the kernels derive their blocks) and RNNCORE_GEMM (auto, own
    or blas: how the backward's large products are made)."""
    sizes = [os.environ.get(n, "").strip() for n in _CACHE_ENV]
    if any(sizes):
        _core.retune(*(_parse_bytes(n, v) if v else 0 for n, v in zip(_CACHE_ENV, sizes)))
    path = os.environ.get("RNNCORE_GEMM", "").strip().lower()
    if path:
        if path not in ("auto", "own", "blas"):
            raise ValueError(f"RNNCORE_GEMM must be 'auto', 'own' or 'blas', got {path!r}")
        _core.set_gemm_path(path)


_tune_from_env()


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << (shift - 4)) == 0:
            v = n / (1 << shift)
            return f"{v:g} {unit}"
    return f"{n} B"


def tuning_info() -> dict:
    """The cache sizes rnncore found (or was told) and the blocks it derived."""
    t = dict(_core.tuning())
    t["gemm_path"] = _core.gemm_path()
    t["gemm_choices"] = list(_core.gemm_choices())
    return t


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, _core.max_threads())


def set_num_threads(n: int | None = None) -> None:
    """Set the threads rnncore and its BLAS use.

    Parameters
    ----------
    n : int or None
        ``None`` for the default, ``-1`` for all cores, ``-k`` for all but
        ``k - 1``, a positive count otherwise. ``0`` is an error.
    """
    global _threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)):
        raise TypeError(f"n must be an int or None, got {type(n).__name__} {n!r}")
    n = None if n is None else int(n)
    if n == 0:
        raise ValueError("n must be a positive thread count, -1 (all cores) or None, got 0")
    if n is None:
        value = _default_threads()
    elif n < 0:
        value = _core.max_threads() + 1 + n
        if value < 1:
            raise ValueError(f"n={n} leaves no thread on {_core.max_threads()} cores")
    else:
        value = n
    with _lock:
        _threads = value


def get_num_threads() -> int:
    """The number of threads rnncore uses (its OpenMP team and BLAS)."""
    if _threads is None:
        set_num_threads(None)
    return _threads  # type: ignore[return-value]


def available_isas() -> list[str]:
    """Instruction sets this CPU and build can run, best last."""
    return list(_core.available_isas())


def get_isa() -> str:
    """The instruction set the kernels use (chosen once; capped by RNNCORE_MAX_ISA)."""
    return _core.isa()


def _select_isa(name: str) -> None:
    """Switch the kernels' instruction set (for tests of every path)."""
    if not _core.select_isa(name):
        raise ValueError(f"isa must be one of {available_isas()}, got {name!r}")


def runtime_info() -> dict:
    """What rnncore runs with, as a dict (see :func:`show_runtime`)."""
    from . import __version__
    t = tuning_info()
    return {
        "version": __version__,
        "isa": _core.isa(),
        "available_isas": available_isas(),
        "max_isa_env": os.environ.get("RNNCORE_MAX_ISA"),
        "threads": get_num_threads(),
        "cores": _core.max_threads(),
        "openmp": bool(_core.have_openmp()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        # after team calls whose threads waited for a core, calls run on one thread a while
        "busy_backoff": (f"on, {_core.solo_calls_left()} one-thread calls left"
                         if _core.team_backoff() else "off"),
        "blas": (_core.blas_info() + ", single-threaded calls split over rnncore's threads")
                if not _blas_error else f"none ({_blas_error})",
        "malloc": _malloc,
        "caches": ", ".join(f"{lv} {_size(t[k + '_bytes'])} ({t[k + '_from']})"
                            for lv, k in (("L1d", "l1d"), ("L2", "l2"), ("L3", "l3"))),
        "blocks": (f"input projection K chunk {_size(t['proj_chunk_bytes'])}, row panel "
                   f"{_size(t['proj_panel_bytes'])}; backward product K chunk {_size(t['gemm_chunk_bytes'])}; "
                   f"tapes prefetched past {_size(t['tape_ask_bytes'])}; input projection in the steps "
                   f"for weights up to {_size(t['fused_l2_bytes'])} (batch >= 8) or "
                   f"{_size(t['fused_l3_bytes'])} (batch >= 32); direct calls up to batch "
                   f"{t['direct_max_batch']} and {t['direct_max_rows']} rows, scratch kept up to "
                   f"{_size(t['direct_keep_bytes'])}"),
        "teams": (f"second thread from {_core.min_work_per_thread()} multiply-adds a step, products "
                  f"shared from {t['team_min_fmas']}; barrier spins {t['spin_ns'] / 1000:g} us"),
        "gemm": (f"{t['gemm_path']}" + (" (RNNCORE_GEMM)" if os.environ.get("RNNCORE_GEMM") else "")
                 + ": backward's large products by rnncore's tiles or BLAS"
                 + (", whichever a first trial per shape class found faster" if t["gemm_path"] == "auto" else "")),
        "gemm_choices": t["gemm_choices"],
        "compiler": _core.compiler,
    }


def show_runtime() -> None:
    """Print the instruction set, threads, OpenMP, BLAS, cache sizes and the
    blocks derived from them, and the backward's product choices so far."""
    for k, v in runtime_info().items():
        if isinstance(v, list) and k == "gemm_choices":
            print(f"{k:>15}: {'(none yet)' if not v else v[0]}")
            for line in v[1:]:
                print(f"{'':>15}  {line}")
        else:
            print(f"{k:>15}: {v}")


get_num_threads()
