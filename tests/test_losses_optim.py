"""Losses (hand values, finite differences, masks, huge logits), optimizers
(hand trajectories, torch.optim parity, frozen, state round trip), schedules,
gradient clipping and error messages."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from rnncore import losses, optim

from _numeric import central_diff


# -- helpers ---------------------------------------------------------------------


def trajectory(opt, grads_seq, p0=1.0, dtype=np.float64):
    """Run ``opt`` on the one-entry parameter ``w`` and return w after each step."""
    w = np.array([p0], dtype=dtype)
    opt.bind({"w": w})
    out = []
    for g in grads_seq:
        opt.step({"w": np.array([g], dtype=dtype)})
        out.append(float(w[0]))
    return out


# -- MSE ---------------------------------------------------------------------------

def test_mse_hand_values():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[0.0, 2.0], [1.0, 1.0]])
    loss, d = losses.MSE()(pred, target)
    # diffs 1, 0, 2, 4 -> (1 + 0 + 4 + 16) / 4; d = 2 * diff / 4
    assert loss == pytest.approx(5.25, rel=1e-15)
    np.testing.assert_allclose(d, [[0.5, 0.0], [1.0, 2.0]], rtol=1e-15)
    assert d.dtype == np.float64 and d.shape == pred.shape


def test_mse_mask_ignores_padding_even_nan():
    pred = np.array([[[1.0, 2.0], [3.0, 4.0], [np.nan, np.inf]]], dtype=np.float32)  # (1, 3, 2)
    target = np.zeros((1, 3, 2), dtype=np.float32)
    loss, d = losses.MSE()(pred, target, mask=np.array([[True, True, False]]))
    # (1 + 4 + 9 + 16) / 4 valid elements; d = 2 * pred / 4
    assert loss == pytest.approx(7.5, rel=1e-7)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, [[[0.5, 1.0], [1.5, 2.0], [0.0, 0.0]]])


def test_mse_mask_forms_and_empty_mask():
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    m = np.array([1, 0, 1, 1])
    l_int, d_int = losses.MSE()(pred, target, mask=m)            # (N,) over (N, T, F), 0/1 ints
    l_sub, d_sub = losses.MSE()(pred[m == 1], target[m == 1])
    assert l_int == pytest.approx(l_sub, rel=1e-14)
    np.testing.assert_allclose(d_int[m == 1], d_sub, rtol=1e-14)  # same count
    assert np.all(d_int[1] == 0)
    loss, d = losses.MSE()(pred, target, mask=np.zeros((4, 3), bool))
    assert loss == 0.0 and np.all(d == 0)


def test_mse_gradient_finite_differences():
    rng = np.random.default_rng(1)
    pred, target = rng.standard_normal((3, 4, 2)), rng.standard_normal((3, 4, 2))
    mask = rng.random((3, 4)) > 0.3
    _, d = losses.MSE()(pred, target, mask)
    num = central_diff(lambda: losses.MSE()(pred, target, mask)[0], pred)
    np.testing.assert_allclose(d, num, rtol=1e-6, atol=1e-9)


# -- cross-entropy -------------------------------------------------------------------

def test_cross_entropy_hand_values():
    logits = np.array([[0.0, 0.0], [0.0, math.log(3.0)]])
    target = np.array([0, 1])
    loss, d = losses.CrossEntropy()(logits, target)
    # row 0: p = (1/2, 1/2), -log 1/2 = 0.6931471805599453, grad (p - onehot) = (-1/2, 1/2)
    # row 1: p = (1/4, 3/4), -log 3/4 = 0.2876820724517809, grad (1/4, -1/4); mean over 2 rows
    assert loss == pytest.approx(0.4904146265058631, rel=1e-14)
    np.testing.assert_allclose(d, [[-0.25, 0.25], [0.125, -0.125]], rtol=1e-14)


def test_cross_entropy_huge_logits_finite():
    for dtype in (np.float32, np.float64):
        logits = np.array([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]], dtype=dtype)
        loss, d = losses.CrossEntropy()(logits, np.array([2, 0]))
        # row 0: log-sum-exp = 1e4, -log p_2 = 1e4 - (-1e4) = 2e4, grad (1, 0, -1); row 1: 0, 0
        assert np.isfinite(loss) and loss == pytest.approx(1e4, rel=1e-7)
        assert d.dtype == dtype and np.all(np.isfinite(d))
        np.testing.assert_allclose(d, [[0.5, 0.0, -0.5], [0.0, 0.0, 0.0]], atol=1e-7)


def test_cross_entropy_gradient_finite_differences():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 4, 5)) * 3
    target = rng.integers(0, 5, size=(3, 4))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    _, d = losses.CrossEntropy()(logits, target, mask)
    num = central_diff(lambda: losses.CrossEntropy()(logits, target, mask)[0], logits)
    np.testing.assert_allclose(d, num, rtol=1e-6, atol=1e-9)


def test_cross_entropy_mask_ignores_padding():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 3, 4))
    target = rng.integers(0, 4, size=(2, 3))
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    padded_logits, padded_target = logits.copy(), target.copy()
    padded_logits[~mask] = np.nan       # padding may hold anything,
    padded_target[~mask] = -1           # including out-of-range targets
    loss, d = losses.CrossEntropy()(padded_logits, padded_target, mask)
    ref_loss, ref_d = losses.CrossEntropy()(logits[mask], target[mask])
    assert loss == pytest.approx(ref_loss, rel=1e-14)
    np.testing.assert_allclose(d[mask], ref_d, rtol=1e-14)
    assert np.all(d[~mask] == 0)


def test_cross_entropy_target_forms():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]], dtype=np.float32)
    base = losses.CrossEntropy()(logits, np.array([0, 2]))
    for t in (np.array([[0], [2]]), np.array([0.0, 2.0]), [0, 2]):
        loss, d = losses.CrossEntropy()(logits, t)
        assert loss == base[0]
        np.testing.assert_array_equal(d, base[1])
        assert d.dtype == np.float32


# -- loss errors and get --------------------------------------------------------------

@pytest.mark.parametrize("call, exc, msg", [
    (lambda: losses.MSE()(np.zeros((50, 1)), np.zeros(50)), ValueError,
     r"target must be \(50, 1\) \(the shape of pred\), got \(50,\)"),
    (lambda: losses.MSE()(np.zeros((4, 3, 2)), np.zeros((4, 3, 2)), mask=np.ones((4, 2))), ValueError,
     r"mask must be broadcastable to the leading dims of pred \(4, 3, 2\).*got \(4, 2\)"),
    (lambda: losses.MSE()(np.zeros((2, 2)), np.zeros((2, 2)), mask=[0.5, 1]), ValueError,
     r"mask must hold only 0/1 \(or bool\), got 0.5"),
    (lambda: losses.CrossEntropy()(np.zeros((5, 3)), np.array([0, 1, 2, 3, 0])), ValueError,
     r"target must hold class indices in \[0, 3\).*got 3"),
    (lambda: losses.CrossEntropy()(np.zeros((2, 3)), np.array([-1, 0])), ValueError,
     r"target must hold class indices in \[0, 3\).*got -1"),
    (lambda: losses.CrossEntropy()(np.zeros((5, 3)), np.zeros((5, 2), int)), ValueError,
     r"target must be \(5,\) \(class indices for pred \(5, 3\)\), got \(5, 2\)"),
    (lambda: losses.CrossEntropy()(np.zeros((2, 3)), np.array([0.5, 1.0])), TypeError,
     r"target must hold integer class indices, got 0.5"),
    (lambda: losses.CrossEntropy()(np.zeros((2, 3)), np.array([True, False])), TypeError,
     r"target must be an integer array of class indices, got dtype bool"),
    (lambda: losses.MSE()(np.array(["a"]), np.zeros(1)), TypeError, r"pred must be a real numeric array"),
])
def test_loss_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_loss_get():
    assert isinstance(losses.get("mse"), losses.MSE)
    assert isinstance(losses.get("mean_squared_error"), losses.MSE)
    for name in ("cross_entropy", "ce", "sparse_categorical_crossentropy", "CE"):
        assert isinstance(losses.get(name), losses.CrossEntropy)
    mine = losses.CrossEntropy()
    assert losses.get(mine) is mine
    with pytest.raises(ValueError, match=r"loss must be one of 'mse'.*'sparse_categorical_crossentropy'"
                                         r".*got 'hinge'"):
        losses.get("hinge")
    with pytest.raises(ValueError, match="got None"):
        losses.get(None)


# -- optimizers: hand trajectories ------------------------------------------------------

HAND = [
    # p -= 0.1 g: 1 - 0.05, + 0.1, - 0.2
    ("sgd", lambda: optim.SGD(lr=0.1), [0.5, -1.0, 2.0], [0.95, 1.05, 0.85]),
    # b = 0.5, 0.95, 1.355; p -= 0.1 b
    ("sgd_momentum", lambda: optim.SGD(lr=0.1, momentum=0.9), [0.5] * 3, [0.95, 0.855, 0.7195]),
    # b = 1, 1.5, 1.75; d = g + 0.5 b = 1.5, 1.75, 1.875; p -= 0.1 d
    ("sgd_nesterov", lambda: optim.SGD(lr=0.1, momentum=0.5, nesterov=True), [1.0] * 3,
     [0.85, 0.675, 0.4875]),
    # g = 0 + 0.5 p: p *= 1 - 0.1 * 0.5
    ("sgd_decay", lambda: optim.SGD(lr=0.1, weight_decay=0.5), [0.0] * 3, [0.95, 0.9025, 0.857375]),
    # betas (1/2, 3/4), eps 0. t=1, g=2: m=1, v=1, m^=2, v^=4 -> p -= 0.1 * 2/2.
    # t=2, g=1: m=1, v=1, m^=1/0.75, v^=1/0.4375 -> p -= 0.1 * (4/3) * sqrt(0.4375).
    # t=3, g=-1: m = 0.5 - 0.5 = 0 -> no move.
    ("adam", lambda: optim.Adam(lr=0.1, betas=(0.5, 0.75), eps=0.0), [2.0, 1.0, -1.0],
     [0.9, 0.8118082896311803, 0.8118082896311803]),
    # as adam, after p *= 1 - 0.1 * 0.5 each step: 0.95 - 0.1; 0.8075 - 0.0881917...; 0.7193083 * 0.95
    ("adamw", lambda: optim.AdamW(lr=0.1, betas=(0.5, 0.75), eps=0.0, weight_decay=0.5),
     [2.0, 1.0, -1.0], [0.85, 0.7193082896311803, 0.6833428751496212]),
    # alpha 1/2, eps 0: s = 2, 3, 2; p -= 0.1 g / sqrt(s): -0.2/sqrt2, -0.2/sqrt3, +0.1/sqrt2
    ("rmsprop", lambda: optim.RMSprop(lr=0.1, alpha=0.5, eps=0.0), [2.0, 2.0, -1.0],
     [0.8585786437626906, 0.7431085899247654, 0.8138192680434201]),
    # b = sqrt2, sqrt2/2 + 2/sqrt3, b/2 - 1/sqrt2; p -= 0.1 b
    ("rmsprop_momentum", lambda: optim.RMSprop(lr=0.1, alpha=0.5, eps=0.0, momentum=0.5),
     [2.0, 2.0, -1.0], [0.8585786437626906, 0.6723979118061106, 0.6500182239464755]),
    # lr 0.1, 0.1, 0.05, 0.05 (StepDecay(0.1, 2, 0.5)), g = 1
    ("sgd_step_decay", lambda: optim.SGD(lr=optim.StepDecay(0.1, 2, 0.5)), [1.0] * 4,
     [0.9, 0.8, 0.75, 0.7]),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", HAND, ids=[h[0] for h in HAND])
def test_optimizer_hand_trajectory(case, dtype):
    _, make, grads, expected = case
    got = trajectory(make(), grads, dtype=dtype)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(got, expected, rtol=rtol)


# -- optimizers: torch parity -------------------------------------------------------------

TORCH = [
    ("sgd", lambda: optim.SGD(lr=0.1), "SGD", dict(lr=0.1)),
    ("sgd_mom_wd", lambda: optim.SGD(lr=0.05, momentum=0.9, weight_decay=0.1), "SGD",
     dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
    ("sgd_nesterov", lambda: optim.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01), "SGD",
     dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("adam", lambda: optim.Adam(lr=0.01), "Adam", dict(lr=0.01)),
    ("adam_wd", lambda: optim.Adam(lr=0.02, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1), "Adam",
     dict(lr=0.02, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
    ("adamw", lambda: optim.AdamW(lr=0.01), "AdamW", dict(lr=0.01)),
    ("adamw_wd", lambda: optim.AdamW(lr=0.02, betas=(0.7, 0.95), weight_decay=0.3), "AdamW",
     dict(lr=0.02, betas=(0.7, 0.95), weight_decay=0.3)),
    ("rmsprop", lambda: optim.RMSprop(lr=0.01), "RMSprop", dict(lr=0.01)),
    ("rmsprop_mom_wd", lambda: optim.RMSprop(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.7,
                                             weight_decay=0.05), "RMSprop",
     dict(lr=0.01, alpha=0.9, eps=1e-6, momentum=0.7, weight_decay=0.05)),
]


def _torch_parity(ours, torch_cls, torch_kw, scheduler=None, steps=5):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    p0 = {"weight": rng.standard_normal((4, 3)), "bias": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(steps)]
    grads[2].pop("bias")  # a parameter without a gradient on one step is skipped (its step too)
    params = {k: v.copy() for k, v in p0.items()}
    ours.bind(params)
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
    topt = getattr(torch.optim, torch_cls)(list(tp.values()), **torch_kw)
    sched = scheduler(topt) if scheduler else None
    for g in grads:
        ours.step(g)
        for k, t in tp.items():
            t.grad = torch.tensor(g[k]) if k in g else None
        topt.step()
        if sched:
            sched.step()
        for k in params:
            np.testing.assert_allclose(params[k], tp[k].detach().numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("case", TORCH, ids=[t[0] for t in TORCH])
def test_optimizer_matches_torch(case):
    _, make, torch_cls, torch_kw = case
    _torch_parity(make(), torch_cls, torch_kw)


def test_schedules_match_torch_schedulers():
    torch = pytest.importorskip("torch")
    sch = torch.optim.lr_scheduler
    _torch_parity(optim.SGD(lr=optim.StepDecay(0.1, 2, 0.5), momentum=0.9), "SGD",
                  dict(lr=0.1, momentum=0.9), lambda o: sch.StepLR(o, step_size=2, gamma=0.5))
    _torch_parity(optim.Adam(lr=optim.ExponentialDecay(0.01, 0.8)), "Adam", dict(lr=0.01),
                  lambda o: sch.ExponentialLR(o, gamma=0.8))
    _torch_parity(optim.AdamW(lr=optim.CosineDecay(0.01, 4, final=0.001)), "AdamW", dict(lr=0.01),
                  lambda o: sch.CosineAnnealingLR(o, T_max=4, eta_min=0.001), steps=4)


# -- optimizers: binding, in place, frozen, dtype ---------------------------------------------

ALL = [lambda: optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
       lambda: optim.Adam(lr=0.01, weight_decay=0.01),
       lambda: optim.AdamW(lr=optim.CosineDecay(0.01, 10)),
       lambda: optim.RMSprop(lr=0.01, momentum=0.5),
       lambda: optim.SGD(lr=0.1)]
ALL_IDS = ["sgd", "adam", "adamw_cosine", "rmsprop", "sgd_plain"]


def _problem(dtype=np.float64, seed=5, steps=6):
    rng = np.random.default_rng(seed)
    p = {"weight_ih_l0": rng.standard_normal((8, 3)).astype(dtype),
         "bias_ih_l0": rng.standard_normal(8).astype(dtype),
         "alpha_l0": np.full(2, 0.5, dtype)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in p.items()}
             for _ in range(steps)]
    return p, grads


@pytest.mark.parametrize("make", ALL, ids=ALL_IDS)
def test_in_place_frozen_and_missing_grads(make):
    params, grads = _problem(np.float32)
    before = {k: v.copy() for k, v in params.items()}
    arrays = {k: id(v) for k, v in params.items()}
    opt = make().bind(params, frozen={"alpha_l0"})
    assert opt.iterations == 0
    for g in grads[:3]:
        g = dict(g)
        g.pop("bias_ih_l0")  # no gradient: untouched
        opt.step(g)
    assert opt.iterations == 3
    assert {k: id(v) for k, v in params.items()} == arrays
    assert not np.array_equal(params["weight_ih_l0"], before["weight_ih_l0"])
    np.testing.assert_array_equal(params["bias_ih_l0"], before["bias_ih_l0"])
    np.testing.assert_array_equal(params["alpha_l0"], before["alpha_l0"])
    assert all(v.dtype == np.float32 for v in params.values())
    state = opt.state_dict()
    assert not any(k.endswith("/alpha_l0") or k.endswith("/bias_ih_l0") for k in state)
    assert all(v.dtype == np.float32 for v in state.values() if isinstance(v, np.ndarray))


def test_updates_a_view_in_place():
    flat = np.ones(6)
    params = {"w": flat[:4].reshape(2, 2), "b": flat[4:]}
    optim.SGD(lr=0.5).bind(params).step({"w": np.ones((2, 2)), "b": np.full(2, 2.0)})
    np.testing.assert_array_equal(flat, [0.5, 0.5, 0.5, 0.5, 0.0, 0.0])


def test_grads_are_not_modified():
    params, grads = _problem()
    g = {k: v.copy() for k, v in grads[0].items()}
    for make in ALL:
        make().bind({k: v.copy() for k, v in params.items()}).step(grads[0])
    for k in g:
        np.testing.assert_array_equal(grads[0][k], g[k])


# -- state_dict -----------------------------------------------------------------------------

def _npz_round_trip(d):
    buf = io.BytesIO()
    np.savez(buf, **d)
    buf.seek(0)
    with np.load(buf) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", ALL, ids=ALL_IDS)
@pytest.mark.parametrize("load_first", [False, True], ids=["bind_then_load", "load_then_bind"])
def test_state_dict_continues_bit_for_bit(make, dtype, load_first):
    params, grads = _problem(dtype)
    opt = make().bind(params)
    for g in grads[:3]:
        opt.step(g)
    saved = _npz_round_trip(opt.state_dict())
    assert int(saved["iterations"]) == 3
    cfg = json.loads(json.dumps(opt.get_config()))
    copy = {k: v.copy() for k, v in params.items()}
    opt2 = optim.from_config(cfg)
    if load_first:
        opt2.load_state_dict(saved)
        opt2.bind(copy)
    else:
        opt2.bind(copy).load_state_dict(saved)
    assert opt2.iterations == 3 and opt2.current_lr() == opt.current_lr()
    for g in grads[3:]:
        opt.step(g)
        opt2.step(g)
    for k in params:
        np.testing.assert_array_equal(params[k], copy[k])
        assert copy[k].dtype == dtype


def test_state_dict_is_a_snapshot_and_keys():
    params, grads = _problem()
    opt = optim.Adam().bind(params)
    opt.step(grads[0])
    d = opt.state_dict()
    m = d["m/weight_ih_l0"].copy()
    opt.step(grads[1])
    np.testing.assert_array_equal(d["m/weight_ih_l0"], m)
    assert set(d) == {"iterations"} | {f"{s}/{n}" for s in ("m", "v") for n in params} | \
        {f"step/{n}" for n in params}
    assert d["iterations"] == 1 and d["step/alpha_l0"] == 1
    assert set(optim.SGD().bind(params).state_dict()) == {"iterations"}


def test_load_state_dict_errors():
    params, grads = _problem()
    opt = optim.Adam().bind(params)
    opt.step(grads[0])
    d = opt.state_dict()
    bad = dict(d, **{"m/weight_ih_l0": np.zeros((3, 8))})
    with pytest.raises(ValueError, match=r"m/weight_ih_l0 must be \(8, 3\).*got \(3, 8\)"):
        optim.Adam().bind(params).load_state_dict(bad)
    with pytest.raises(ValueError, match=r"unexpected key 'momentum_buffer/x' in state_dict for Adam"):
        optim.Adam().load_state_dict(dict(d, **{"momentum_buffer/x": np.zeros(1)}))
    with pytest.raises(ValueError, match=r"'iterations'"):
        optim.Adam().load_state_dict({})
    with pytest.raises(ValueError, match=r"params has no 'bias_ih_l0'"):
        optim.Adam().bind({"weight_ih_l0": params["weight_ih_l0"], "alpha_l0": params["alpha_l0"]}
                          ).load_state_dict(d)
    late = optim.Adam()
    late.load_state_dict(d)
    with pytest.raises(ValueError, match=r"params has no"):
        late.bind({"other": np.zeros(2)})
    late.reset()
    late.bind({"other": np.zeros(2)})
    assert late.iterations == 0


# -- config --------------------------------------------------------------------------------

@pytest.mark.parametrize("opt", [
    optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
    optim.Adam(lr=optim.StepDecay(0.1, 3, 0.5), betas=(0.8, 0.99)),
    optim.AdamW(lr=optim.ExponentialDecay(0.01, 0.9)),
    optim.RMSprop(lr=optim.CosineDecay(0.01, 100, final=1e-4), alpha=0.9, momentum=0.1),
], ids=["sgd", "adam", "adamw", "rmsprop"])
def test_config_json_round_trip(opt):
    cfg = opt.get_config()
    assert cfg["class_name"] == type(opt).__name__
    again = optim.from_config(json.loads(json.dumps(cfg)))
    assert type(again) is type(opt) and again.get_config() == cfg
    assert [again.current_lr()] == [opt.current_lr()]


def test_config_errors_and_get():
    with pytest.raises(ValueError, match=r"cfg\['class_name'\] must be one of .*got 'Adagrad'"):
        optim.from_config({"class_name": "Adagrad", "lr": 0.1})
    with pytest.raises(TypeError, match="has no get_config"):
        optim.SGD(lr=lambda step: 0.1).get_config()
    assert isinstance(optim.get("adam"), optim.Adam)
    with pytest.raises(ValueError, match=r"optimizer must be one of 'sgd'.*got 'nadam'"):
        optim.get("nadam")


# -- schedules ------------------------------------------------------------------------------

def test_schedules():
    s = optim.StepDecay(0.1, 2, 0.5)
    np.testing.assert_allclose([s(i) for i in range(5)], [0.1, 0.1, 0.05, 0.05, 0.025], rtol=1e-15)
    e = optim.ExponentialDecay(1.0, 0.5)
    assert [e(i) for i in range(3)] == [1.0, 0.5, 0.25]
    c = optim.CosineDecay(1.0, 4, final=0.2)
    # 0.2 + 0.8 * (1 + cos(pi * step / 4)) / 2
    np.testing.assert_allclose([c(i) for i in (0, 1, 2, 4, 10)],
                               [1.0, 0.882842712474619, 0.6, 0.2, 0.2], rtol=1e-15)


def test_current_lr_follows_iterations():
    opt = optim.SGD(lr=optim.ExponentialDecay(1.0, 0.5)).bind({"w": np.zeros(1)})
    seen = []
    for _ in range(3):
        seen.append(opt.current_lr())
        opt.step({"w": np.ones(1)})
    assert seen == [1.0, 0.5, 0.25] and opt.current_lr() == 0.125
    opt.lr = 0.3
    assert opt.current_lr() == 0.3 and opt.lr == 0.3


# -- clipping -------------------------------------------------------------------------------

def test_clip_by_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]], dtype=np.float32)}
    assert optim.global_norm(grads) == 5.0
    norm = optim.clip_by_global_norm(grads, 1.0)
    assert norm == 5.0  # the norm before clipping
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads["b"], [[0.8]], rtol=1e-7)
    assert grads["b"].dtype == np.float32
    assert optim.global_norm(grads) == pytest.approx(1.0, rel=1e-7)
    # under the threshold: untouched
    assert optim.clip_by_global_norm(grads, 10.0) == pytest.approx(1.0, rel=1e-7)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-15)


def test_clip_non_finite_norm_leaves_grads():
    grads = {"a": np.array([np.nan, 1.0]), "b": np.array([1e3])}
    norm = optim.clip_by_global_norm(grads, 1.0)
    assert math.isnan(norm)
    assert grads["b"][0] == 1e3
    grads = {"a": np.array([np.inf, 1.0])}
    assert optim.clip_by_global_norm(grads, 1.0) == math.inf
    assert grads["a"][1] == 1.0


def test_global_norm_accumulates_in_float64():
    g32 = {"a": np.full(4, 1e20, dtype=np.float32)}      # squares overflow float32
    assert optim.global_norm(g32) == pytest.approx(2e20, rel=1e-6)
    g64 = {"a": np.array([1e200, 1e200])}                 # squares overflow float64
    assert optim.global_norm(g64) == pytest.approx(math.sqrt(2) * 1e200, rel=1e-12)
    assert optim.global_norm({}) == 0.0


def test_clip_by_value():
    grads = {"a": np.array([-3.0, 0.5, 2.0]), "b": np.array([[1.5]], dtype=np.float32)}
    optim.clip_by_value(grads, 1.0)
    np.testing.assert_array_equal(grads["a"], [-1.0, 0.5, 1.0])
    np.testing.assert_array_equal(grads["b"], [[1.0]])


# -- optimizer errors ---------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, msg", [
    (lambda: optim.SGD(lr=0), ValueError, r"lr must be > 0, got 0"),
    (lambda: optim.Adam(lr=-1e-3), ValueError, r"lr must be > 0, got -0.001"),
    (lambda: optim.Adam(lr=float("nan")), ValueError, r"lr must be > 0, got nan"),
    (lambda: optim.SGD(lr="0.1"), TypeError, r"lr must be a positive number or a schedule.*'0.1'"),
    (lambda: optim.SGD(lr=optim.CosineDecay), TypeError, r"lr must be a positive number"),
    (lambda: optim.SGD(lr=lambda s: -1.0), ValueError, r"must return a finite number >= 0, got -1.0 at step 0"),
    (lambda: optim.Adam(betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be in \[0, 1\), got 1.0"),
    (lambda: optim.AdamW(betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be in \[0, 1\), got -0.1"),
    (lambda: optim.Adam(betas=0.9), TypeError, r"betas must be a pair"),
    (lambda: optim.Adam(eps=-1e-8), ValueError, r"eps must be >= 0, got -1e-08"),
    (lambda: optim.SGD(momentum=-0.5), ValueError, r"momentum must be >= 0, got -0.5"),
    (lambda: optim.RMSprop(momentum=-0.5), ValueError, r"momentum must be >= 0, got -0.5"),
    (lambda: optim.SGD(weight_decay=-1), ValueError, r"weight_decay must be >= 0, got -1"),
    (lambda: optim.SGD(nesterov=True), ValueError, r"nesterov=True needs momentum > 0, got momentum=0.0"),
    (lambda: optim.RMSprop(alpha=1.0), ValueError, r"alpha must be in \[0, 1\), got 1.0"),
    (lambda: optim.SGD(momentum=True), TypeError, r"momentum must be a number, got bool True"),
    (lambda: optim.StepDecay(0.1, 0, 0.5), ValueError, r"step_size must be >= 1, got 0"),
    (lambda: optim.CosineDecay(0.1, 10, final=-1.0), ValueError, r"final must be >= 0, got -1.0"),
    (lambda: optim.clip_by_global_norm({}, 0.0), ValueError, r"max_norm must be > 0, got 0.0"),
    (lambda: optim.clip_by_value({}, -1), ValueError, r"clip_value must be > 0, got -1"),
])
def test_optimizer_argument_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_bind_and_step_errors():
    w = np.zeros((2, 3))
    with pytest.raises(RuntimeError, match=r"SGD.step called before bind"):
        optim.SGD().step({"w": w})
    with pytest.raises(TypeError, match=r"params\['w'\] must be a float32 or float64 np.ndarray, got dtype int64"):
        optim.SGD().bind({"w": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match=r"frozen names must be keys of params, got unknown \['x'\]"):
        optim.SGD().bind({"w": w}, frozen={"x"})
    opt = optim.Adam().bind({"w": w})
    with pytest.raises(ValueError, match=r"grads\['w'\] must be \(2, 3\), got \(3, 2\)"):
        opt.step({"w": np.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"grads\['v'\] has no matching parameter"):
        opt.step({"v": w})
    assert opt.iterations == 0 and np.all(w == 0)
    sched = optim.SGD(lr=lambda s: 0.1 if s < 1 else -0.1).bind({"w": w})
    sched.step({"w": np.ones((2, 3))})
    with pytest.raises(ValueError, match=r"got -0.1 at step 1"):
        sched.step({"w": np.ones((2, 3))})
