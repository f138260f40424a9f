"""Plain numpy reference for every rnncore cell: forward and hand-written BPTT.

This module is the readable specification of the maths in DESIGN.md and the
oracle the C++ kernels are tested against.  Everything is float64 with plain
loops over time; clarity wins over speed.  It never imports rnncore.

Letters used in shapes: T = time steps, B = batch, I = input size, H = hidden
size, G = gates (4 LSTM, 3 GRU, 1 otherwise), L = layers, D = directions.
"""

import numpy as np

__all__ = ["CELLS", "param_shapes", "random_params", "initial_state", "forward", "backward"]

CELLS = ("rnn_tanh", "rnn_relu", "leaky", "skip", "clockwork", "lstm", "gru", "indrnn")

_GATES = {"lstm": 4, "gru": 3}

# Keyword arguments each cell accepts; None marks a required one.
_CELL_KW = {
    "rnn_tanh": {},
    "rnn_relu": {},
    "leaky": {},
    "skip": {"delays": None},
    "clockwork": {"periods": None},
    "lstm": {"peephole": False},
    "gru": {"reset_after": True},
    "indrnn": {"nonlinearity": "relu"},
}


# --------------------------------------------------------------------------
# Argument checks and parameter names
# --------------------------------------------------------------------------

def _cell_kwargs(cell, hidden_size, cell_kw):
    """Validate ``cell`` and its keyword arguments; return them with defaults."""
    if cell not in _CELL_KW:
        raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
    allowed = _CELL_KW[cell]
    unknown = set(cell_kw) - set(allowed)
    if unknown:
        raise TypeError(f"cell {cell!r} takes no argument(s) {sorted(unknown)}")
    kw = dict(allowed)
    kw.update(cell_kw)
    missing = [name for name, value in kw.items() if value is None]
    if missing:
        raise TypeError(f"cell {cell!r} needs argument(s) {missing}")

    if cell == "skip":
        delays = tuple(int(d) for d in kw["delays"])
        if not delays or min(delays) < 1 or len(set(delays)) != len(delays):
            raise ValueError(f"delays must be distinct positive ints, got {kw['delays']}")
        kw["delays"] = delays
    elif cell == "clockwork":
        periods = tuple(int(p) for p in kw["periods"])
        if not periods or min(periods) < 1 or any(a >= b for a, b in zip(periods, periods[1:])):
            raise ValueError(f"periods must be increasing positive ints, got {kw['periods']}")
        if hidden_size % len(periods):
            raise ValueError(f"hidden_size {hidden_size} is not divisible into "
                             f"{len(periods)} equal clockwork groups")
        kw["periods"] = periods
    elif cell == "lstm":
        kw["peephole"] = bool(kw["peephole"])
    elif cell == "gru":
        kw["reset_after"] = bool(kw["reset_after"])
    elif cell == "indrnn":
        if kw["nonlinearity"] not in ("relu", "tanh"):
            raise ValueError(f"nonlinearity must be 'relu' or 'tanh', got {kw['nonlinearity']!r}")
    return kw


def _layer_params(cell, kw, k, d, in_size, hidden_size, bias):
    """``[(short name, full name, shape)]`` for layer ``k``, direction ``d``."""
    H = hidden_size
    GH = _GATES.get(cell, 1) * H
    sfx = f"_l{k}" + ("_reverse" if d else "")
    out = [("w_ih", "weight_ih" + sfx, (GH, in_size))]
    if cell == "skip":
        # One recurrent matrix per delay, no plain weight_hh.
        out += [(f"w_hh_d{t}", f"weight_hh_d{t}" + sfx, (H, H)) for t in kw["delays"]]
    elif cell == "indrnn":
        # Each unit recurs on itself only: a vector, not a matrix.
        out.append(("w_hh", "weight_hh" + sfx, (H,)))
    else:
        out.append(("w_hh", "weight_hh" + sfx, (GH, H)))
    if bias:
        out += [("b_ih", "bias_ih" + sfx, (GH,)), ("b_hh", "bias_hh" + sfx, (GH,))]
    if cell == "lstm" and kw["peephole"]:
        out.append(("w_ch", "weight_ch" + sfx, (3, H)))
    if cell == "leaky":
        out.append(("alpha", "alpha" + sfx, (H,)))
    return out


def _all_layer_params(cell, kw, input_size, hidden_size, num_layers, bidirectional, bias):
    """Nested list ``[k][d]`` of the ``_layer_params`` lists of a whole stack."""
    D = 2 if bidirectional else 1
    return [[_layer_params(cell, kw, k, d, input_size if k == 0 else D * hidden_size,
                           hidden_size, bias)
             for d in range(D)]
            for k in range(num_layers)]


def param_shapes(cell, input_size, hidden_size, num_layers=1, bidirectional=False, bias=True,
                 **cell_kw):
    """Names and shapes of the parameters of a (stacked, bidirectional) layer.

    Parameters
    ----------
    cell : str
        One of ``CELLS``.
    input_size, hidden_size : int
        I and H.
    num_layers : int
        L; layer k > 0 takes the (T, B, D*H) output of layer k-1.
    bidirectional : bool
        D = 2 if True, else 1.
    bias : bool
        Whether ``bias_ih_l{k}`` and ``bias_hh_l{k}`` exist.
    **cell_kw
        ``delays`` (skip), ``periods`` (clockwork), ``peephole`` (lstm),
        ``reset_after`` (gru), ``nonlinearity`` (indrnn).

    Returns
    -------
    dict
        PyTorch-style name -> shape tuple, in PyTorch's order (layer, then
        direction, then weight_ih, weight_hh, biases, extras).
    """
    kw = _cell_kwargs(cell, hidden_size, cell_kw)
    shapes = {}
    for per_dir in _all_layer_params(cell, kw, input_size, hidden_size, num_layers,
                                     bidirectional, bias):
        for names in per_dir:
            shapes.update((full, shape) for _, full, shape in names)
    return shapes


def _clockwork_mask(periods, hidden_size):
    """(H, H) bool: entry (i, j) allowed iff unit j's period >= unit i's."""
    unit_period = _unit_periods(periods, hidden_size)
    return unit_period[None, :] >= unit_period[:, None]


def _unit_periods(periods, hidden_size):
    """(H,) int: the period of each unit's group (contiguous equal groups)."""
    return np.repeat(np.asarray(periods), hidden_size // len(periods))


def random_params(cell, input_size, hidden_size, num_layers=1, bidirectional=False, bias=True,
                  rng=None, scale=0.5, **cell_kw):
    """Random float64 parameters, uniform in [-scale, scale).

    Leaky ``alpha_l{k}`` is uniform in [0.1, 0.9); clockwork ``weight_hh_l{k}``
    has its disallowed blocks set to 0.  ``rng`` is a seed or a
    ``numpy.random.Generator``.  Other arguments as in ``param_shapes``.
    """
    rng = np.random.default_rng(rng)
    kw = _cell_kwargs(cell, hidden_size, cell_kw)
    params = {}
    for name, shape in param_shapes(cell, input_size, hidden_size, num_layers, bidirectional,
                                    bias, **kw).items():
        if name.startswith("alpha"):
            params[name] = rng.uniform(0.1, 0.9, size=shape)
        else:
            params[name] = rng.uniform(-scale, scale, size=shape)
        if cell == "clockwork" and name.startswith("weight_hh"):
            params[name] *= _clockwork_mask(kw["periods"], hidden_size)
    return params


def initial_state(cell, hidden_size, batch, num_layers=1, bidirectional=False, rng=None,
                  **cell_kw):
    """A random state (uniform in [-0.5, 0.5)) with the structure ``forward`` takes.

    Returns
    -------
    rnn_*, leaky, gru : ndarray (L*D, B, H)
    lstm : tuple (h, c), each (L*D, B, H)
    skip : ndarray (L*D, max(delays), B, H), newest last
    clockwork : tuple (h, step), h (L*D, B, H) and step the int ``cell_kw``
        ``step0`` (default 0)
    """
    step0 = int(cell_kw.pop("step0", 0)) if cell == "clockwork" else None
    kw = _cell_kwargs(cell, hidden_size, cell_kw)
    rng = np.random.default_rng(rng)
    LD = num_layers * (2 if bidirectional else 1)
    shape = (LD, batch, hidden_size)
    if cell == "lstm":
        return rng.uniform(-0.5, 0.5, shape), rng.uniform(-0.5, 0.5, shape)
    if cell == "skip":
        return rng.uniform(-0.5, 0.5, (LD, max(kw["delays"]), batch, hidden_size))
    if cell == "clockwork":
        return rng.uniform(-0.5, 0.5, shape), step0
    return rng.uniform(-0.5, 0.5, shape)


# --------------------------------------------------------------------------
# Cells: one forward step and its backward step
# --------------------------------------------------------------------------
#
# A cell's state is a tuple of float arrays whose batch axis is the one before
# the last (h is (B, H), the skip history is (maxd, B, H)), so that one (B, 1)
# mask freezes finished rows of every cell alike.
#
# step_fwd(p, x, state, phase) -> (h, new_state, cache)
#     p: short name -> array for one layer and direction; x (B, I_k);
#     phase: the absolute step counter (used by clockwork only); h (B, H) is
#     the output of the step.
# step_bwd(p, cache, dh, dstate, g) -> (dx, dstate_prev)
#     dh (B, H) is dL/dh from the output, dstate dL/d(new_state); adds the
#     parameter gradients into g (short name -> array).

def _sigmoid(a):
    # tanh form: no overflow warning for large |a|.
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _affine(x, w, b):
    """x @ w.T + b, with b None when the layer has no bias."""
    out = x @ w.T
    return out if b is None else out + b


def _affine_bwd(dout, x, w, g, w_name, b_name):
    """Backward of ``_affine``: accumulate dW, db into g, return dL/dx."""
    g[w_name] += dout.T @ x
    if b_name in g:
        g[b_name] += dout.sum(axis=0)
    return dout @ w


class _Elman:
    """h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), phi = tanh or relu."""

    def __init__(self, hidden_size, relu):
        self.H = hidden_size
        self.relu = relu

    def zero_state(self, batch):
        return (np.zeros((batch, self.H)),)

    def _rec(self, p, h_prev):
        """The recurrent term of the pre-activation: W_hh h_{t-1} + b_hh."""
        return _affine(h_prev, p["w_hh"], p.get("b_hh"))

    def _rec_bwd(self, p, dpre, h_prev, g):
        """Backward of ``_rec``: adds dW_hh, db_hh into g, returns dL/dh_{t-1}."""
        return _affine_bwd(dpre, h_prev, p["w_hh"], g, "w_hh", "b_hh")

    def step_fwd(self, p, x, state, phase):
        (h_prev,) = state
        pre = _affine(x, p["w_ih"], p.get("b_ih")) + self._rec(p, h_prev)
        h = np.maximum(pre, 0.0) if self.relu else np.tanh(pre)
        return h, (h,), {"x": x, "h_prev": h_prev, "pre": pre, "h": h}

    def step_bwd(self, p, c, dh, dstate, g):
        dh = dh + dstate[0]
        # Derivatives from the outputs: relu' = [pre > 0], tanh' = 1 - h^2.
        dpre = dh * (c["pre"] > 0) if self.relu else dh * (1.0 - c["h"] ** 2)
        dx = _affine_bwd(dpre, c["x"], p["w_ih"], g, "w_ih", "b_ih")
        return dx, (self._rec_bwd(p, dpre, c["h_prev"], g),)


class _Leaky:
    """h_t = alpha*h_{t-1} + (1-alpha)*tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    def __init__(self, hidden_size):
        self.H = hidden_size

    def zero_state(self, batch):
        return (np.zeros((batch, self.H)),)

    def step_fwd(self, p, x, state, phase):
        (h_prev,) = state
        alpha = p["alpha"]
        pre = _affine(x, p["w_ih"], p.get("b_ih")) + _affine(h_prev, p["w_hh"], p.get("b_hh"))
        u = np.tanh(pre)
        h = alpha * h_prev + (1.0 - alpha) * u
        return h, (h,), {"x": x, "h_prev": h_prev, "u": u}

    def step_bwd(self, p, c, dh, dstate, g):
        alpha = p["alpha"]
        dh = dh + dstate[0]
        g["alpha"] += np.sum(dh * (c["h_prev"] - c["u"]), axis=0)
        dpre = dh * (1.0 - alpha) * (1.0 - c["u"] ** 2)
        dx = _affine_bwd(dpre, c["x"], p["w_ih"], g, "w_ih", "b_ih")
        dh_prev = alpha * dh + _affine_bwd(dpre, c["h_prev"], p["w_hh"], g, "w_hh", "b_hh")
        return dx, (dh_prev,)


class _IndRNN(_Elman):
    """h_t = phi(W_ih x_t + b_ih + w_hh * h_{t-1} + b_hh), w_hh (H,) elementwise,
    phi = relu or tanh (Li et al. 2018, Independently Recurrent Neural Network):
    the Elman cell with each unit recurring on itself only."""

    def __init__(self, hidden_size, nonlinearity):
        super().__init__(hidden_size, relu=nonlinearity == "relu")

    def _rec(self, p, h_prev):
        rec = p["w_hh"] * h_prev
        return rec if "b_hh" not in p else rec + p["b_hh"]

    def _rec_bwd(self, p, dpre, h_prev, g):
        g["w_hh"] += np.sum(dpre * h_prev, axis=0)
        if "b_hh" in g:
            g["b_hh"] += dpre.sum(axis=0)
        return p["w_hh"] * dpre


class _Skip:
    """h_t = tanh(W_ih x_t + b_ih + sum_d W_hh^(d) h_{t-d} + b_hh).

    The state is the history (maxd, B, H) of the last maxd outputs, newest
    last, so h_{t-d} = hist[maxd - d].
    """

    def __init__(self, hidden_size, delays):
        self.H = hidden_size
        self.delays = delays
        self.maxd = max(delays)

    def zero_state(self, batch):
        return (np.zeros((self.maxd, batch, self.H)),)

    def step_fwd(self, p, x, state, phase):
        (hist,) = state
        pre = _affine(x, p["w_ih"], p.get("b_ih"))
        if "b_hh" in p:
            pre = pre + p["b_hh"]
        for d in self.delays:
            pre = pre + hist[self.maxd - d] @ p[f"w_hh_d{d}"].T
        h = np.tanh(pre)
        new_hist = np.concatenate([hist[1:], h[None]], axis=0)  # drop the oldest
        return h, (new_hist,), {"x": x, "hist": hist, "h": h}

    def step_bwd(self, p, c, dh, dstate, g):
        (dnew_hist,) = dstate
        hist = c["hist"]
        # new_hist[j] = hist[j + 1] for j < maxd - 1, new_hist[-1] = h.
        dhist = np.zeros_like(hist)
        dhist[1:] += dnew_hist[:-1]
        dpre = (dh + dnew_hist[-1]) * (1.0 - c["h"] ** 2)
        dx = _affine_bwd(dpre, c["x"], p["w_ih"], g, "w_ih", "b_ih")
        if "b_hh" in g:
            g["b_hh"] += dpre.sum(axis=0)
        for d in self.delays:
            w = p[f"w_hh_d{d}"]
            g[f"w_hh_d{d}"] += dpre.T @ hist[self.maxd - d]
            dhist[self.maxd - d] += dpre @ w
        return dx, (dhist,)


class _Clockwork:
    """Groups of units updated every ``period`` steps (Koutnik et al. 2014).

    Unit j of group i is updated at absolute step t iff t % periods[i] == 0:
    h_i = tanh(W_ih[i] x + b_ih[i] + sum_{j: period_j >= period_i} W_hh[i, j] h[j]
    + b_hh[i]); otherwise it keeps its value.  W_hh is used through the block
    mask, so entries of disallowed blocks have no effect and zero gradient.
    """

    def __init__(self, hidden_size, periods):
        self.H = hidden_size
        self.unit_period = _unit_periods(periods, hidden_size)
        self.mask = _clockwork_mask(periods, hidden_size)

    def zero_state(self, batch):
        return (np.zeros((batch, self.H)),)

    def step_fwd(self, p, x, state, phase):
        (h_prev,) = state
        update = phase % self.unit_period == 0  # (H,)
        w_hh = p["w_hh"] * self.mask
        u = np.tanh(_affine(x, p["w_ih"], p.get("b_ih")) + _affine(h_prev, w_hh, p.get("b_hh")))
        h = np.where(update, u, h_prev)
        return h, (h,), {"x": x, "h_prev": h_prev, "u": u, "update": update}

    def step_bwd(self, p, c, dh, dstate, g):
        dh = dh + dstate[0]
        update = c["update"]
        dpre = np.where(update, dh * (1.0 - c["u"] ** 2), 0.0)
        dx = _affine_bwd(dpre, c["x"], p["w_ih"], g, "w_ih", "b_ih")
        g["w_hh"] += (dpre.T @ c["h_prev"]) * self.mask
        if "b_hh" in g:
            g["b_hh"] += dpre.sum(axis=0)
        dh_prev = np.where(update, 0.0, dh) + dpre @ (p["w_hh"] * self.mask)
        return dx, (dh_prev,)


class _LSTM:
    """LSTM, gates i, f, g, o; optional peepholes w_i, w_f on c_{t-1}, w_o on c_t.

    c_t = f*c_{t-1} + i*g,  h_t = o*tanh(c_t).
    """

    def __init__(self, hidden_size, peephole):
        self.H = hidden_size
        self.peephole = peephole

    def zero_state(self, batch):
        return (np.zeros((batch, self.H)), np.zeros((batch, self.H)))

    def step_fwd(self, p, x, state, phase):
        h_prev, c_prev = state
        H = self.H
        gates = _affine(x, p["w_ih"], p.get("b_ih")) + _affine(h_prev, p["w_hh"], p.get("b_hh"))
        i_pre, f_pre, g_pre, o_pre = (gates[:, k * H:(k + 1) * H] for k in range(4))
        if self.peephole:
            w_i, w_f, w_o = p["w_ch"]
            i_pre = i_pre + w_i * c_prev
            f_pre = f_pre + w_f * c_prev
        i, f, g = _sigmoid(i_pre), _sigmoid(f_pre), np.tanh(g_pre)
        c = f * c_prev + i * g
        if self.peephole:
            o_pre = o_pre + w_o * c  # the new cell state, as in Gers et al.
        o = _sigmoid(o_pre)
        tc = np.tanh(c)
        h = o * tc
        cache = {"x": x, "h_prev": h_prev, "c_prev": c_prev, "i": i, "f": f, "g": g,
                 "o": o, "c": c, "tc": tc}
        return h, (h, c), cache

    def step_bwd(self, p, cc, dh, dstate, g):
        dh_new, dc_new = dstate
        dh = dh + dh_new
        i, f, gg, o, c, tc = cc["i"], cc["f"], cc["g"], cc["o"], cc["c"], cc["tc"]
        do_pre = dh * tc * o * (1.0 - o)
        dc = dc_new + dh * o * (1.0 - tc ** 2)
        if self.peephole:
            w_i, w_f, w_o = p["w_ch"]
            dc = dc + do_pre * w_o
        di_pre = dc * gg * i * (1.0 - i)
        df_pre = dc * cc["c_prev"] * f * (1.0 - f)
        dg_pre = dc * i * (1.0 - gg ** 2)
        dc_prev = dc * f
        if self.peephole:
            dc_prev = dc_prev + di_pre * w_i + df_pre * w_f
            g["w_ch"] += np.stack([np.sum(di_pre * cc["c_prev"], axis=0),
                                   np.sum(df_pre * cc["c_prev"], axis=0),
                                   np.sum(do_pre * c, axis=0)])
        dgates = np.concatenate([di_pre, df_pre, dg_pre, do_pre], axis=1)
        dx = _affine_bwd(dgates, cc["x"], p["w_ih"], g, "w_ih", "b_ih")
        dh_prev = _affine_bwd(dgates, cc["h_prev"], p["w_hh"], g, "w_hh", "b_hh")
        return dx, (dh_prev, dc_prev)


class _GRU:
    """GRU, gates r, z, n; h_t = (1-z)*n + z*h_{t-1}.

    reset_after=True:  n = tanh(W_in x + b_in + r*(W_hn h_{t-1} + b_hn))
    reset_after=False: n = tanh(W_in x + b_in + W_hn (r*h_{t-1}) + b_hn)
    """

    def __init__(self, hidden_size, reset_after):
        self.H = hidden_size
        self.reset_after = reset_after

    def zero_state(self, batch):
        return (np.zeros((batch, self.H)),)

    def step_fwd(self, p, x, state, phase):
        (h_prev,) = state
        H = self.H
        gi = _affine(x, p["w_ih"], p.get("b_ih"))  # (B, 3H)
        w_hh, b_hh = p["w_hh"], p.get("b_hh")
        b_rz = None if b_hh is None else b_hh[:2 * H]
        b_n = None if b_hh is None else b_hh[2 * H:]
        gh_rz = _affine(h_prev, w_hh[:2 * H], b_rz)
        r = _sigmoid(gi[:, :H] + gh_rz[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh_rz[:, H:])
        if self.reset_after:
            gh_n = _affine(h_prev, w_hh[2 * H:], b_n)
            n = np.tanh(gi[:, 2 * H:] + r * gh_n)
        else:
            gh_n = None
            n = np.tanh(gi[:, 2 * H:] + _affine(r * h_prev, w_hh[2 * H:], b_n))
        h = (1.0 - z) * n + z * h_prev
        cache = {"x": x, "h_prev": h_prev, "r": r, "z": z, "n": n, "gh_n": gh_n}
        return h, (h,), cache

    def step_bwd(self, p, c, dh, dstate, g):
        H = self.H
        dh = dh + dstate[0]
        h_prev, r, z, n = c["h_prev"], c["r"], c["z"], c["n"]
        w_hh = p["w_hh"]
        dn_pre = dh * (1.0 - z) * (1.0 - n ** 2)
        dz_pre = dh * (h_prev - n) * z * (1.0 - z)
        dh_prev = dh * z
        if self.reset_after:
            dr_pre = dn_pre * c["gh_n"] * r * (1.0 - r)
            dgh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)
            dh_prev = dh_prev + _affine_bwd(dgh, h_prev, w_hh, g, "w_hh", "b_hh")
        else:
            # n's recurrent term is W_hn (r*h): its own product, then r and z's.
            g["w_hh"][2 * H:] += dn_pre.T @ (r * h_prev)
            d_rh = dn_pre @ w_hh[2 * H:]
            dr_pre = d_rh * h_prev * r * (1.0 - r)
            drz = np.concatenate([dr_pre, dz_pre], axis=1)
            g["w_hh"][:2 * H] += drz.T @ h_prev
            if "b_hh" in g:
                g["b_hh"] += np.concatenate([drz, dn_pre], axis=1).sum(axis=0)
            dh_prev = dh_prev + d_rh * r + drz @ w_hh[:2 * H]
        dgi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
        dx = _affine_bwd(dgi, c["x"], p["w_ih"], g, "w_ih", "b_ih")
        return dx, (dh_prev,)


def _make_cell(cell, hidden_size, kw):
    if cell in ("rnn_tanh", "rnn_relu"):
        return _Elman(hidden_size, relu=cell == "rnn_relu")
    if cell == "leaky":
        return _Leaky(hidden_size)
    if cell == "skip":
        return _Skip(hidden_size, kw["delays"])
    if cell == "clockwork":
        return _Clockwork(hidden_size, kw["periods"])
    if cell == "lstm":
        return _LSTM(hidden_size, kw["peephole"])
    if cell == "indrnn":
        return _IndRNN(hidden_size, kw["nonlinearity"])
    return _GRU(hidden_size, kw["reset_after"])


# --------------------------------------------------------------------------
# One direction of one layer over a whole sequence
# --------------------------------------------------------------------------

def _schedule(T, lengths, reverse):
    """Where each processing step reads and writes.

    Returns ``t_idx`` (T, B) int, the time index row b handles at processing
    step s, and ``valid`` (T, B) bool, whether row b still runs at step s.
    The reverse direction walks t = len_b - 1, ..., 0 over the valid part only.
    """
    s = np.arange(T)[:, None]
    valid = s < lengths[None, :]
    t_idx = lengths[None, :] - 1 - s if reverse else np.broadcast_to(s, valid.shape)
    return np.where(valid, t_idx, 0), valid


def _direction_fwd(cellobj, p, x, state, lengths, reverse, step0):
    """Run one direction; x (T, B, I_k) -> y (T, B, H), final state, cache."""
    T, B, _ = x.shape
    t_idx, valid = _schedule(T, lengths, reverse)
    rows = np.arange(B)
    x_proc = x[t_idx, rows] * valid[..., None]  # (T, B, I_k) in processing order
    y = np.zeros((T, B, cellobj.H))
    steps = []
    for s in range(T):
        h, new_state, c = cellobj.step_fwd(p, x_proc[s], state, step0 + s)
        # Finished rows keep their state, so the final state is the one at
        # each row's last valid step.
        m = valid[s][:, None]
        state = tuple(np.where(m, new, old) for new, old in zip(new_state, state))
        ok = rows[valid[s]]
        y[t_idx[s, ok], ok] = h[ok]
        steps.append(c)
    return y, state, {"t_idx": t_idx, "valid": valid, "steps": steps}


def _direction_bwd(cellobj, p, dcache, dy, dstate, g):
    """BPTT through one direction; dy (T, B, H) -> dx (T, B, I_k), d(initial state)."""
    t_idx, valid, steps = dcache["t_idx"], dcache["valid"], dcache["steps"]
    T, B = valid.shape
    rows = np.arange(B)
    dy_proc = dy[t_idx, rows] * valid[..., None]  # y past a row's length is constant 0
    dx = np.zeros((T, B, p["w_ih"].shape[1]))
    for s in reversed(range(T)):
        m = valid[s][:, None]
        d_new = tuple(np.where(m, d, 0.0) for d in dstate)
        d_kept = tuple(np.where(m, 0.0, d) for d in dstate)
        dx_s, d_prev = cellobj.step_bwd(p, steps[s], dy_proc[s], d_new, g)
        dstate = tuple(a + b for a, b in zip(d_prev, d_kept))
        ok = rows[valid[s]]
        dx[t_idx[s, ok], ok] += dx_s[ok]
    return dx, dstate


# --------------------------------------------------------------------------
# States: user structure <-> one tuple per (layer, direction)
# --------------------------------------------------------------------------

def _split_state(cell, state, LD, cellobj, batch, what):
    """Per (layer, direction) state tuples and the clockwork step of ``state``."""
    step = 0
    if state is None:
        return [cellobj.zero_state(batch) for _ in range(LD)], step
    if cell == "lstm":
        parts = tuple(state)
    elif cell == "clockwork":
        h, step = state
        parts = (h,)
    else:
        parts = (state,)
    parts = [np.array(a, dtype=np.float64) for a in parts]
    expected = [(LD,) + a.shape for a in cellobj.zero_state(batch)]
    got = [a.shape for a in parts]
    if got != expected:
        raise ValueError(f"{what} must hold arrays of shapes {expected}, got {got}")
    return [tuple(a[ld] for a in parts) for ld in range(LD)], int(step)


def _join_state(cell, per_ld, step):
    """Inverse of ``_split_state``."""
    parts = [np.stack(arrays) for arrays in zip(*per_ld)]
    if cell == "lstm":
        return parts[0], parts[1]
    if cell == "clockwork":
        return parts[0], step
    return parts[0]


# --------------------------------------------------------------------------
# Public forward and backward
# --------------------------------------------------------------------------

def forward(cell, params, x, state=None, lengths=None, *, hidden_size, num_layers=1,
            bidirectional=False, **cell_kw):
    """Run a stacked, optionally bidirectional recurrent layer over a sequence.

    Parameters
    ----------
    cell : str
        One of ``CELLS``.
    params : dict
        Name -> array, exactly the keys and shapes of ``param_shapes`` (with
        ``bias`` inferred from whether ``bias_ih_l0`` is present).
    x : ndarray (T, B, I)
        Time-major input.
    state : optional
        Initial state as returned by ``initial_state``; None means zeros (and
        step 0 for clockwork).
    lengths : array_like (B,) of int in [1, T], optional
        Row b is valid for t < lengths[b].
    hidden_size, num_layers, bidirectional, **cell_kw
        As in ``param_shapes``.

    Returns
    -------
    y : ndarray (T, B, D*H)
        Forward direction in ``[..., :H]``, reverse in ``[..., H:]``; exactly 0
        past each row's length.
    final_state
        Same structure as ``state``, taken at each row's last valid step;
        clockwork returns ``(h, step + T)``.
    cache : dict
        Everything ``backward`` needs.
    """
    kw = _cell_kwargs(cell, hidden_size, cell_kw)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"x must be (T, B, I), got shape {x.shape}")
    T, B, I = x.shape
    H, L, D = hidden_size, num_layers, 2 if bidirectional else 1
    if lengths is None:
        lengths = np.full(B, T)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths must be (B,) = ({B},) ints in [1, {T}], got {lengths}")

    bias = "bias_ih_l0" in params
    layout = _all_layer_params(cell, kw, I, H, L, bidirectional, bias)
    expected = {full: shape for per_dir in layout for names in per_dir
                for _, full, shape in names}
    got = {name: np.shape(value) for name, value in params.items()}
    if got != expected:
        raise ValueError(f"params must have keys and shapes {expected}, got {got}")

    cellobj = _make_cell(cell, H, kw)
    states, step0 = _split_state(cell, state, L * D, cellobj, B, "state")

    layer_in, layer_p, layer_caches, finals = [], [], [], []
    inp = x
    for k in range(L):
        outs, caches, ps = [], [], []
        for d in range(D):
            p = {short: np.asarray(params[full], dtype=np.float64)
                 for short, full, _ in layout[k][d]}
            y_d, final, dcache = _direction_fwd(cellobj, p, inp, states[k * D + d], lengths,
                                                reverse=d == 1, step0=step0)
            outs.append(y_d)
            caches.append(dcache)
            ps.append(p)
            finals.append(final)
        layer_in.append(inp)
        layer_p.append(ps)
        layer_caches.append(caches)
        inp = np.concatenate(outs, axis=2)

    cache = {"cell": cell, "kw": kw, "cellobj": cellobj, "H": H, "L": L, "D": D, "B": B,
             "step0": step0, "layout": layout, "inputs": layer_in, "params": layer_p,
             "layers": layer_caches}
    return inp, _join_state(cell, finals, step0 + T), cache


def backward(cache, dy, dstate=None):
    """Hand-written BPTT of ``forward``.

    Computes the gradient of ``L = sum(dy * y) + sum(dstate * final_state)``.

    Parameters
    ----------
    cache : dict
        From ``forward``.
    dy : ndarray (T, B, D*H)
        Values past a row's length are ignored (y is constant 0 there).
    dstate : optional
        Same structure as the final state (clockwork: ``(dh, step)``, step
        ignored); None means zeros.

    Returns
    -------
    dx : ndarray (T, B, I)
    dstate0
        dL/d(initial state), structured like the state; for ``state=None`` it
        is the gradient at the zero initial state.  Clockwork: ``(dh0, step0)``.
    grads : dict
        Name -> dL/d(param), same keys and shapes as ``params``.
    """
    cell, cellobj = cache["cell"], cache["cellobj"]
    H, L, D, B = cache["H"], cache["L"], cache["D"], cache["B"]
    dy = np.asarray(dy, dtype=np.float64)
    T = cache["inputs"][0].shape[0]
    if dy.shape != (T, B, D * H):
        raise ValueError(f"dy must be (T, B, D*H) = {(T, B, D * H)}, got {dy.shape}")
    dstates, _ = _split_state(cell, dstate, L * D, cellobj, B, "dstate")

    grads = {}
    dstate0 = [None] * (L * D)
    for k in reversed(range(L)):
        dinp = np.zeros_like(cache["inputs"][k])
        for d in range(D):
            p = cache["params"][k][d]
            # g aliases the arrays in grads, so step_bwd's += lands there.
            g = {}
            for short, full, shape in cache["layout"][k][d]:
                grads[full] = g[short] = np.zeros(shape)
            dx_d, dstate0[k * D + d] = _direction_bwd(
                cellobj, p, cache["layers"][k][d], dy[:, :, d * H:(d + 1) * H],
                dstates[k * D + d], g)
            dinp += dx_d
        dy = dinp
    # Same key order as param_shapes.
    order = [full for per_dir in cache["layout"] for names in per_dir for _, full, _ in names]
    grads = {name: grads[name] for name in order}
    return dy, _join_state(cell, dstate0, cache["step0"]), grads
