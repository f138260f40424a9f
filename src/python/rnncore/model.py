"""``Sequential``: layers chained forward and backward through their tapes,
and Keras-style training (``fit``, ``predict``, ``evaluate``).

Arrays are samples-first: X (N, T, F) and, with ``readout="last"``, the
model's output is (N, F_out); with ``readout="all"`` it is (N, T, F_out).
"""
from __future__ import annotations

import math
import numbers
import time

import numpy as np

from . import io as _io
from . import losses as _losses
from . import optim as _optim
from ._checks import as_real_array, as_samples, check_int, shape_str
from ._progress import bar
from .layers import _Recurrent
from .module import Module, scratch_pass

__all__ = ["Sequential", "History", "NonFiniteError"]


class NonFiniteError(FloatingPointError):
    """A training step whose loss or gradients are not finite."""


class History:
    """What :meth:`Sequential.fit` measured: ``history[key]`` per epoch
    (``loss``, ``val_loss``, ``time``), ``grad_norm`` the pre-clip global
    gradient norm of every step, ``skipped`` the steps skipped as non-finite."""

    def __init__(self):
        self.history = {"loss": [], "time": []}
        self.grad_norm = []
        self.skipped = []
        self.epochs = 0

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History(epochs={self.epochs}, keys={sorted(self.history)})"


class Sequential(Module):
    """A stack of layers; recurrent layers see sequences, and after the last
    one ``readout`` picks each sequence's last valid step (``"last"``; the
    reverse direction of a bidirectional layer contributes its final state,
    the output at t=0) or keeps every step (``"all"``).

    >>> model = Sequential(LSTM(2, 64), Linear(64, 1))
    """

    def __init__(self, *layers, readout="last"):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            for attr in ("params", "grads", "forward", "backward"):
                if not hasattr(layer, attr):
                    raise TypeError(f"layers[{i}] ({type(layer).__name__}) is not a layer: no {attr}")
        if readout not in ("last", "all"):
            raise ValueError(f"readout must be 'last' or 'all', got {readout!r}")
        self.layers = list(layers)
        self.readout = readout
        rec = [i for i, l in enumerate(self.layers) if isinstance(l, _Recurrent)]
        self._last_rec = rec[-1] if rec else -1
        self.stop_training = False
        self.optimizer = None

    # -- parameters -------------------------------------------------------
    @property
    def params(self) -> dict:
        """All parameters, ``"{layer index}.{name}"`` -> array (references)."""
        return {f"{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.params.items()}

    @property
    def grads(self) -> dict:
        return {f"{i}.{k}": v for i, l in enumerate(self.layers) for k, v in l.grads.items()}

    def frozen_params(self) -> set:
        out = set()
        for i, l in enumerate(self.layers):
            if hasattr(l, "frozen_params"):
                out |= {f"{i}.{k}" for k in l.frozen_params()}
        return out

    def zero_grad(self) -> None:
        for l in self.layers:
            l.zero_grad()

    def _project(self) -> None:
        for l in self.layers:
            if hasattr(l, "project_params"):
                l.project_params()

    @property
    def dtype(self):
        for l in self.layers:
            if hasattr(l, "dtype"):
                return l.dtype
        return np.dtype(np.float32)

    # -- running ------------------------------------------------------------
    def _check_x(self, X, lengths):
        return as_samples(X, self.dtype, lengths)

    @staticmethod
    def _seq_in(layer, x):
        return x if layer.batch_first else np.ascontiguousarray(x.transpose(1, 0, 2))

    @staticmethod
    def _seq_out(layer, y):
        return y if layer.batch_first else y.transpose(1, 0, 2)

    def _pick_last(self, layer, y, lengths):
        """(N, T, D*H) -> (N, D*H): forward half at each row's last step, reverse half at t=0."""
        N, T = y.shape[:2]
        last = (lengths - 1) if lengths is not None else np.full(N, T - 1)
        out = y[np.arange(N), last]
        if layer.bidirectional:
            H = layer.hidden_size
            out[:, H:] = y[:, 0, H:]
        return out, last

    def _unpick_last(self, layer, d, last, shape):
        dy = np.zeros(shape, d.dtype)
        N = shape[0]
        if layer.bidirectional:
            H = layer.hidden_size
            dy[np.arange(N), last, :H] = d[:, :H]
            dy[:, 0, H:] = d[:, H:]
        else:
            dy[np.arange(N), last] = d
        return dy

    def _run(self, X, lengths, states, train):
        """Forward through every layer; returns (out, tapes, new_states)."""
        h = X
        tapes, new_states = [], []
        si = 0
        for i, layer in enumerate(self.layers):
            if isinstance(layer, _Recurrent):
                st = states[si] if states is not None else None
                si += 1
                xin = self._seq_in(layer, h)
                if train:
                    y, st_new, tape = layer.forward(xin, st, lengths)
                else:
                    y, st_new = layer(xin, st, lengths)
                    tape = None
                new_states.append(st_new)
                h = self._seq_out(layer, y)
                extra = None
                if i == self._last_rec and self.readout == "last":
                    full_shape = h.shape
                    h, last = self._pick_last(layer, h, lengths)
                    extra = (last, full_shape)
                tapes.append((tape, extra))
            elif train:
                h, tape = layer.forward(h)
                tapes.append((tape, None))
            else:
                h = layer(h)
                tapes.append((None, None))
        return h, tapes, new_states

    def _backward(self, tapes, dout, *, top=None, dy_top=None, dh=None, input_grad=True):
        """Backward through every layer from the model's output gradient.

        With ``top`` and ``dy_top``, start instead at recurrent layer ``top``
        with ``dy_top`` in that layer's own layout; with ``dh`` a dict,
        ``dh[i]`` receives recurrent layer i's dL/dh_t (see the layers'
        ``backward``). Returns dX, or None with ``input_grad=False`` when the
        first layer is recurrent (its dx is then not computed).
        """
        d = dout
        start = len(self.layers) - 1 if top is None else top
        for i in range(start, -1, -1):
            layer = self.layers[i]
            tape, extra = tapes[i]
            if isinstance(layer, _Recurrent):
                if i == top and dy_top is not None:
                    dy = dy_top
                else:
                    if extra is not None:
                        last, full_shape = extra
                        d = self._unpick_last(layer, d, last, full_shape)
                    dy = self._seq_in(layer, d) if not layer.batch_first else np.ascontiguousarray(d)
                kw = {} if dh is None else {"dh": dh.setdefault(i, {})}
                if i == 0 and not input_grad:
                    layer.backward(tape, dy, input_grad=False, **kw)
                    return None
                dx, _ = layer.backward(tape, dy, **kw)
                d = self._seq_out(layer, dx)
            else:
                d = layer.backward(tape, d)
        return d

    @property
    def last_recurrent(self):
        """Index in :attr:`layers` of the last recurrent layer (the one
        ``readout`` reads), or None when the model has none."""
        return self._last_rec if self._last_rec >= 0 else None

    def hidden_grads(self, X, Y=None, *, loss="mse", lengths=None, dy=None) -> dict:
        """dL/dh_t at every step of every recurrent layer, from one forward
        and BPTT pass over the batch X (N, T, F): ``{layer index: {k: array}}``
        for each stacked layer k of the layer, in the layer's layout ((T, N,
        D*H), or (N, T, D*H) batch-first), the total gradient reaching h_t.

        The loss is the model's own (``loss`` of the predictions against Y,
        through the readout and the layers above) or, with ``dy`` instead of
        Y, ``dy`` is dL/dy of the last recurrent layer's output (in its layout)
        and the layers above it take no part. The pass runs in eval mode (no
        dropout masks, no random numbers drawn), and the parameter gradients
        go to scratch: ``grads`` and every layer's mode are left untouched.
        """
        top = self.last_recurrent
        if top is None:
            raise TypeError("the model holds no recurrent layer: there is no h_t to look at")
        if (Y is None) == (dy is None):
            raise ValueError("give Y (the model's loss against targets) or dy (dL/dy of the last "
                             "recurrent layer's output), exactly one of them")
        X, lens = self._check_x(X, lengths)
        N, T = X.shape[0], X.shape[1]
        layer = self.layers[top]
        if dy is not None:
            dy = as_real_array("dy", dy, layer.dtype)
            shape = layer._seq_shape(T, N, layer.num_directions * layer.hidden_size)
            if dy.shape != shape:
                raise ValueError(f"dy must be {shape_str(shape)} (the last recurrent layer's output), "
                                 f"got {shape_str(dy.shape)}")
        loss_fn = _losses.get(loss) if Y is not None else None
        Yc = self._check_y(Y, N, loss_fn) if Y is not None else None
        dhs: dict = {}
        with scratch_pass(self.layers):
            out, tapes, _ = self._run(X, lens, None, train=True)
            if Yc is not None:
                _, d = loss_fn(out, Yc, self._mask(lens, N, T))
                self._backward(tapes, d, dh=dhs, input_grad=False)
            else:
                self._backward(tapes, None, top=top, dy_top=dy, dh=dhs, input_grad=False)
        return {i: dhs[i] for i in sorted(dhs)}

    def train(self, mode=True):
        """Training mode (``mode=True``) or eval mode for the model and every
        layer: in eval mode the layers' ``forward`` draws no dropout masks
        (``fit`` trains in training mode whatever the mode, and leaves each
        layer in the mode it found it). Returns the model."""
        super().train(mode)
        for l in self.layers:
            if hasattr(l, "train"):
                l.train(mode)
            else:
                l.training = bool(mode)
        return self

    def predict(self, X, *, lengths=None, batch_size=1024):
        """Outputs for X (N, T, F): (N, F_out), or (N, T, F_out) with readout="all"."""
        X, lens = self._check_x(X, lengths)
        batch_size = check_int("batch_size", batch_size, 1)
        outs = []
        for i in range(0, X.shape[0], batch_size):
            lb = None if lens is None else lens[i:i + batch_size]
            out, _, _ = self._run(X[i:i + batch_size], lb, None, train=False)
            outs.append(np.array(out, copy=True))
        return np.concatenate(outs)

    def __call__(self, X, lengths=None):
        return self.predict(X, lengths=lengths)

    def _mask(self, lens, N, T):
        if self.readout != "all" or lens is None:
            return None
        return np.arange(T)[None, :] < lens[:, None]

    def evaluate(self, X, Y, *, loss="mse", lengths=None, batch_size=1024):
        """The mean loss of the model's predictions for X against Y."""
        loss_fn = _losses.get(loss)
        X, lens = self._check_x(X, lengths)
        Y = self._check_y(Y, X.shape[0], loss_fn)
        pred = self.predict(X, lengths=lens, batch_size=batch_size)
        value, _ = loss_fn(pred, Y, self._mask(lens, X.shape[0], X.shape[1]))
        return float(value)

    def _check_y(self, Y, N, loss_fn):
        Y = np.asarray(Y)
        if Y.ndim == 0 or Y.shape[0] != N:
            raise ValueError(f"Y must have N = {N} samples in its first axis, got {shape_str(Y.shape)}")
        if isinstance(loss_fn, _losses.CrossEntropy):
            if Y.dtype.kind not in "iu":
                raise TypeError(f"Y must hold integer class indices for cross-entropy, got dtype {Y.dtype}")
            return Y
        return as_real_array("Y", Y, self.dtype)

    # -- training ---------------------------------------------------------
    def fit(self, X, Y, *, loss="mse", optimizer=None, epochs=1, batch_size=32, shuffle=True,
            seed=None, clip_norm=None, clip_value=None, bptt=None, lengths=None,
            validation_data=None, callbacks=(), progress=True, on_nonfinite="raise",
            initial_epoch=0):
        """Train on X (N, T, F) and Y with minibatch BPTT.

        Parameters
        ----------
        loss : "mse", "cross_entropy" or a losses.Loss
        optimizer : an rnncore.optim optimizer (default Adam(lr=1e-3)), bound here
        clip_norm, clip_value : clip gradients by global norm / by value (the
            pre-clip norm of every step is in ``History.grad_norm``)
        bptt : truncated BPTT: cut each batch into chunks of ``bptt`` steps,
            carry the state forward and cut the gradient at chunk borders
        lengths : (N,) valid steps per sample; padded steps add nothing
        validation_data : (X_val, Y_val) or (X_val, Y_val, lengths_val)
        on_nonfinite : "raise" (default) stops with NonFiniteError naming the
            epoch and batch; "skip" drops that step. Either way the parameters
            and optimizer state stay those from before the step.
        initial_epoch : epoch to start from (resuming from a checkpoint)

        Returns
        -------
        History
        """
        loss_fn = _losses.get(loss)
        X, lens = self._check_x(X, lengths)
        N = X.shape[0]
        Y = self._check_y(Y, N, loss_fn)
        epochs = check_int("epochs", epochs, 0)
        initial_epoch = check_int("initial_epoch", initial_epoch, 0)
        batch_size = check_int("batch_size", batch_size, 1)
        if bptt is not None:
            bptt = check_int("bptt", bptt, 1)
            if self.readout == "last" and lens is not None:
                raise ValueError("bptt with readout='last' needs sequences of equal length (lengths=None)")
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        for name, v in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if v is not None and not (isinstance(v, (numbers.Real, np.floating)) and not isinstance(v, bool)
                                      and math.isfinite(float(v)) and float(v) > 0):
                raise ValueError(f"{name} must be a positive finite number or None, got {v!r}")
        if seed is not None:
            check_int("seed", seed, 0)
        if callbacks is None:
            callbacks = ()
        if not isinstance(callbacks, (list, tuple)):
            raise TypeError(f"callbacks must be a list of Callback objects, got {type(callbacks).__name__}")
        for i, cb in enumerate(callbacks):
            if not all(hasattr(cb, h) for h in ("on_train_begin", "on_epoch_end", "on_train_end")):
                raise TypeError(f"callbacks[{i}] must be a rnncore.callbacks.Callback, got {type(cb).__name__}")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise TypeError("validation_data must be (X_val, Y_val) or (X_val, Y_val, lengths_val)")
            val = tuple(validation_data) + ((None,) if len(validation_data) == 2 else ())
        if optimizer is None:
            optimizer = _optim.Adam(lr=1e-3)
        elif isinstance(optimizer, str):
            optimizer = _optim.get(optimizer)
        if not (hasattr(optimizer, "bind") and hasattr(optimizer, "step")):
            raise TypeError(f"optimizer must be an rnncore.optim optimizer or its name, "
                            f"got {type(optimizer).__name__}")
        if self.optimizer is not optimizer or getattr(optimizer, "_bound_to", None) is not self:
            optimizer.bind(self.params, self.frozen_params())
            optimizer._bound_to = self
        self.optimizer = optimizer
        self.stop_training = False
        modes = [(self, self.training)] + [(l, getattr(l, "training", True)) for l in self.layers]
        try:
            self.train()
            return self._fit_epochs(X, Y, lens, N, loss_fn, optimizer, epochs, initial_epoch, batch_size,
                                    shuffle, seed, clip_norm, clip_value, bptt, on_nonfinite, val, callbacks,
                                    progress)
        finally:
            for m, mode in modes:
                m.training = mode

    def _fit_epochs(self, X, Y, lens, N, loss_fn, optimizer, epochs, initial_epoch, batch_size, shuffle,
                    seed, clip_norm, clip_value, bptt, on_nonfinite, val, callbacks, progress):
        history = History()
        for cb in callbacks:
            cb.on_train_begin(self)
        step = 0
        for epoch in range(initial_epoch, epochs):
            t0 = time.perf_counter()
            if shuffle:
                # one generator per epoch: a resumed run shuffles as the uninterrupted one
                rng = np.random.default_rng([seed, epoch]) if seed is not None else np.random.default_rng()
                order = rng.permutation(N)
            else:
                order = np.arange(N)
            nb = math.ceil(N / batch_size)
            pbar = bar(nb, f"epoch {epoch + 1}/{epochs}", progress)
            total, count = 0.0, 0
            for bi in range(nb):
                idx = order[bi * batch_size:(bi + 1) * batch_size]
                xb, yb = X[idx], Y[idx]
                lb = None if lens is None else lens[idx]
                value = self._train_batch(xb, yb, lb, loss_fn, optimizer, clip_norm, clip_value,
                                          bptt, history, on_nonfinite, epoch, bi)
                step += 1
                if value is not None:
                    total += value * len(idx)
                    count += len(idx)
                pbar.update(1)
                if value is not None:
                    pbar.set_postfix_str(f"loss {value:.4g}")
            logs = {"loss": total / count if count else float("nan")}
            if val is not None:
                logs["val_loss"] = self.evaluate(val[0], val[1], loss=loss_fn, lengths=val[2])
                history.history.setdefault("val_loss", []).append(logs["val_loss"])
                pbar.set_postfix_str(f"loss {logs['loss']:.4g} val_loss {logs['val_loss']:.4g}")
            pbar.close()
            history.history["loss"].append(logs["loss"])
            history.history["time"].append(time.perf_counter() - t0)
            history.epochs += 1
            for cb in callbacks:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end(self)
        return history

    def _chunks(self, T, bptt):
        if bptt is None:
            return [(0, T)]
        return [(s, min(T, s + bptt)) for s in range(0, T, bptt)]

    def _train_batch(self, xb, yb, lb, loss_fn, optimizer, clip_norm, clip_value, bptt, history,
                     on_nonfinite, epoch, bi):
        T = xb.shape[1]
        chunks = self._chunks(T, bptt)
        states = None
        values = []
        for ci, (s0, s1) in enumerate(chunks):
            xc = xb[:, s0:s1]
            lc = None if lb is None else np.clip(lb - s0, 1, s1 - s0).astype(np.int32)
            last_chunk = ci == len(chunks) - 1
            has_loss = self.readout == "all" or last_chunk
            if not has_loss:  # carry the state forward only; no gradient reaches here
                _, _, states = self._run(xc, lc, states, train=False)
                continue
            self.zero_grad()
            out, tapes, new_states = self._run(xc, lc, states, train=True)
            if self.readout == "all":
                yc = yb[:, s0:s1]
                mask = None
                if lb is not None:
                    mask = (np.arange(s0, s1)[None, :] < lb[:, None])
                    if not mask.any():
                        states = new_states
                        continue
            else:
                yc, mask = yb, None
            value, dout = loss_fn(out, yc, mask)
            self._backward(tapes, dout, input_grad=False)  # nothing reads dX
            grads = self.grads
            norm = _optim.global_norm(grads)
            history.grad_norm.append(norm)
            if not (math.isfinite(value) and math.isfinite(norm)):
                where = f"epoch {epoch + 1}, batch {bi + 1}" + (f", chunk {ci + 1}" if bptt else "")
                if on_nonfinite == "raise":
                    self.zero_grad()
                    raise NonFiniteError(
                        f"non-finite {'loss' if not math.isfinite(value) else 'gradient'} at {where} "
                        f"(loss {value}, gradient norm {norm}); parameters and optimizer state are "
                        "those from before this step")
                history.skipped.append((epoch, bi, ci))
                states = new_states
                continue
            if clip_norm is not None:
                _optim.clip_by_global_norm(grads, clip_norm)
            if clip_value is not None:
                _optim.clip_by_value(grads, clip_value)
            optimizer.step(grads)
            self._project()
            values.append(value)
            states = new_states
        return float(np.mean(values)) if values else None

    # -- persistence ----------------------------------------------------------
    def get_config(self) -> dict:
        return {"readout": self.readout, "layers": [_io.layer_config(l) for l in self.layers]}

    def save(self, path, *, optimizer=None, epoch=None):
        """Write one .npz: parameters, a JSON config and, if given, the optimizer
        state (to resume training). Atomic: a failed write leaves an earlier file."""
        _io.save_model(self, path, optimizer=optimizer, epoch=epoch)

    def __repr__(self):
        inner = ",\n  ".join(repr(l) for l in self.layers)
        return f"Sequential(\n  {inner},\n  readout={self.readout!r})"
