"""Training losses: each returns the mean loss over the valid positions and its
gradient with respect to the prediction, in the prediction's dtype. numpy only.

Letters: N = samples, T = steps, F = features, C = classes."""
from __future__ import annotations

import numpy as np

from ._checks import shape_str

__all__ = ["Loss", "MSE", "CrossEntropy", "get"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _as_pred(pred) -> np.ndarray:
    """``pred`` as a float array; float32/float64 kept, other reals -> float64."""
    arr = pred if isinstance(pred, np.ndarray) else np.asarray(pred)
    if arr.dtype in _FLOATS:
        return arr
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"pred must be a real numeric array (float32 or float64), got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _as_mask(mask, lead: tuple, pred_shape: tuple) -> np.ndarray | None:
    """``mask`` (bool or 0/1) broadcast over the leading dims ``lead`` of pred,
    as a bool array of shape ``lead`` (a read-only view when broadcast)."""
    if mask is None:
        return None
    m = mask if isinstance(mask, np.ndarray) else np.asarray(mask)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"mask must be a bool or 0/1 array, got dtype {m.dtype}")
    if m.dtype.kind != "b":
        bad = (m != 0) & (m != 1)
        if np.any(bad):
            raise ValueError(f"mask must hold only 0/1 (or bool), got {m[bad].flat[0].item()!r}")
        m = m != 0
    ok = m.ndim <= len(lead) and all(s in (1, lead[i]) for i, s in enumerate(m.shape))
    if not ok:
        raise ValueError(
            f"mask must be broadcastable to the leading dims of pred {shape_str(pred_shape)}, "
            f"e.g. {shape_str(lead)}, got {shape_str(m.shape)}")
    return np.broadcast_to(m.reshape(m.shape + (1,) * (len(lead) - m.ndim)), lead)


class Loss:
    """A loss: ``loss(pred, target, mask=None) -> (value, dpred)``.

    ``value`` is the mean over the valid positions (a Python float, 0.0 when
    no position is valid) and ``dpred`` its gradient with respect to ``pred``
    (same shape and dtype as ``pred``; exactly 0 at masked positions).
    ``mask`` is an optional bool/0-1 array over pred's leading dims, e.g.
    (N, T) for per-step predictions (N, T, F); masked positions are ignored
    entirely, whatever pred and target hold there.
    """

    name = "loss"

    def __call__(self, pred, target, mask=None) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MSE(Loss):
    """Mean squared error: ``mean((pred - target)**2)`` over the valid elements.

    pred and target are (..., F) of the same shape; the mean counts every
    valid element (so a (N, T) mask over (N, T, F) counts F per valid step).
    """

    name = "mse"

    def __call__(self, pred, target, mask=None) -> tuple[float, np.ndarray]:
        pred = _as_pred(pred)
        tgt = target if isinstance(target, np.ndarray) else np.asarray(target)
        if tgt.dtype.kind not in "fiu":
            raise TypeError(f"target must be a real numeric array, got dtype {tgt.dtype}")
        if tgt.shape != pred.shape:
            raise ValueError(f"target must be {shape_str(pred.shape)} (the shape of pred), "
                             f"got {shape_str(tgt.shape)}")
        valid = _as_mask(mask, pred.shape, pred.shape)
        diff = np.zeros(pred.shape, pred.dtype)
        if valid is None:
            np.subtract(pred, tgt, out=diff, casting="unsafe")
            count = pred.size
        else:
            # `where` leaves masked positions at 0 without touching their values
            # (NaN or inf padding raises no warning and leaks nothing).
            np.subtract(pred, tgt, out=diff, where=valid, casting="unsafe")
            count = int(np.count_nonzero(valid))
        if count == 0:
            return 0.0, diff
        loss = float(np.sum(np.square(diff), dtype=np.float64)) / count
        diff *= diff.dtype.type(2.0 / count)  # d/dpred = 2 (pred - target) / count
        return loss, diff


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits with integer class targets.

    pred holds logits (..., C); target holds class indices (...) in [0, C)
    (an integer array; whole-valued floats are accepted, and so is a trailing
    axis of size 1). Uses a max-subtracted log-sum-exp, so logits of any
    finite size give a finite loss and gradient:
    ``loss = mean(logsumexp(z) - z[target])``, ``dpred = (softmax(z) - onehot) / count``.
    Targets at masked positions are not read (padding such as -1 is fine).
    """

    name = "cross_entropy"

    def __call__(self, pred, target, mask=None) -> tuple[float, np.ndarray]:
        pred = _as_pred(pred)
        if pred.ndim < 1 or pred.shape[-1] < 1:
            raise ValueError(f"pred must be logits (..., C) with C >= 1, got {shape_str(pred.shape)}")
        C = pred.shape[-1]
        lead = pred.shape[:-1]
        tgt = target if isinstance(target, np.ndarray) else np.asarray(target)
        if tgt.shape == lead + (1,):
            tgt = tgt.reshape(lead)
        if tgt.shape != lead:
            raise ValueError(f"target must be {shape_str(lead)} (class indices for pred "
                             f"{shape_str(pred.shape)}), got {shape_str(tgt.shape)}")
        if tgt.dtype.kind not in "iuf":
            raise TypeError(f"target must be an integer array of class indices, got dtype {tgt.dtype}")
        valid = _as_mask(mask, lead, pred.shape)

        z = pred.reshape(-1, C)
        t = tgt.reshape(-1)
        rows = None
        if valid is not None:
            rows = np.flatnonzero(valid)
            z, t = z[rows], t[rows]
        count = t.shape[0]
        if count == 0:
            return 0.0, np.zeros(pred.shape, pred.dtype)
        if t.dtype.kind == "f":
            if not np.all(np.isfinite(t) & (t == np.round(t))):
                bad = t[~(np.isfinite(t) & (t == np.round(t)))][0]
                raise TypeError(f"target must hold integer class indices, got {bad.item()!r} "
                                f"(dtype {tgt.dtype})")
        lo, hi = t.min(), t.max()
        if lo < 0 or hi >= C:
            bad = lo if lo < 0 else hi
            raise ValueError(f"target must hold class indices in [0, {C}) (C = pred.shape[-1]), "
                             f"got {bad.item()!r}")
        t = t.astype(np.intp, copy=False)

        z = z - z.max(axis=1, keepdims=True)  # largest logit is 0: exp never overflows
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        idx = np.arange(count)
        # log p_t = z_t - log(sum exp z), kept finite even when p_t underflows.
        logp = z[idx, t] - np.log(s[:, 0])
        loss = -float(np.sum(logp, dtype=np.float64)) / count
        e /= s
        e[idx, t] -= 1
        e *= e.dtype.type(1.0 / count)
        if rows is None:
            return loss, e.reshape(pred.shape)
        grad = np.zeros((valid.size, C), pred.dtype)
        grad[rows] = e
        return loss, grad.reshape(pred.shape)


_NAMES = {
    "mse": MSE, "mean_squared_error": MSE,
    "cross_entropy": CrossEntropy, "ce": CrossEntropy,
    "sparse_categorical_crossentropy": CrossEntropy,
}


def get(name_or_loss) -> Loss:
    """A loss from its name (case-insensitive) or a ``Loss`` instance as is.

    Names: "mse", "mean_squared_error" -> ``MSE()``; "cross_entropy", "ce",
    "sparse_categorical_crossentropy" -> ``CrossEntropy()``.
    """
    if isinstance(name_or_loss, Loss):
        return name_or_loss
    if isinstance(name_or_loss, str) and name_or_loss.lower() in _NAMES:
        return _NAMES[name_or_loss.lower()]()
    valid = ", ".join(repr(n) for n in _NAMES)
    raise ValueError(f"loss must be one of {valid} or a rnncore.losses.Loss instance, "
                     f"got {name_or_loss!r}")
