"""Threads and memory: rnncore inside other people's multi-threaded, long-running
processes.

* Inference calls release the GIL and must be safe from many threads on one
  layer at once (DESIGN.md): 8 Python threads running every cell kind on
  shared layers give exactly (array_equal) the serial results.
* Training one model in a thread while another thread runs inference on a
  different model: both give exactly what they give alone.
* rc.set_num_threads called from several threads while inference runs
  corrupts nothing (the forward kernels split units, not sums, over the team,
  so their results do not depend on the thread count) and leaves a valid value.
* Memory: 10,000 forward/backward calls (and 10,000 rejected calls) leave the
  process RSS flat; the training workspace (the tape) is freed when the tape
  is dropped, seen both in the RSS and by tracemalloc (numpy reports its
  allocations to tracemalloc).

RSS is read from /proc/self/statm after glibc's malloc_trim(0) (so that
memory glibc keeps cached for reuse does not look like a leak). Under
AddressSanitizer (tools/sanitize.sh) RSS is not meaningful (freed memory sits
in ASan's quarantine) and only the tracemalloc checks run.
"""
from __future__ import annotations

import ctypes
import gc
import os
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import rnncore as rc
from rnncore import _core

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def _under_asan() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


UNDER_ASAN = _under_asan()


def _rss_mb() -> float:
    """Resident set size in MB, after giving glibc's free lists back to the OS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


# (id, class, kwargs) of every cell kind
CELLS = [
    ("lstm", rc.LSTM, {}),
    ("lstm_peephole", rc.LSTM, {"peephole": True}),
    ("gru", rc.GRU, {}),
    ("gru_v1", rc.GRU, {"reset_after": False}),
    ("rnn_tanh", rc.RNN, {}),
    ("rnn_relu", rc.RNN, {"nonlinearity": "relu"}),
    ("leaky", rc.LeakyRNN, {"timescales": (1.0, 30.0)}),
    ("skip", rc.SkipRNN, {"delays": (1, 3)}),
    ("clockwork", rc.ClockworkRNN, {"periods": (1, 2, 4, 8)}),
    ("indrnn", rc.IndRNN, {}),
]


@pytest.fixture
def restore_threads():
    n, w, b = rc.get_num_threads(), _core.min_work_per_thread(), _core.team_backoff()
    yield
    rc.set_num_threads(n)
    _core.set_min_work_per_thread(w)
    _core.set_team_backoff(b)


def _state(layer, B, rng):
    D = 2 if layer.bidirectional else 1
    LD, H = layer.num_layers * D, layer.hidden_size
    if isinstance(layer, rc.SkipRNN):
        return rng.uniform(-0.5, 0.5, (LD, layer.max_delay, B, H)).astype(layer.dtype)
    h = rng.uniform(-0.5, 0.5, (LD, B, H)).astype(layer.dtype)
    if isinstance(layer, rc.LSTM):
        return (h, rng.uniform(-0.5, 0.5, (LD, B, H)).astype(layer.dtype))
    if isinstance(layer, rc.ClockworkRNN):
        return (h, int(rng.integers(0, 100)))
    return h


def _flat(out):
    """(y, state) -> list of arrays and ints."""
    y, st = out
    return [y] + (list(st) if isinstance(st, tuple) else [st])


def _same(a, b) -> bool:
    return all(np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v for u, v in zip(a, b))


def _shared_layers():
    """One layer per cell kind, plus a bidirectional two-layer LSTM and a
    float64 GRU; sizes large enough that the kernels use a team."""
    layers = [cls(8, 64, seed=i, **kw) for i, (_, cls, kw) in enumerate(CELLS)]
    layers.append(rc.LSTM(8, 32, num_layers=2, bidirectional=True, batch_first=True, seed=20))
    layers.append(rc.GRU(8, 48, dtype=np.float64, seed=21))
    return layers


def _inputs(layer, k, T=40, B=12):
    """Input k for layer: x, state and lengths all vary with k."""
    rng = np.random.default_rng(1000 + k)
    shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    x = rng.standard_normal(shape).astype(layer.dtype)
    lengths = rng.integers(1, T + 1, B) if k % 2 else None
    state = _state(layer, B, rng) if k % 3 else None
    return x, state, lengths


def _run_threads(n, target):
    errors = []
    barrier = threading.Barrier(n)

    def wrap(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((i, e))

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


# ---------------------------------------------------------------------------
# inference on shared layers from many threads
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("force_team", [False, True], ids=["default-team", "forced-team"])
def test_shared_layers_inference_from_8_threads_equals_serial(restore_threads, force_team):
    rc.set_num_threads(2)
    if force_team:  # every call uses a team of two, however small its steps, and
        _core.set_min_work_per_thread(1)  # the 8 callers' contention cannot take it away
        _core.set_team_backoff(False)
    layers = _shared_layers()
    n_threads, n_inputs = 8, 4
    inputs = {(li, k): _inputs(layer, k) for li, layer in enumerate(layers) for k in range(n_inputs)}
    serial = {key: _flat(layers[key[0]](x, state=s, lengths=l)) for key, (x, s, l) in inputs.items()}
    mismatches = []

    def work(i):
        rng = np.random.default_rng(i)
        keys = list(inputs)
        for rep in range(3):
            for j in rng.permutation(len(keys)):
                li, k = keys[j]
                x, s, l = inputs[(li, k)]
                got = _flat(layers[li](x, state=s, lengths=l))
                if not _same(got, serial[(li, k)]):
                    mismatches.append((i, rep, type(layers[li]).__name__, k))

    errors = _run_threads(n_threads, work)
    assert not errors, f"threads raised: {errors[:3]}"
    assert not mismatches, f"{len(mismatches)} concurrent results differ from serial ones, e.g. {mismatches[:5]}"
    # the inputs were not touched either
    for key, (x, s, l) in inputs.items():
        again = _inputs(layers[key[0]], key[1])
        assert np.array_equal(x, again[0])


def test_training_on_shared_parameters_from_threads_equals_serial(restore_threads):
    # one set of parameter arrays shared by 8 threads, each with its own
    # layer object (its own grads): forward, backward, dx, dstate and grads
    # are exactly the serial ones
    rc.set_num_threads(2)
    base = rc.GRU(8, 64, seed=3)
    ins = [_inputs(base, k) for k in range(4)]

    def run(layer, k):
        x, s, l = ins[k]
        layer.zero_grad()
        y, st, tape = layer.forward(x, state=s, lengths=l)
        dx, ds = layer.backward(tape, np.ones_like(y))
        return [y, st, dx, ds] + [layer.grads[n].copy() for n in sorted(layer.grads)]

    want = [run(base, k) for k in range(len(ins))]
    bad = []

    def work(i):
        layer = rc.GRU(8, 64, seed=3)
        layer.params = base.params  # the same arrays
        for rep in range(8):
            k = (i + rep) % len(ins)
            if not _same(run(layer, k), want[k]):
                bad.append((i, rep, k))

    errors = _run_threads(8, work)
    assert not errors, errors[:3]
    assert not bad, f"training results on shared parameters differ under threads: {bad[:5]}"


# ---------------------------------------------------------------------------
# training in one thread, inference in another
# ---------------------------------------------------------------------------

def _train_model(seed):
    return rc.Sequential(rc.LSTM(3, 64, seed=seed), rc.Dropout(0.1, seed=seed + 1),
                         rc.Linear(64, 2, seed=seed + 2))


def _infer_model():
    return rc.Sequential(rc.GRU(3, 48, bidirectional=True, seed=11), rc.Linear(96, 1, seed=12),
                         readout="all")


def _train_data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((256, 40, 3)).astype(np.float32)
    Y = rng.standard_normal((256, 2)).astype(np.float32)
    return X, Y


def _fit(model, X, Y):
    return model.fit(X, Y, loss="mse", optimizer=rc.optim.Adam(lr=1e-2), epochs=3, batch_size=16,
                     seed=1, clip_norm=1.0, progress=False)


def test_fit_in_one_thread_while_another_infers(restore_threads):
    rc.set_num_threads(2)
    X, Y = _train_data()
    Xi = np.random.default_rng(6).standard_normal((20, 25, 3)).astype(np.float32)
    lens = np.random.default_rng(7).integers(1, 26, 20)

    alone = _train_model(0)
    hist_alone = _fit(alone, X, Y)
    pred_alone = _infer_model().predict(Xi, lengths=lens)

    trained = _train_model(0)
    infer = _infer_model()
    done = threading.Event()
    hist = {}
    preds = []

    def worker(i):
        if i == 0:
            try:
                hist["h"] = _fit(trained, X, Y)
            finally:
                done.set()
        else:
            while not done.is_set() or len(preds) < 5:
                preds.append(infer.predict(Xi, lengths=lens))

    errors = _run_threads(2, worker)
    assert not errors, errors
    assert len(preds) >= 5
    for k, v in alone.params.items():
        assert np.array_equal(trained.params[k], v), f"params[{k!r}] differ from the training run alone"
    assert hist["h"]["loss"] == hist_alone["loss"]
    for p in preds:
        assert np.array_equal(p, pred_alone), "predictions made during training differ from alone"


def test_two_models_training_in_two_threads(restore_threads):
    rc.set_num_threads(1)
    X, Y = _train_data()
    ref0, ref1 = _train_model(0), _train_model(100)
    _fit(ref0, X, Y)
    _fit(ref1, X, Y)
    models = [_train_model(0), _train_model(100)]
    errors = _run_threads(2, lambda i: _fit(models[i], X, Y))
    assert not errors, errors
    for m, ref in zip(models, (ref0, ref1)):
        for k, v in ref.params.items():
            assert np.array_equal(m.params[k], v), k


# ---------------------------------------------------------------------------
# set_num_threads from several threads while inference runs
# ---------------------------------------------------------------------------

def test_set_num_threads_concurrently_with_inference(restore_threads):
    rc.set_num_threads(1)
    layers = _shared_layers()
    inputs = [(li, _inputs(layer, k)) for li, layer in enumerate(layers) for k in range(2)]
    serial = [_flat(layers[li](x, state=s, lengths=l)) for li, (x, s, l) in inputs]
    stop = threading.Event()
    allowed = {1, 2, 3, _core.max_threads(), rc.runtime._default_threads()}
    seen, bad = set(), []

    def setter(i):
        rng = np.random.default_rng(i)
        choices = [1, 2, 3, -1, None]
        while not stop.is_set():
            rc.set_num_threads(choices[int(rng.integers(0, len(choices)))])
            n = rc.get_num_threads()
            seen.add(n)
            if n not in allowed:
                bad.append(n)

    def infer(i):
        for rep in range(3):
            for j, (li, (x, s, l)) in enumerate(inputs):
                if not _same(_flat(layers[li](x, state=s, lengths=l)), serial[j]):
                    bad.append(("mismatch", i, rep, type(layers[li]).__name__))

    # threads 0-2 set the thread count in a loop, threads 3-7 infer; thread 3 ends the run
    def work_all(i):
        if i < 3:
            setter(i)
            return
        try:
            infer(i)
        finally:
            if i == 3:
                stop.set()

    errors = _run_threads(8, work_all)
    assert not errors, errors[:3]
    assert not bad, bad[:5]
    final = rc.get_num_threads()
    assert isinstance(final, int) and final >= 1 and final in allowed
    assert len(seen) >= 2, "the setters did not run concurrently with inference"
    y = _flat(layers[0](*inputs[0][1][:1], state=inputs[0][1][1], lengths=inputs[0][1][2]))
    assert _same(y, serial[0])


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------

def _small_layers():
    return [cls(4, 8, seed=i, **kw) for i, (_, cls, kw) in enumerate(CELLS)] + \
        [rc.LSTM(4, 8, bidirectional=True, num_layers=2, dtype=np.float64, seed=30)]


def _fwd_bwd(layer, x, lengths, state):
    y, st, tape = layer.forward(x, state=state, lengths=lengths)
    dx, dst = layer.backward(tape, y)
    layer(x, state=state, lengths=lengths)
    return dx


def _leak_loop(calls, layers, xs):
    for i in range(calls):
        layer = layers[i % len(layers)]
        x, lengths, state = xs[i % len(layers)]
        _fwd_bwd(layer, x, lengths if i % 2 else None, state if i % 3 else None)


@linux_only
def test_10000_forward_backward_calls_leave_memory_flat(restore_threads):
    rc.set_num_threads(2)
    layers = _small_layers()
    rng = np.random.default_rng(0)
    T, B = 5, 2
    xs = []
    for layer in layers:
        x = rng.standard_normal((T, B, 4)).astype(layer.dtype)
        xs.append((x, np.array([T, 3]), _state(layer, B, rng)))
    _leak_loop(500, layers, xs)  # warm-up: caches, pools, lazily allocated state
    gc.collect()
    tracemalloc.start()
    try:
        rss0, tm0 = _rss_mb(), tracemalloc.get_traced_memory()[0]
        _leak_loop(10_000, layers, xs)
        gc.collect()
        rss1, tm1 = _rss_mb(), tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert tm1 - tm0 < 1 << 20, f"Python-visible memory grew by {(tm1 - tm0) / 2**20:.2f} MB"
    if not UNDER_ASAN:
        assert rss1 - rss0 < 20, f"RSS grew by {rss1 - rss0:.1f} MB over 10,000 forward/backward calls"


@linux_only
def test_10000_rejected_calls_leave_memory_flat():
    # the error paths (Python checks and the bindings' own) free what they took
    from rnncore.layers import _core as core
    layer = rc.LSTM(4, 8, seed=0)
    x = np.zeros((5, 2, 4), np.float32)
    y, st, tape = layer.forward(x)
    bad_calls = [
        lambda: layer(x[:, :, :3]),
        lambda: layer(x, lengths=[9, 9]),
        lambda: layer(x.astype(np.complex64)),
        lambda: layer.backward(tape, y[:, :1]),
        lambda: core.forward_f32((0,) * 12, x, (x,) * 6, None, None, None, x, None, None, None),
        lambda: core.gemm_f32(False, False, 1.0, x[0], x[0], 0.0, np.zeros((2, 3), np.float32), 1),
    ]

    def loop(n):
        for i in range(n):
            try:
                bad_calls[i % len(bad_calls)]()
            except (ValueError, TypeError):
                pass
            else:
                raise AssertionError(f"bad call {i % len(bad_calls)} accepted")

    loop(600)
    gc.collect()
    tracemalloc.start()
    try:
        rss0, tm0 = _rss_mb(), tracemalloc.get_traced_memory()[0]
        loop(10_000)
        gc.collect()
        rss1, tm1 = _rss_mb(), tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert tm1 - tm0 < 1 << 20, f"Python-visible memory grew by {(tm1 - tm0) / 2**20:.2f} MB"
    if not UNDER_ASAN:
        assert rss1 - rss0 < 20, f"RSS grew by {rss1 - rss0:.1f} MB over 10,000 rejected calls"


def _tape_bytes(tape) -> int:
    total = 0
    for recs in tape.records:
        for rec in recs:
            total += sum(a.nbytes for a in rec.values() if isinstance(a, np.ndarray))
    return total


@linux_only
@pytest.mark.parametrize("cls, kw", [(rc.LSTM, {}), (rc.GRU, {"bidirectional": True})],
                         ids=["lstm", "gru-bidirectional"])
def test_training_workspace_is_freed_with_the_tape(restore_threads, cls, kw):
    rc.set_num_threads(2)
    T, B, I, H = 200, 64, 32, 256
    layer = cls(I, H, seed=0, **kw)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    # warm-up, so that allocator thresholds and pools are settled
    y, st, tape = layer.forward(x)
    layer.backward(tape, y)
    del y, st, tape
    gc.collect()

    tracemalloc.start()
    try:
        rss0, tm0 = _rss_mb(), tracemalloc.get_traced_memory()[0]
        y, st, tape = layer.forward(x)
        dy = np.ones_like(y)
        del y, st
        nbytes = _tape_bytes(tape)
        assert nbytes > 40 * 2 ** 20, "the test needs a tape of tens of MB"
        rss1, tm1 = _rss_mb(), tracemalloc.get_traced_memory()[0]
        # the tape holds its workspace while it is alive
        assert tm1 - tm0 >= 0.9 * nbytes, (tm1 - tm0, nbytes)
        if not UNDER_ASAN:
            assert rss1 - rss0 >= 0.5 * nbytes / 2 ** 20, \
                f"RSS rose {rss1 - rss0:.1f} MB for a {nbytes / 2**20:.0f} MB tape"
        # backward's own scratch is freed when it returns
        layer.backward(tape, dy)
        rss2 = _rss_mb()
        if not UNDER_ASAN:
            assert rss2 - rss1 < 8, f"backward kept {rss2 - rss1:.1f} MB after returning"
        del tape, dy
        gc.collect()
        rss3, tm3 = _rss_mb(), tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert tm3 - tm0 < 2 << 20, f"{(tm3 - tm0) / 2**20:.1f} MB still allocated after del tape"
    if not UNDER_ASAN:
        assert rss3 - rss0 < 5, f"RSS is {rss3 - rss0:.1f} MB above where it was before the tape"


@linux_only
def test_inference_workspace_is_freed_on_return(restore_threads):
    rc.set_num_threads(2)
    layer = rc.LSTM(32, 256, seed=0)
    x = np.random.default_rng(0).standard_normal((200, 64, 32)).astype(np.float32)
    layer(x)
    gc.collect()
    rss0 = _rss_mb()
    for _ in range(3):
        y, st = layer(x)
        del y, st
    gc.collect()
    if not UNDER_ASAN:
        assert _rss_mb() - rss0 < 5


# ---------------------------------------------------------------------------
# the one-thread stretch after contended team calls
# ---------------------------------------------------------------------------

def test_contended_team_calls_start_a_doubling_one_thread_stretch(restore_threads):
    _core.set_team_backoff(True)
    _core.note_team_call(False)
    big = 1 << 40  # work enough for any team
    assert _core.choose_team(2, 64, big) == 2
    _core.note_team_call(True)  # once may be chance
    assert _core.solo_calls_left() == 0 and _core.choose_team(2, 64, big) == 2
    _core.note_team_call(True)
    assert _core.solo_calls_left() == 4
    taken = _core.solo_calls_taken()
    assert [_core.choose_team(2, 64, big) for _ in range(5)] == [1, 1, 1, 1, 2]
    assert _core.solo_calls_taken() == taken + 4  # counted, for benchmarks to flag such timings
    _core.note_team_call(True)  # the probe after the stretch was contended too: twice as long
    assert _core.solo_calls_left() == 8
    for _ in range(10):
        _core.note_team_call(True)
    assert _core.solo_calls_left() == 256  # the longest stretch
    # one-thread calls do not use up the stretch
    assert _core.choose_team(1, 64, big) == 1 and _core.solo_calls_left() == 256
    _core.note_team_call(False)  # an uncontended team call ends it
    assert _core.solo_calls_left() == 0 and _core.choose_team(2, 64, big) == 2


def test_team_backoff_off_keeps_the_team(restore_threads):
    _core.set_team_backoff(True)
    _core.note_team_call(True)
    _core.note_team_call(True)
    assert _core.solo_calls_left() > 0
    _core.set_team_backoff(False)
    assert _core.solo_calls_left() == 0
    for _ in range(3):
        _core.note_team_call(True)
    assert _core.solo_calls_left() == 0 and _core.choose_team(2, 64, 1 << 40) == 2


def test_stretch_runs_layers_on_one_thread_with_the_same_results(restore_threads):
    rc.set_num_threads(2)
    _core.set_team_backoff(True)
    layer = rc.LSTM(16, 128, seed=3)
    x = np.random.default_rng(0).standard_normal((20, 64, 16)).astype(np.float32)
    _core.note_team_call(False)
    team = layer(x)[0]
    _core.note_team_call(True)
    _core.note_team_call(True)
    left = _core.solo_calls_left()
    solo = layer(x)[0]
    assert _core.solo_calls_left() == left - 1  # the call ran in the stretch
    np.testing.assert_array_equal(team, solo)
    _core.note_team_call(False)
