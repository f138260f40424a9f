"""See how gradients flow back through time in your own model (Deep Learning
10.7-10.11): through an Elman cell ``||dL/dh_t||`` shrinks (or grows)
exponentially with the lag between step t and the loss; skip connections of
delay d make it decay d times more slowly; leaky units with alpha near 1 and
the gates of LSTM and GRU keep it alive.

* :func:`gradient_flow` runs one forward pass and one BPTT pass on a batch and
  returns, per recurrent layer, ``||dL/dh_t||`` at every step, as computed by
  the C++ BPTT itself (``layer.backward(..., dh=...)``): no finite
  differences, no second implementation.
* :func:`decay_lag` is the lag at which such a curve falls below a fraction
  of its last-step value.
* :func:`timescales` lists the time constants a layer is built with (leaky
  alphas, skip delays, clockwork periods) and the spectral radius of each
  recurrent matrix.
* :func:`plot_gradient_flow` draws curves of one or several models against
  the lag, on a log scale (needs matplotlib: ``pip install 'rnncore[plot]'``).

Letters: N samples, T time steps, B batch, I input size, H hidden size,
L layers, D directions.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from . import losses as _losses
from ._checks import as_lengths, as_real_array, as_samples, check_int, check_shape, shape_str
from .layers import _Recurrent
from .model import Sequential
from .module import scratch_pass

__all__ = ["gradient_flow", "decay_lag", "timescales", "plot_gradient_flow"]

_SYNTHETIC = ("last", "all")


# --------------------------------------------------------------------------
# gradient_flow
# --------------------------------------------------------------------------

def _is_sequential(obj) -> bool:
    return isinstance(obj, Sequential)


def _to_tbf(layer, a):
    """A (T, B, F) view of a sequence array in ``layer``'s layout."""
    return a.transpose(1, 0, 2) if layer.batch_first else a


def _from_tbf(layer, a):
    return np.ascontiguousarray(a.transpose(1, 0, 2) if layer.batch_first else a)


def _synthetic_dy(layer, T, B, lens, loss, seed):
    """The synthetic dL/dy of :func:`gradient_flow`, in ``layer``'s layout."""
    D, H = layer.num_directions, layer.hidden_size
    rng = np.random.default_rng(seed)
    dy = np.zeros((T, B, D, H))
    if loss == "last":
        v = rng.standard_normal((B, D, H))
        v /= np.linalg.norm(v, axis=2, keepdims=True)
        last = (lens - 1) if lens is not None else np.full(B, T - 1)
        dy[last, np.arange(B), 0] = v[:, 0]
        if D == 2:
            dy[0, :, 1] = v[:, 1]
    else:
        v = rng.standard_normal((T, B, D, H))
        v /= np.linalg.norm(v, axis=3, keepdims=True)
        dy[...] = v
        if lens is not None:
            dy[np.arange(T)[:, None] >= lens[None, :]] = 0
    return _from_tbf(layer, dy.reshape(T, B, D * H).astype(layer.dtype))


def _aggregate(n, lens, reverse, align):
    """Per-row norms n (T, B) -> (T,) means over the rows, ordered so that
    entry T-1-lag holds the lag ``lag`` from the row's end (see gradient_flow)."""
    T, B = n.shape
    steps = np.arange(T)[:, None]
    L = np.full(B, T) if lens is None else lens.astype(np.int64)
    if reverse:
        # the reverse direction ends at t = 0: lag = t, entry T-1-t
        vals, valid = n[::-1], (steps < L[None, :])[::-1]
    elif align == "step":
        vals, valid = n, steps < L[None, :]
    else:  # "end": shift each row right by T - len so its last valid step is entry T-1
        src = steps - (T - L)[None, :]
        valid = src >= 0
        vals = np.take_along_axis(n, np.clip(src, 0, T - 1), axis=0)
    count = valid.sum(axis=1)
    total = np.where(valid, vals, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _layer_norms(prefix, layer, dh, lens, direction, align, out):
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    dirs = {"forward": [0], "reverse": [1], "both": [0, 1]}[direction]
    for k in range(L):
        a = _to_tbf(layer, dh[k])
        for d in dirs:
            if d >= D:
                continue
            part = np.asarray(a[:, :, d * H:(d + 1) * H], dtype=np.float64)
            n = np.sqrt(np.einsum("tbh,tbh->tb", part, part))
            key = prefix + (f".l{k}" if L > 1 else "") + (".reverse" if d == 1 else "")
            out[key] = _aggregate(n, lens, d == 1, align)


def _check_options(loss, Y, dy, direction, align):
    if direction not in ("forward", "reverse", "both"):
        raise ValueError(f"direction must be 'forward', 'reverse' or 'both', got {direction!r}")
    if align not in ("end", "step"):
        raise ValueError(f"align must be 'end' or 'step', got {align!r}")
    if Y is not None and dy is not None:
        raise ValueError("give Y (the model's real loss) or dy (your own dL/dy), not both")
    if Y is not None:
        if isinstance(loss, str) and loss in _SYNTHETIC:
            raise ValueError(f"loss={loss!r} names a synthetic loss, used without Y; with Y the "
                             "model's readout decides which steps the loss sees and loss names "
                             "the loss function ('mse' by default, 'cross_entropy', or a Loss)")
        return _losses.get("mse" if loss is None else loss)
    if dy is not None:
        if loss is not None:
            raise ValueError("give loss or dy, not both: dy is the gradient of your own loss")
        return None
    if loss is None:
        return "last"
    if loss not in _SYNTHETIC:
        raise ValueError(f"loss must be 'last' or 'all' without Y (a synthetic loss), got {loss!r}; "
                         "pass Y to use a real loss such as 'mse'")
    return loss


def _given_dy(layer, dy, T, B):
    dy = as_real_array("dy", dy, layer.dtype)
    check_shape("dy", dy, layer._seq_shape(T, B, layer.num_directions * layer.hidden_size),
                ("B", "T", "D*H") if layer.batch_first else ("T", "B", "D*H"))
    return dy


def gradient_flow(model_or_layer, X, Y=None, *, loss=None, lengths=None, dy=None,
                  direction="forward", align="end", seed=0) -> dict:
    """``||dL/dh_t||`` at every step t, for each recurrent layer, from one BPTT pass.

    Runs a training forward pass on the batch ``X`` and BPTT, and reads the
    total gradient of the loss with respect to each hidden state h_t as the
    C++ BPTT computes it (``layer.backward(tape, dy, dh=...)``). The layers'
    ``grads`` are left as they were (the pass writes to scratch arrays) and
    dropout is off during the pass.

    Parameters
    ----------
    model_or_layer : an rnncore recurrent layer (``LSTM``, ``GRU``, ``RNN``,
        ``LeakyRNN``, ``SkipRNN``, ``ClockworkRNN``) or an ``rnncore.Sequential``.
    X : for a layer, its input in the layer's layout, (T, B, I) or (B, T, I)
        with ``batch_first``; for a Sequential, samples-first (N, T, F).
    Y : targets for a Sequential (as for ``fit``), or None. With Y the
        model's real loss is used, through its own forward pass and readout:
        ``loss`` then names the loss function ("mse", the default, or
        "cross_entropy", or a ``rnncore.losses.Loss``).
    loss : without Y, a synthetic loss ``L = sum_t sum_b <v_tb, y_tb>`` on the
        output y of the layer (of a Sequential's last recurrent layer; the
        layers above it are not involved), so that ``dL/dy_tb = v_tb``:

        * ``"last"`` (default): v_tb is a unit-norm random vector for each row
          b on its last step (each row's last valid step with ``lengths``) and
          0 elsewhere: the curve is the pure decay of one gradient sent back
          from the end;
        * ``"all"``: an independent unit-norm random vector for every step and
          row (valid steps only): what a per-step loss sends back, summed.

        Each vector has unit norm per direction: for a bidirectional layer the
        reverse direction's half is put where that direction ends (t = 0 for
        "last"), as ``Sequential``'s ``readout="last"`` does. The vectors are
        ``rng.standard_normal((B, D, H))`` for "last" and
        ``rng.standard_normal((T, B, D, H))`` for "all", with
        ``rng = np.random.default_rng(seed)``, each normalised over H: the
        same seed gives the same loss.
    lengths : (N,) or (B,) valid steps per row, or None.
    dy : your own dL/dy for the (last recurrent) layer's output, in its
        layout (T, B, D*H) or (B, T, D*H), instead of the synthetic loss.
    direction : for bidirectional layers, which direction to report:
        "forward" (default), "reverse" (key suffix ``.reverse``) or "both".
        Unidirectional layers report their one direction with "forward" and
        "both" and are left out with "reverse" (a ValueError if none is left).
    align : how rows of different ``lengths`` are averaged: "end" (default)
        puts each row's last valid step at entry T-1, so entry T-1-lag is
        the mean over the rows of the norm ``lag`` steps before their own end
        (the rows shorter than lag+1 are left out); "step" keeps entry t =
        step t, the mean over the rows still valid at t. Without lengths the
        two are the same. The reverse direction of a bidirectional layer ends
        at t = 0: its entry T-1-lag is step ``lag``, whatever ``align``.
    seed : seed of the synthetic loss's random vectors.

    Returns
    -------
    dict : key -> float64 array (T,), ordered as the layers are:
        ``"{index}:{Class}"`` (index 0 for a bare layer; e.g. ``"0:LSTM"``),
        ``".l{k}"`` appended for each layer k of a ``num_layers > 1`` stack,
        ``".reverse"`` for a reverse direction. Entry t is the mean over the
        rows of the L2 norm over the H units of dL/dh_t (see ``align``);
        entry T-1 is lag 0, entry T-1-lag is lag ``lag``; NaN where no row
        has that lag. With ``loss="last"`` on a single-layer layer entry T-1
        is 1 (dL/dh at the last step is the unit vector itself).
    """
    seq = _is_sequential(model_or_layer)
    if not seq and not isinstance(model_or_layer, _Recurrent):
        raise TypeError("model_or_layer must be an rnncore recurrent layer or an rnncore.Sequential, "
                        f"got {type(model_or_layer).__name__}")
    kind = _check_options(loss, Y, dy, direction, align)
    seed = check_int("seed", seed, 0)
    out: dict = {}
    if not seq:
        layer = model_or_layer
        if Y is not None:
            raise ValueError("Y (a real loss) needs an rnncore.Sequential: a bare layer has no "
                             "readout; use the synthetic loss (loss='last' or 'all') or dy=")
        with scratch_pass([layer]):
            y, _, tape = layer.forward(X, None, lengths)
            T, B = (y.shape[1], y.shape[0]) if layer.batch_first else y.shape[:2]
            lens = as_lengths(lengths, B, T)
            g = _given_dy(layer, dy, T, B) if kind is None else _synthetic_dy(layer, T, B, lens, kind, seed)
            dh: dict = {}
            layer.backward(tape, g, dh=dh)
        _layer_norms(f"0:{type(layer).__name__}", layer, dh, lens, direction, align, out)
        return _nonempty(out, direction)

    model = model_or_layer
    top = model.last_recurrent
    if top is None:
        raise TypeError("model_or_layer holds no recurrent layer: there is no h_t to look at")
    X, lens = as_samples(X, model.dtype, lengths)
    N, T = X.shape[0], X.shape[1]
    if Y is not None:
        dhs = model.hidden_grads(X, Y, loss=kind, lengths=lens)
    else:
        layer = model.layers[top]
        g = _given_dy(layer, dy, T, N) if kind is None else _synthetic_dy(layer, T, N, lens, kind, seed)
        dhs = model.hidden_grads(X, dy=g, lengths=lens)
    for i, dh in dhs.items():
        layer = model.layers[i]
        _layer_norms(f"{i}:{type(layer).__name__}", layer, dh, lens, direction, align, out)
    return _nonempty(out, direction)


def _nonempty(out, direction):
    if not out:
        raise ValueError(f"direction={direction!r}: there is no bidirectional layer to report")
    return out


# --------------------------------------------------------------------------
# decay_lag
# --------------------------------------------------------------------------

def decay_lag(norms, ratio=1e-3, *, sustained=False):
    """The smallest lag at which ``norms`` falls below ``ratio`` times its
    lag-0 value, or None if it never does.

    ``norms`` is a (T,) curve as :func:`gradient_flow` returns it: entry T-1
    is lag 0, entry T-1-lag is lag ``lag``. NaN entries (lags no row has)
    are skipped.
    A curve that does not fall far enough within T-1 lags gives None: its
    gradient outlives the sequence.

    With ``sustained=True``: the smallest lag from which the curve stays
    below up to the largest lag (None if it is not below there). The two
    differ for curves that fall and rise again, such as the saw-tooth of a
    skip cell, whose gradient dips between multiples of its delay d and is
    carried back up at each of them: the first crossing tells how far the
    length-one path reaches, the sustained one how far the gradient does.
    """
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"norms must be a non-empty 1-D array (T,), got shape {shape_str(a.shape)}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or not ratio > 0:
        raise ValueError(f"ratio must be a positive number, got {ratio!r}")
    ref = a[-1]
    if not (np.isfinite(ref) and ref > 0):
        raise ValueError(f"norms[-1] (the lag-0 value) must be positive and finite, got {ref}")
    rev = a[::-1]                      # index = lag
    known = ~np.isnan(rev)             # NaN: no row has that lag
    with np.errstate(invalid="ignore"):
        below = known & (rev < ratio * ref)
    if sustained:
        lags = np.flatnonzero(known)
        above = np.flatnonzero(known & ~below)
        if above.size and above[-1] == lags[-1]:
            return None
        return int(lags[lags > above[-1]][0]) if above.size else 0
    hits = np.flatnonzero(below)
    return int(hits[0]) if hits.size else None


# --------------------------------------------------------------------------
# timescales
# --------------------------------------------------------------------------

def timescales(layer) -> dict:
    """The time scales a layer is built with, and the spectral radius of each
    recurrent matrix, per layer and direction.

    Returns a dict keyed by the parameter suffix without its underscore
    (``"l0"``, ``"l0_reverse"``, ``"l1"``, ...); each value is a dict:

    * ``"spectral_radius"``: name -> max |eigenvalue| (``np.linalg.eigvals``)
      of each recurrent matrix: ``{"weight_hh": r}`` for RNN, LeakyRNN and
      ClockworkRNN; the per-gate (H, H) blocks of ``weight_hh`` for LSTM
      (``"i", "f", "g", "o"``) and GRU (``"r", "z", "n"``); one per delay for
      SkipRNN (``"d1"``, ``"d10"``: the matrices ``weight_hh_d{d}``).
    * LeakyRNN: ``"alpha"`` (H,) and ``"tau"`` (H,) = 1 / (1 - alpha), the
      effective time constant of each unit, and ``"jacobian_radius"``, the
      spectral radius of ``diag(alpha) + diag(1 - alpha) W_hh``, the step
      Jacobian at zero pre-activation (the rate at which gradients decay
      where tanh is linear).
    * SkipRNN: ``"delays"``, the tuple of delays.
    * ClockworkRNN: ``"periods"`` and ``"unit_periods"`` (H,), each unit's period.
    * LSTM and GRU: ``"gate_tau"`` (H,), the time constant the forget gate
      (LSTM) or update gate z (GRU) gives each unit at zero input and state,
      1 / (1 - sigma(b_ih + b_hh)) of that gate: how long the unit keeps a
      value when nothing drives the gate (at PyTorch's initialisation about 2).

    * A layer not listed here says what it reports in its class docstring
      (each class gives its own entries: ``_timescale_info``).

    A Sequential gives ``{"{index}:{Class}": timescales(layer)}`` for each of
    its recurrent layers.
    """
    if _is_sequential(layer):
        return {f"{i}:{type(l).__name__}": timescales(l)
                for i, l in enumerate(layer.layers) if isinstance(l, _Recurrent)}
    if not isinstance(layer, _Recurrent):
        raise TypeError(f"layer must be an rnncore recurrent layer or Sequential, got {type(layer).__name__}")
    return layer.timescales()


# --------------------------------------------------------------------------
# plot_gradient_flow
# --------------------------------------------------------------------------

def _import_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError("plot_gradient_flow needs matplotlib, an optional extra of rnncore: "
                          "pip install 'rnncore[plot]' (or pip install matplotlib)") from e
    return matplotlib


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _new_figure(ncols=1, figsize=None, headless=False):
    """(figure, axes list). Headless (saving without a display): a bare Agg
    figure, no pyplot, the global backend left alone; else pyplot's."""
    _import_matplotlib()
    figsize = figsize or (6.4 * ncols + 0.6, 4.4)
    if headless:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, ncols, j + 1) for j in range(ncols)]
    else:
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, ncols, figsize=figsize, layout="constrained", squeeze=False)
        axes = list(axes[0])
    return fig, axes


def _curves(results) -> list:
    """results -> [(label, float64 (T,) array)]."""
    items = list(results.items()) if isinstance(results, dict) else list(results)
    out = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError("results must be a dict label -> norms (T,) or gradient_flow() output, "
                            f"or a list of (label, norms or gradient_flow() output) pairs; got an item {item!r:.60}")
        label, value = item
        if isinstance(value, dict):
            for key, v in value.items():
                out.append((str(label) if len(value) == 1 else f"{label} {key}", v))
        else:
            out.append((str(label), value))
    curves = []
    for label, v in out:
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"results[{label!r}] must be a 1-D array (T,) of norms, got shape {shape_str(a.shape)}")
        curves.append((label, a))
    if not curves:
        raise ValueError("results holds no curve to plot")
    return curves


def plot_gradient_flow(results, path=None, *, ax=None, title=None, normalize=False, threshold=None):
    """Plot ``||dL/dh_t||`` against the lag T-1-t on a log scale, one line per curve.

    Parameters
    ----------
    results : dict label -> (T,) norms (e.g. ``gradient_flow(...)`` itself,
        or ``{"LSTM": flow["0:LSTM"], ...}``); or a dict/list of
        ``(label, gradient_flow(...) output)``, whose curves are labelled
        ``label`` (one curve) or ``"label key"`` (several).
    path : save the figure there as a PNG (a bare Agg figure when there is
        no display, so it works on servers and in CI), or None.
    ax : a matplotlib Axes to draw into (its figure is the one saved and
        returned), or None for a new figure.
    title : the axes' title.
    normalize : divide each curve by its lag-0 value, so the curves start
        at 1 and read as "fraction of the last-step gradient left".
    threshold : draw a dotted horizontal line there, e.g. ``1e-3`` with
        ``normalize=True`` to show :func:`decay_lag`'s default ratio.

    Returns the matplotlib Figure. Needs matplotlib (``pip install
    'rnncore[plot]'``); zero or non-finite values are left out of a line.
    """
    curves = _curves(results)
    _import_matplotlib()
    if ax is None:
        fig, (ax,) = _new_figure(1, headless=path is not None and not _has_display())
    else:
        fig = ax.figure
    for label, a in curves:
        v = a[::-1].copy()  # index = lag
        if normalize:
            ref = v[0]
            v = v / ref if np.isfinite(ref) and ref > 0 else np.full_like(v, np.nan)
        v[~(np.isfinite(v) & (v > 0))] = np.nan
        ax.plot(np.arange(v.size), v, label=label, lw=1.6)
    if threshold is not None:
        ax.axhline(threshold, color="0.45", ls=":", lw=1.2, label=f"{threshold:g} of lag 0" if normalize
                   else f"{threshold:g}")
    ax.set_yscale("log")
    ax.set_xlabel("lag $T-1-t$ (steps back from the last step)")
    ax.set_ylabel(r"$\Vert\partial L/\partial h_t\Vert \,/\, \Vert\partial L/\partial h_{T-1}\Vert$"
                  if normalize else r"$\Vert\partial L/\partial h_t\Vert$ (mean over the batch)")
    ax.set_xlim(left=0)
    ax.grid(True, which="major", alpha=0.3)
    if title is not None:
        ax.set_title(title)
    ax.legend(fontsize="small")
    if path is not None:
        fig.savefig(os.fspath(path), format="png", dpi=100)
    return fig
