"""Sizes that cannot be allocated: MemoryError or ValueError, never a crash."""
from __future__ import annotations

import os
import traceback

import numpy as np
from _numeric import deep_copy as _deep_copy
from _numeric import replace_path as _replace

from .bindings import B_T, _outputs, call, capture_binding_call
from .common import _COUNTS, _case, _eq, _fail

# ---------------------------------------------------------------------------
# Sizes that cannot be allocated
# ---------------------------------------------------------------------------

def _huge_cases():
    """name -> callable; each must raise MemoryError or ValueError (or the
    named accepted exception), or return a correct result."""
    import rnncore as rc
    f32 = np.float32
    cases = {}
    for cls in ("LSTM", "GRU", "RNN", "LeakyRNN", "SkipRNN"):
        cases[f"{cls}(3, hidden_size=10**9)"] = lambda cls=cls: getattr(rc, cls)(3, 10 ** 9)
        cases[f"{cls}(input_size=10**12, 4)"] = lambda cls=cls: getattr(rc, cls)(10 ** 12, 4)
        cases[f"{cls}(3, hidden_size=2**62)"] = lambda cls=cls: getattr(rc, cls)(3, 2 ** 62)
    cases["ClockworkRNN(3, 10**9, periods=(1,))"] = lambda: rc.ClockworkRNN(3, 10 ** 9, periods=(1,))
    cases["Linear(10**12, 3)"] = lambda: rc.Linear(10 ** 12, 3)
    small = {"lstm": lambda: rc.LSTM(3, 4), "gru": lambda: rc.GRU(3, 4), "skip": lambda: rc.SkipRNN(3, 4)}
    for name, make in small.items():
        cases[f"{name}(x broadcast (10**6, 10**5, 3))"] = \
            lambda make=make: make()(np.broadcast_to(f32(1), (10 ** 6, 10 ** 5, 3)))
        cases[f"{name}(x broadcast (1, 10**9, 3): B = 10**9)"] = \
            lambda make=make: make()(np.broadcast_to(f32(1), (1, 10 ** 9, 3)))
        cases[f"{name}(x broadcast (2**31, 1, 3): T = 2**31)"] = \
            lambda make=make: make()(np.broadcast_to(f32(1), (2 ** 31, 1, 3)))
        cases[f"{name}.forward(x broadcast (10**8, 8, 3))"] = \
            lambda make=make: make().forward(np.broadcast_to(f32(1), (10 ** 8, 8, 3)))
    x = np.ones((3, 1, 1), f32)
    cases["SkipRNN(1, 1, delays=(1, 10**9))(x)"] = lambda: rc.SkipRNN(1, 1, delays=(1, 10 ** 9))(x)
    cases["SkipRNN(1, 1, delays=(1, 2**31 - 1))(x)"] = lambda: rc.SkipRNN(1, 1, delays=(1, 2 ** 31 - 1))(x)
    cases["SkipRNN(1, 1, delays=(1, 2**31))(x)"] = lambda: rc.SkipRNN(1, 1, delays=(1, 2 ** 31))(x)
    cases["SkipRNN(1, 1, delays=(1, 2**40)).forward(x)"] = \
        lambda: rc.SkipRNN(1, 1, delays=(1, 2 ** 40)).forward(x)
    cases["ClockworkRNN(1, 2, periods=(1, 2**31))(x)"] = \
        lambda: rc.ClockworkRNN(1, 2, periods=(1, 2 ** 31))(x)
    X = np.ones((4, 3, 2), f32)
    model = rc.Sequential(rc.GRU(2, 3), rc.Linear(3, 1))
    cases["Sequential.predict(batch_size=10**18)"] = lambda: model.predict(X, batch_size=10 ** 18)
    cases["Sequential.fit(batch_size=10**18)"] = \
        lambda: model.fit(X, np.ones((4, 1), f32), batch_size=10 ** 18, progress=False)
    cases["Sequential.predict(X broadcast (10**9, 10**3, 2))"] = \
        lambda: model.predict(np.broadcast_to(f32(1), (10 ** 9, 10 ** 3, 2)))

    # the bindings, with every optional argument None: nothing in Python
    # allocates the (max_delay, B, H) history, the core must size it itself
    for cell in ("skip",):
        for dtype in ("float32", "float64"):
            fwd, bwd = capture_binding_call(cell, dtype, False, False, "minimal")
            sfx = dtype[5:]
            for d in ([1, 2 ** 31 - 1], [2 ** 31 - 1, 1], [1, 2 ** 30]):
                for entry, args in (("forward", fwd), ("backward", bwd)):
                    cases[f"_core.{entry}_f{sfx}(skip, delays={d}, no state)"] = \
                        lambda entry=entry, args=args, d=d, sfx=sfx: _skip_long_delay(entry, args, d, sfx)
    return cases


def _skip_long_delay(entry, args, delays, sfx):
    """A delay longer than the sequence, with no initial history, reads only
    zeros: the call must give what it gives with a delay of T + 1 (or raise)."""
    from rnncore import _core
    fn = getattr(_core, f"{entry}_f{sfx}")

    def run(ds):
        a = _replace(_deep_copy(args), ("spec", "delays"), ds)
        call(fn, a)
        return _outputs(a, entry)

    got = run(delays)
    want = run([d if d <= B_T else B_T + 1 for d in delays])
    for p, v in want.items():
        _eq(got[p], v, f"_core.{entry}_f{sfx}(skip, delays={delays}): output arg{list(p)} differs "
                       f"from the same call with the long delay cut to T + 1")


def _peak_rss_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _fuzz_huge(start: int = 0):
    failures = []
    for i, (name, fn) in enumerate(_huge_cases().items()):
        if i < start:
            continue
        _case("huge", {"index": i, "name": name})
        try:
            fn()
        except AssertionError as e:  # a wrong answer: reported with the others at the end
            failures.append(f"{name}: {e}")
            continue
        except Exception as e:  # noqa: BLE001
            if not isinstance(e, (MemoryError, ValueError, OverflowError, TypeError)):
                _fail(f"{name}: raised {type(e).__name__}: {e}\n" + "".join(traceback.format_exception(e)))
            _COUNTS["examples"] += 1
            continue
        _COUNTS["examples"] += 1
    if failures:
        _fail("\n".join(failures))


def _fuzz_huge_rss():
    """A layer whose parameters cannot exist must say so before filling memory:
    building hidden_size=10**9 first fills a 24 GB float64 weight_ih (and is
    OOM-killed on a 23 GB machine) before failing on weight_hh."""
    import rnncore as rc
    if not _peak_rss_reset():
        print("DONE skipped (no /proc/self/clear_refs)")
        return
    failures = []
    for cls in ("LSTM", "GRU", "RNN", "LeakyRNN", "SkipRNN", "ClockworkRNN"):
        for I, H in ((1, 10 ** 7), (3, 10 ** 9)):
            name = f"rc.{cls}({I}, {H})"
            kw = {"periods": (1,)} if cls == "ClockworkRNN" else {}
            _case("huge_rss", {"name": name})
            _peak_rss_reset()
            before = _current_rss_mb()
            try:
                getattr(rc, cls)(I, H, **kw)
            except (MemoryError, ValueError, OverflowError) as e:
                grew = _peak_rss_mb() - before
                if grew > 64:
                    failures.append(f"{name} raised {type(e).__name__} only after its memory peaked "
                                    f"{grew:.0f} MB higher (the parameters' total size is known "
                                    f"before any of them is allocated): {e}")
            else:
                failures.append(f"{name} was built")
            _COUNTS["examples"] += 1
    if failures:
        _fail("\n".join(failures))

