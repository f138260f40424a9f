"""Recurrent layers over the C++ kernels: parameters in PyTorch's names and
layouts, shape checks, multi-layer and bidirectional stacking, dropout.

Letters: T time steps, B batch, I input size, H hidden size, L layers,
D directions (2 if bidirectional), G gates (4 LSTM, 3 GRU, 1 RNN).
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._checks import (as_lengths, as_real_array, check_dtype, check_int, check_shape,
                      shape_str)
from .module import Module
from .runtime import get_num_threads
from .torch_interop import to_torch

# the recurrent layers, which the package exports (rnncore/__init__.py)
__all__ = ["LSTM", "GRU", "RNN", "LeakyRNN", "SkipRNN", "ClockworkRNN", "IndRNN"]

_KIND = _core.CellKind  # the kinds of api.hpp's list
# roles of _param_shapes -> the names the bindings take weights and grads by
_KERNEL_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
                 "w_ch": "weight_ch", "alpha": "alpha"}


def _radius(m) -> float:
    """The spectral radius (largest |eigenvalue|) of a square matrix."""
    m = np.asarray(m, dtype=np.float64)
    return float(np.max(np.abs(np.linalg.eigvals(m)))) if m.size else 0.0


class Tape:
    """What :meth:`backward` needs of a training forward pass.

    Holds references to the layer inputs, the per-direction gate activations
    and states, and the dropout masks; dropping it frees the workspace.
    """

    __slots__ = ("layer", "inputs", "records", "lengths", "h0", "c0", "step0", "masks", "shape",
                 "dtype")

    def __init__(self, layer, shape, dtype):
        self.layer = layer
        self.shape = shape
        self.dtype = dtype
        self.inputs = []   # per layer: its (T, B, I_k) input
        self.records = []  # per layer, per direction: dict of tape arrays
        self.masks = []    # per layer below the top: dropout mask or None
        self.lengths = None
        self.h0 = None
        self.c0 = None
        self.step0 = 0


class _Recurrent(Module):
    """Common machinery of the recurrent layers (not public)."""

    _gates = 1
    _mode = ""

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None):
        self.input_size = check_int("input_size", input_size, 1)
        self.hidden_size = check_int("hidden_size", hidden_size, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        for name, v in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(v, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
            raise TypeError(f"dropout must be a float in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.dtype = check_dtype(dtype)
        if seed is not None:
            check_int("seed", seed, 0)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        total = sum(int(np.prod(shape, dtype=object)) for k in range(self.num_layers)
                    for d in range(self.num_directions)
                    for _, shape in self._param_shapes(k, d).values())
        if total > 2**31:
            raise ValueError(f"hidden_size={self.hidden_size} with input_size={self.input_size} and "
                             f"num_layers={self.num_layers} needs {total} parameters; at most 2**31 are supported")
        self.params = {}
        self._init_params()
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    # -- parameters -------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffix(self, k: int, d: int) -> str:
        return f"_l{k}" + ("_reverse" if d == 1 else "")

    def _layer_input_size(self, k: int) -> int:
        return self.input_size if k == 0 else self.num_directions * self.hidden_size

    def _param_shapes(self, k: int, d: int) -> dict:
        """Role -> (name, shape) of layer k, direction d."""
        H, G, s = self.hidden_size, self._gates, self._suffix(k, d)
        out = {"w_ih": (f"weight_ih{s}", (G * H, self._layer_input_size(k))),
               "w_hh": (f"weight_hh{s}", (G * H, H))}
        if self.bias:
            out["b_ih"] = (f"bias_ih{s}", (G * H,))
            out["b_hh"] = (f"bias_hh{s}", (G * H,))
        return out

    def _init_params(self) -> None:
        # U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as PyTorch does
        bound = 1.0 / np.sqrt(self.hidden_size)
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                for _, (name, shape) in self._param_shapes(k, d).items():
                    self.params[name] = self._rng.uniform(-bound, bound, size=shape).astype(self.dtype)

    def _weights(self, k: int, d: int, store: dict, what: str) -> dict:
        """The arrays of layer k, direction d, checked (params may have been
        replaced by the user); role -> array."""
        out = {}
        for role, (name, shape) in self._param_shapes(k, d).items():
            if name not in store:
                raise KeyError(f"{what}[{name!r}] is missing")
            a = store[name]
            if not isinstance(a, np.ndarray) or a.dtype != self.dtype:
                got = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
                raise TypeError(f"{what}[{name!r}] must be a numpy {self.dtype} array, got {got}")
            if a.shape != shape:
                raise ValueError(f"{what}[{name!r}] must be {shape_str(shape)}, got {shape_str(a.shape)}")
            if what == "grads":
                if not (a.flags.c_contiguous and a.flags.writeable):
                    raise ValueError(f"grads[{name!r}] must be a writable C-contiguous array")
                if any(np.shares_memory(a, p) for p in self.params.values()):
                    raise ValueError(f"grads[{name!r}] must not share memory with a parameter")
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
            out[role] = a
        return out

    def _kernel_weights(self, k: int, d: int) -> tuple:
        """The kernels' weight tuple of layer k, direction d. Validated once
        and reused while ``params`` holds the very same (contiguous) arrays: a
        replaced array is checked again; an in-place change needs no check."""
        cache = self.__dict__.setdefault("_wcache", {})
        hit = cache.get((k, d))
        params = self.params
        if hit is not None:
            names, arrays, tup = hit
            for n, a in zip(names, arrays):
                if params.get(n) is not a:
                    break
            else:
                return tup
        w = self._weights(k, d, params, "params")
        names = [name for name, _ in self._param_shapes(k, d).values()]
        tup = self._kernel_dict(w)
        if all(params[n] is w[r] for r, (n, _) in self._param_shapes(k, d).items()):
            cache[(k, d)] = (names, [params[n] for n in names], tup)
        else:  # a contiguous copy was made: check again next time
            cache.pop((k, d), None)
        return tup

    def _cell_spec(self) -> dict:
        """The cell's part of the kernels' CellSpec: kind and the cell's options."""
        raise NotImplementedError

    _delays: tuple = ()
    _periods: tuple = ()

    def _kernel_dict(self, w: dict) -> dict:
        """The kernels' weights by name (roles of _param_shapes -> the bindings' names)."""
        return {_KERNEL_NAMES[r]: a for r, a in w.items()}

    def get_config(self) -> dict:
        """Constructor arguments (JSON-able); parameters are saved separately."""
        cfg = {"input_size": self.input_size, "hidden_size": self.hidden_size,
               "num_layers": self.num_layers, "bias": self.bias, "batch_first": self.batch_first,
               "dropout": self.dropout, "bidirectional": self.bidirectional,
               "dtype": self.dtype.name, "seed": self.seed}
        cfg.update(self._extra_config())
        return cfg

    def _extra_config(self) -> dict:
        return {}

    def to_torch(self):
        """The equivalent torch.nn module with these weights (LSTM, GRU, RNN)."""
        return to_torch(self)

    def timescales(self) -> dict:
        """The time scales this layer is built with and the spectral radius of
        each recurrent matrix, per layer and direction: ``{"l0": {...},
        "l0_reverse": {...}, ...}`` (see :func:`rnncore.diagnostics.timescales`
        for what each cell reports)."""
        return {self._suffix(k, d)[1:]: self._timescale_info(self._suffix(k, d))
                for k in range(self.num_layers) for d in range(self.num_directions)}

    @classmethod
    def _demo_runs(cls, hidden: int) -> list:
        """The demo's runs of this class (python -m rnncore demo): (order,
        label, constructor keywords) each; the demo reads them from the registry."""
        return []

    def _timescale_info(self, s: str) -> dict:
        """The entries of :meth:`timescales` for the weights of suffix s."""
        return {"spectral_radius": {"weight_hh": _radius(self.params[f"weight_hh{s}"])}}

    def _gate_info(self, s: str, gates: str, keep_gate: str) -> dict:
        """Gated cells: each gate's recurrent block's radius, and the time
        constant 1 / (1 - sigma(b_ih + b_hh)) the keep gate gives at zero input."""
        H = self.hidden_size
        w = np.asarray(self.params[f"weight_hh{s}"], np.float64)
        j = gates.index(keep_gate)
        rows = slice(j * H, (j + 1) * H)
        b = np.zeros(H) if not self.bias else (np.asarray(self.params[f"bias_ih{s}"], np.float64)[rows]
                                               + np.asarray(self.params[f"bias_hh{s}"], np.float64)[rows])
        with np.errstate(divide="ignore"):
            tau = 1.0 / (1.0 - 1.0 / (1.0 + np.exp(-b)))
        return {"spectral_radius": {g: _radius(w[i * H:(i + 1) * H]) for i, g in enumerate(gates)},
                "gate_tau": tau}

    # -- states -----------------------------------------------------------
    _has_cell = False

    def _state_shape(self, B: int) -> tuple:
        return (self.num_layers * self.num_directions, B, self.hidden_size)

    def _state_letters(self) -> tuple:
        return ("L*D", "B", "H")

    def _state_doc(self, B: int) -> str:
        return f"an array {shape_str(self._state_shape(B))}"

    def _check_state(self, state, B: int, name: str = "state"):
        """state -> (h0, c0, step): arrays of _state_shape(B) or None, and an int."""
        if state is None:
            return None, None, 0
        shape, letters = self._state_shape(B), self._state_letters()
        if self._has_cell:
            if not isinstance(state, (tuple, list)) or len(state) != 2:
                raise TypeError(f"{name} must be a tuple (h, c) of arrays {shape_str(shape)}, "
                                f"got {type(state).__name__}")
            h = as_real_array(f"{name}[0] (h)", state[0], self.dtype)
            c = as_real_array(f"{name}[1] (c)", state[1], self.dtype)
            check_shape(f"{name}[0] (h)", h, shape, letters)
            check_shape(f"{name}[1] (c)", c, shape, letters)
            return h, c, 0
        if isinstance(state, (tuple, list)):
            raise TypeError(f"{name} must be {self._state_doc(B)}, got {type(state).__name__}")
        h = as_real_array(name, state, self.dtype)
        check_shape(name, h, shape, letters)
        return h, None, 0

    def _pack_state(self, h, c, step):
        return (h, c) if self._has_cell else h

    # -- input ------------------------------------------------------------
    def _check_input(self, x, lengths):
        x = as_real_array("x", x, self.dtype)
        I = self.input_size
        layout = ("B", "T", I) if self.batch_first else ("T", "B", I)
        if x.ndim != 3:
            raise ValueError(f"x must be 3-D {shape_str(layout)}, got {x.ndim}-D array of shape "
                             f"{shape_str(x.shape)}")
        if x.shape[2] != I:
            raise ValueError(f"x must be {shape_str(layout)}, got {shape_str(x.shape)}")
        B, T = (x.shape[0], x.shape[1]) if self.batch_first else (x.shape[1], x.shape[0])
        if T < 1:
            raise ValueError(f"x must have at least one time step, got T = 0 (shape {shape_str(x.shape)})")
        if B < 1:
            raise ValueError(f"x must have at least one batch row, got B = 0 (shape {shape_str(x.shape)})")
        lens = as_lengths(lengths, B, T)
        if lens is not None and int(lens.min()) < T:
            # padding is never read as input, but 0 * NaN in the weight-gradient
            # products would be: keep non-finite padding out
            pad = np.arange(T)[:, None] >= lens[None, :]
            if self.batch_first:
                pad = pad.T
            if not np.isfinite(x[pad]).all():
                x = x.copy()
                x[pad] = 0
        return x, T, B, lens

    def _seq_shape(self, T, B, width):
        return (B, T, width) if self.batch_first else (T, B, width)

    # -- forward / backward ----------------------------------------------
    def __call__(self, x, state=None, lengths=None):
        """Inference: ``y, state = layer(x, state=None, lengths=None)``.

        No tape is kept and no dropout applied; the kernels release the GIL,
        so calls from many threads on one layer run concurrently.
        """
        plan = self._plan
        if plan is not None and lengths is None:
            # the prepared call (a streamed step): None when it cannot take
            # this call as it is, and then the checked path below runs
            out = plan(x, state, self.params, get_num_threads())
            if out is not None:
                return out
        y, st, _ = self._run(x, state, lengths, train=False)
        return y, st

    def forward(self, x, state=None, lengths=None):
        """Training forward pass: ``y, state, tape``.

        Parameters
        ----------
        x : array (T, B, I), or (B, T, I) with ``batch_first``
        state : initial state or None (zeros); see the class docstring
        lengths : int array (B,) in [1, T] or None

        Returns
        -------
        y : array (T, B, D*H) (or (B, T, D*H)); 0 past each row's length
        state : final state, taken at each row's last valid step
        tape : :class:`Tape` for :meth:`backward`
        """
        return self._run(x, state, lengths, train=True)

    def _spec(self, d: int):
        """The kernels' CellSpec of direction d, made (and checked) once."""
        specs = self.__dict__.get("_specs")
        if specs is None:
            specs = [_core.CellSpec(hidden=self.hidden_size, num_dirs=self.num_directions, dir=dd,
                                    reverse=dd == 1, batch_first=self.batch_first, **self._cell_spec())
                     for dd in range(self.num_directions)]
            self._specs = specs
        return specs[d]

    def _tape_arrays(self, T, B) -> dict:
        H, G = self.hidden_size, self._gates
        hshape = self._seq_shape(T, B, H)
        if self._delays:
            hshape = (len(self._delays),) + hshape
        tape = {"gates": np.empty(self._seq_shape(T, B, G * H), self.dtype), "hprev": np.empty(hshape, self.dtype)}
        if self._has_cell:
            tape["c"] = np.empty(self._seq_shape(T, B, H), self.dtype)
        if self._cell_spec()["kind"] == _KIND.gru:
            tape["extra"] = np.empty(self._seq_shape(T, B, H), self.dtype)
        return tape

    _plan = None  # the prepared inference call, see _prepare

    def _prepare(self) -> None:
        """Prepare the inference call of a one-layer, one-direction layer whose
        weights passed the checks: later calls skip the Python-side checks
        while ``params`` holds the same arrays (the prepared call compares)."""
        self._plan = None
        if self.num_layers != 1 or self.num_directions != 1:
            return
        self._kernel_weights(0, 0)  # checks the weights, caches them if they can be
        hit = self.__dict__.get("_wcache", {}).get((0, 0))
        if hit is None:
            return
        names, arrays, tup = hit
        make = _core.Prepared_f32 if self.dtype == np.float32 else _core.Prepared_f64
        self._plan = make(self._spec(0), self.input_size, tup, list(names), list(arrays))
        self._plan_weights = tup

    def _run(self, x, state, lengths, train):
        x, T, B, lens = self._check_input(x, lengths)
        h0, c0, step0 = self._check_state(state, B)
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        if not train and L == 1 and D == 1 and \
                (self._plan is None or self.__dict__.get("_plan_weights") is not self._kernel_weights(0, 0)):
            self._prepare()
        fwd = _core.forward_f32 if self.dtype == np.float32 else _core.forward_f64
        threads = get_num_threads()
        hn = np.empty(self._state_shape(B), self.dtype)
        cn = np.empty_like(hn) if self._has_cell else None
        tape = Tape(self, (T, B), self.dtype) if train else None
        if tape is not None:
            tape.lengths, tape.h0, tape.c0, tape.step0 = lens, h0, c0, step0
        inp = x
        for k in range(L):
            y = np.empty(self._seq_shape(T, B, D * H), self.dtype)
            recs = []
            for d in range(D):
                i = k * D + d
                rec = self._tape_arrays(T, B) if train else None
                recs.append(rec)
                # In the binding's order (_core.pyi): matching 12 keywords costs 0.5 us a call.
                fwd(self._spec(d), inp, self._kernel_weights(k, d),  # spec, x, weights
                    None if h0 is None else h0[i], None if c0 is None else c0[i], lens,  # h0, c0, lengths
                    y, hn[i], None if cn is None else cn[i], rec, threads, step0)  # y, hn, cn, tape, ...
            if train:
                tape.inputs.append(inp)
                tape.records.append(recs)
            if k < L - 1 and train and self.training and self.dropout > 0.0:
                # inverted dropout between layers, in training mode only
                keep = 1.0 - self.dropout
                mask = (self._rng.random(y.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                tape.masks.append(mask)
                y = y * mask
            elif train:
                tape.masks.append(None)
            inp = y
        return inp, self._pack_state(hn, cn, step0 + T), tape

    def backward(self, tape, dy, dstate=None, *, dh=None, input_grad=True):
        """BPTT through the pass that made ``tape``; adds into :attr:`grads`.

        Parameters
        ----------
        tape : the :class:`Tape` from :meth:`forward`
        dy : array (T, B, D*H) (or (B, T, D*H)): gradient of the loss w.r.t. y
        dstate : gradient w.r.t. the final state (same structure), or None
        input_grad : bool
            ``False`` skips dx (the product of the gate gradients with W_ih),
            as autograd does for an input that needs no gradient: the first
            layer of a model. The parameter gradients are the same.

        Returns
        -------
        dx : array (T, B, I) (or (B, T, I)), or None with ``input_grad=False``
        dstate0 : gradient w.r.t. the initial state (zeros' gradient if None was given)

        With ``dh`` a dict, ``dh[k]`` receives layer k's (T, B, D*H) (or
        batch-first) total gradient dL/dh_t of every step, from the same pass
        (0 past each row's length); see rnncore.diagnostics.
        """
        if not isinstance(tape, Tape):
            raise TypeError(f"tape must be the Tape returned by this layer's forward(), got {type(tape).__name__}")
        if tape.layer is not self:
            raise TypeError("tape must be the Tape returned by this layer's forward(), got another layer's")
        if not isinstance(input_grad, (bool, np.bool_)):
            raise TypeError(f"input_grad must be a bool, got {type(input_grad).__name__} {input_grad!r}")
        T, B = tape.shape
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        dy = as_real_array("dy", dy, self.dtype)
        check_shape("dy", dy, self._seq_shape(T, B, D * H),
                    ("B", "T", "D*H") if self.batch_first else ("T", "B", "D*H"))
        dhn, dcn, _ = self._check_state(dstate, B, name="dstate")
        bwd = _core.backward_f32 if self.dtype == np.float32 else _core.backward_f64
        threads = get_num_threads()
        dh0 = np.zeros(self._state_shape(B), self.dtype)
        dc0 = np.zeros_like(dh0) if self._has_cell else None
        grad = dy
        for k in range(L - 1, -1, -1):
            inp = tape.inputs[k]
            dx = np.empty(inp.shape, self.dtype) if k > 0 or input_grad else None
            dh_k = None
            if dh is not None:
                dh_k = np.zeros(self._seq_shape(T, B, D * H), self.dtype)
                dh[k] = dh_k
            for d in range(D):
                g = self._weights(k, d, self.grads, "grads")
                i = k * D + d
                # In the binding's order (_core.pyi), as forward's call.
                bwd(self._spec(d), inp, self._kernel_weights(k, d),  # spec, x, weights
                    None if tape.h0 is None else tape.h0[i], None if tape.c0 is None else tape.c0[i],  # h0, c0
                    tape.lengths, tape.records[k][d], grad,  # lengths, tape, dy
                    None if dhn is None else dhn[i], None if dcn is None else dcn[i],  # dhn, dcn
                    dx, d == 1, dh0[i], None if dc0 is None else dc0[i],  # dx, dx_accumulate, dh0, dc0
                    self._kernel_dict(g), dh_k, threads, tape.step0)  # grads, dh_seq, threads, step0
            if k > 0:
                mask = tape.masks[k - 1]
                grad = dx if mask is None else dx * mask
            else:
                grad = dx
        return grad, self._pack_state(dh0, dc0, tape.step0)

    def __repr__(self) -> str:
        extra = self._extra_repr()
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, "
                f"dtype={self.dtype.name}{extra})")

    def _extra_repr(self) -> str:
        return ""


class LSTM(_Recurrent):
    """Long short-term memory layer, as ``torch.nn.LSTM``.

    Gates i, f, g, o: ``c_t = f*c_{t-1} + i*g``, ``h_t = o*tanh(c_t)``. With
    ``peephole=True``, ``weight_ch_l{k}`` (3, H) adds ``w_i*c_{t-1}``,
    ``w_f*c_{t-1}`` and ``w_o*c_t`` to the i, f, o pre-activations.
    State: ``(h, c)``, each (L*D, B, H).
    """

    _gates = 4
    _has_cell = True

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, peephole=False):
        if not isinstance(peephole, (bool, np.bool_)):
            raise TypeError(f"peephole must be a bool, got {type(peephole).__name__}")
        self.peephole = bool(peephole)
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed)

    def _param_shapes(self, k, d):
        out = super()._param_shapes(k, d)
        if self.peephole:
            out["w_ch"] = (f"weight_ch{self._suffix(k, d)}", (3, self.hidden_size))
        return out

    def _cell_spec(self):
        return {"kind": _KIND.lstm, "peephole": self.peephole}

    def _extra_repr(self):
        return ", peephole=True" if self.peephole else ""

    def _extra_config(self):
        return {"peephole": self.peephole}

    @classmethod
    def _demo_runs(cls, hidden):
        return [(60, "LSTM", {})]

    def _timescale_info(self, s):
        return self._gate_info(s, "ifgo", "f")


class GRU(_Recurrent):
    """Gated recurrent unit layer, as ``torch.nn.GRU``.

    Gates r, z, n: ``h_t = (1-z)*n + z*h_{t-1}`` with
    ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))`` (``reset_after=True``,
    PyTorch and cuDNN) or ``n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)``
    (``reset_after=False``, Cho et al. 2014). State: h (L*D, B, H).
    """

    _gates = 3

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, reset_after=True):
        if not isinstance(reset_after, (bool, np.bool_)):
            raise TypeError(f"reset_after must be a bool, got {type(reset_after).__name__}")
        self.reset_after = bool(reset_after)
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed)

    def _cell_spec(self):
        return {"kind": _KIND.gru, "reset_after": self.reset_after}

    def _extra_repr(self):
        return "" if self.reset_after else ", reset_after=False"

    def _extra_config(self):
        return {"reset_after": self.reset_after}

    @classmethod
    def _demo_runs(cls, hidden):
        return [(50, "GRU", {})]

    def _timescale_info(self, s):
        return self._gate_info(s, "rzn", "z")


class RNN(_Recurrent):
    """Elman layer, as ``torch.nn.RNN``: ``h_t = phi(W_ih x + b_ih + W_hh h + b_hh)``,
    ``phi`` tanh or relu. State: h (L*D, B, H)."""

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed)

    def _cell_spec(self):
        return {"kind": _KIND.rnn_relu if self.nonlinearity == "relu" else _KIND.rnn_tanh}

    @classmethod
    def _demo_runs(cls, hidden):
        return [(10, "Elman (tanh)", {})]

    def _extra_repr(self):
        return f", nonlinearity={self.nonlinearity!r}"

    def _extra_config(self):
        return {"nonlinearity": self.nonlinearity}


def _alphas(alpha, timescales, H: int, dtype) -> np.ndarray:
    """Per-unit alpha from a scalar/array alpha or a (tau_min, tau_max) range."""
    if alpha is not None and timescales is not None:
        raise ValueError("give alpha or timescales, not both")
    if timescales is not None:
        try:
            lo, hi = (float(v) for v in timescales)
        except (TypeError, ValueError):
            raise TypeError(f"timescales must be a pair (tau_min, tau_max), got {timescales!r}") from None
        if not (1.0 <= lo <= hi) or not np.isfinite(hi):
            raise ValueError(f"timescales must satisfy 1 <= tau_min <= tau_max, got ({lo}, {hi})")
        tau = np.geomspace(lo, hi, H) if H > 1 else np.array([lo])
        return (1.0 - 1.0 / tau).astype(dtype)
    a = np.asarray(alpha)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"alpha must be a real number or array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 0:
        a = np.full(H, float(a))
    if a.shape != (H,):
        raise ValueError(f"alpha must be a scalar or ({H},), got {shape_str(a.shape)}")
    if not np.all((a >= 0.0) & (a < 1.0)):
        bad = a[~((a >= 0.0) & (a < 1.0))][0]
        raise ValueError(f"alpha must be in [0, 1), got {bad}")
    return a.astype(dtype)


class LeakyRNN(_Recurrent):
    """Leaky units (Deep Learning 10.9.2):
    ``h_t = alpha*h_{t-1} + (1-alpha)*tanh(W_ih x + b_ih + W_hh h_{t-1} + b_hh)``.

    ``alpha`` is a scalar or an (H,) array in [0, 1); or ``timescales=(tau_min,
    tau_max)`` spaces per-unit time constants geometrically with
    ``alpha_j = 1 - 1/tau_j``. Neither given: ``timescales=(1, 100)``.
    ``alpha_l{k}`` is always in ``params`` and ``grads``; with
    ``learn_alpha=False`` optimizers leave it unchanged, and after an update
    it is kept in [0, 1). ``alpha=0`` is exactly the tanh Elman cell.
    State: h (L*D, B, H).
    """

    _ALPHA_MAX = 1.0 - 1e-6

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, alpha=None,
                 timescales=None, learn_alpha=False):
        if not isinstance(learn_alpha, (bool, np.bool_)):
            raise TypeError(f"learn_alpha must be a bool, got {type(learn_alpha).__name__}")
        self.learn_alpha = bool(learn_alpha)
        H = check_int("hidden_size", hidden_size, 1)
        if H * H > 2**31:  # before the per-unit alphas are built (the base class checks fully)
            raise ValueError(f"hidden_size={H} needs more than 2**31 parameters; at most 2**31 are supported")
        if alpha is None and timescales is None:
            timescales = (1.0, 100.0)
        self._alpha0 = _alphas(alpha, timescales, H, check_dtype(dtype))
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed)

    def _param_shapes(self, k, d):
        out = super()._param_shapes(k, d)
        out["alpha"] = (f"alpha{self._suffix(k, d)}", (self.hidden_size,))
        return out

    def _init_params(self):
        super()._init_params()
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                self.params[f"alpha{self._suffix(k, d)}"] = self._alpha0.copy()

    def _cell_spec(self):
        return {"kind": _KIND.leaky}

    def frozen_params(self):
        if self.learn_alpha:
            return set()
        return {name for name in self.params if name.startswith("alpha_")}

    def project_params(self):
        for name, a in self.params.items():
            if name.startswith("alpha_"):
                np.clip(a, 0.0, self._ALPHA_MAX, out=a)

    @classmethod
    def _demo_runs(cls, hidden):
        return [(20, "leaky, tau 1..100", {"timescales": (1, 100)})]

    def _extra_repr(self):
        return f", learn_alpha={self.learn_alpha}"

    def _extra_config(self):
        return {"learn_alpha": self.learn_alpha}  # alpha itself is a parameter

    def _timescale_info(self, s):
        info = super()._timescale_info(s)
        a = np.asarray(self.params[f"alpha{s}"], np.float64)
        w = np.asarray(self.params[f"weight_hh{s}"], np.float64)
        info["alpha"] = a.copy()
        info["tau"] = 1.0 / (1.0 - a)
        info["jacobian_radius"] = _radius(np.diag(a) + (1.0 - a)[:, None] * w)
        return info


class SkipRNN(_Recurrent):
    """Recurrent connections of several delays (Deep Learning 10.9.1, 10.9.3):
    ``h_t = tanh(W_ih x_t + b_ih + sum_d W_hh^(d) h_{t-d} + b_hh)``, one matrix
    ``weight_hh_d{d}_l{k}`` (H, H) per delay. ``delays=(1,)`` is the Elman cell,
    ``(1, d)`` adds skip connections through time, ``(d,)`` removes the
    length-one connections.

    State: the last ``max(delays)`` hidden vectors, (L*D, max_delay, B, H),
    newest last; a given initial history is honoured.
    """

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, delays=(1, 2)):
        if isinstance(delays, (int, np.integer)) and not isinstance(delays, bool):
            delays = (delays,)
        if not isinstance(delays, (tuple, list)) or len(delays) == 0:
            raise ValueError(f"delays must be a non-empty tuple of positive ints, got {delays!r}")
        ds = tuple(check_int("delays[i]", d, 1) for d in delays)
        if max(ds) > _core.MAX_DELAY:
            raise ValueError(f"delays must be <= 2**{_core.MAX_DELAY.bit_length() - 1}, got {max(ds)}")
        if len(set(ds)) != len(ds):
            raise ValueError(f"delays must not repeat, got {ds}")
        self.delays = ds
        self._delays = ds
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed)

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    def _param_shapes(self, k, d):
        H, s = self.hidden_size, self._suffix(k, d)
        out = {"w_ih": (f"weight_ih{s}", (H, self._layer_input_size(k)))}
        for dl in self.delays:
            out[f"w_hh:{dl}"] = (f"weight_hh_d{dl}{s}", (H, H))
        if self.bias:
            out["b_ih"] = (f"bias_ih{s}", (H,))
            out["b_hh"] = (f"bias_hh{s}", (H,))
        return out

    def _kernel_dict(self, w):
        out = {"weight_ih": w["w_ih"], "weight_hh": [w[f"w_hh:{dl}"] for dl in self.delays]}
        out.update({_KERNEL_NAMES[r]: w[r] for r in ("b_ih", "b_hh") if r in w})
        return out

    def _state_shape(self, B):
        return (self.num_layers * self.num_directions, self.max_delay, B, self.hidden_size)

    def _state_letters(self):
        return ("L*D", "max_delay", "B", "H")

    def _cell_spec(self):
        return {"kind": _KIND.skip, "delays": list(self.delays)}

    @classmethod
    def _demo_runs(cls, hidden):
        return [(30, "skip, delays (1, 10)", {"delays": (1, 10)})]

    def _extra_repr(self):
        return f", delays={self.delays}"

    def _extra_config(self):
        return {"delays": list(self.delays)}

    def _timescale_info(self, s):
        return {"delays": tuple(self.delays),
                "spectral_radius": {f"d{dl}": _radius(self.params[f"weight_hh_d{dl}{s}"]) for dl in self.delays}}


class ClockworkRNN(_Recurrent):
    """Clockwork RNN (Koutnik et al. 2014): H units in equal contiguous groups,
    one per period; group i is updated only at steps with ``t mod T_i == 0``
    (t counted from the first step ever seen, carried in the state) and keeps
    its value otherwise; an updated group reads the groups of period >= its
    own. ``weight_hh_l{k}`` (H, H) keeps the disallowed blocks at zero: they
    get no gradient and have no effect.

    State: ``(h, step)``, h (L*D, B, H) and ``step`` the int count of steps
    seen; ``dstate`` is ``(dh, step)``.
    """

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None,
                 periods=(1, 2, 4, 8)):
        if not isinstance(periods, (tuple, list)) or len(periods) == 0:
            raise ValueError(f"periods must be a non-empty tuple of increasing ints, got {periods!r}")
        ps = tuple(check_int("periods[i]", p, 1) for p in periods)
        if any(b <= a for a, b in zip(ps, ps[1:])):
            raise ValueError(f"periods must be strictly increasing, got {ps}")
        H = check_int("hidden_size", hidden_size, 1)
        if H % len(ps):
            raise ValueError(f"periods must divide hidden_size into equal groups: "
                             f"{len(ps)} groups do not divide hidden_size={H}")
        self.periods = ps
        self._periods = ps
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed)

    def block_mask(self) -> np.ndarray:
        """(H, H) bool: True where weight_hh may be nonzero (row group reads column group)."""
        group = np.repeat(np.arange(len(self.periods)), self.hidden_size // len(self.periods))
        return group[None, :] >= group[:, None]

    def _init_params(self):
        super()._init_params()
        mask = self.block_mask()
        for name, p in self.params.items():
            if name.startswith("weight_hh"):
                p[~mask] = 0

    def project_params(self):
        mask = self.block_mask()
        for name, p in self.params.items():
            if name.startswith("weight_hh"):
                p[~mask] = 0

    def _check_state(self, state, B, name="state"):
        if state is None:
            return None, None, 0
        shape = self._state_shape(B)
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} must be a tuple (h, step) with h {shape_str(shape)} and step "
                            f"an int, got {type(state).__name__}")
        h = as_real_array(f"{name}[0] (h)", state[0], self.dtype)
        check_shape(f"{name}[0] (h)", h, shape, self._state_letters())
        step = check_int(f"{name}[1] (step)", state[1], 0)
        if step > _core.MAX_STEP:
            raise ValueError(f"{name}[1] (step) must be <= 2**{_core.MAX_STEP.bit_length() - 1}, got {step}")
        return h, None, step

    def _pack_state(self, h, c, step):
        return (h, int(step))

    def _cell_spec(self):
        return {"kind": _KIND.clockwork, "periods": list(self.periods)}

    @classmethod
    def _demo_runs(cls, hidden):
        return [(40, "clockwork, 1..32", {"periods": (1, 2, 4, 8, 16, 32) if hidden % 6 == 0 else (1, 2, 4, 8)})]

    def _extra_repr(self):
        return f", periods={self.periods}"

    def _extra_config(self):
        return {"periods": list(self.periods)}

    def _timescale_info(self, s):
        info = super()._timescale_info(s)
        info["periods"] = tuple(self.periods)
        info["unit_periods"] = np.repeat(np.asarray(self.periods), self.hidden_size // len(self.periods))
        return info


class IndRNN(_Recurrent):
    """Independently recurrent layer (Li et al. 2018):
    ``h_t = phi(W_ih x_t + b_ih + w_hh * h_{t-1} + b_hh)``, ``phi`` relu (the
    paper's) or tanh, ``weight_hh_l{k}`` an (H,) vector: each unit recurs only
    on itself, so how long it remembers is set by its own ``|w_hh|``.

    ``weight_hh`` starts uniform in [0, 1], as in the paper.
    ``recurrent_max`` (a positive float, or None for no limit) keeps
    ``|weight_hh| <= recurrent_max`` at initialisation and after every
    optimizer update; the paper takes ``2 ** (1 / T)`` for sequences of T
    steps, so that no unit grows by more than 2 over the sequence.
    ``timescales()`` reports per unit ``recurrent_abs = |w_hh|`` and
    ``tau = -1 / ln|w_hh|`` (a unit's decay time in the linear regime; inf for
    ``|w_hh| >= 1``), and the largest ``|w_hh|`` as the spectral radius.
    State: h (L*D, B, H).
    """

    def __init__(self, input_size, hidden_size, *, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, nonlinearity="relu",
                 recurrent_max=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        if recurrent_max is not None:
            if isinstance(recurrent_max, bool) or not isinstance(recurrent_max, (int, float, np.integer,
                                                                                 np.floating)):
                raise TypeError(f"recurrent_max must be a positive float or None, "
                                f"got {type(recurrent_max).__name__}")
            if not (np.isfinite(recurrent_max) and recurrent_max > 0):
                raise ValueError(f"recurrent_max must be a positive finite float, got {recurrent_max}")
            recurrent_max = float(recurrent_max)
        self.nonlinearity = nonlinearity
        self.recurrent_max = recurrent_max
        super().__init__(input_size, hidden_size, num_layers=num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         dtype=dtype, seed=seed)

    def _param_shapes(self, k, d):
        out = super()._param_shapes(k, d)
        out["w_hh"] = (f"weight_hh{self._suffix(k, d)}", (self.hidden_size,))
        return out

    def _init_params(self):
        super()._init_params()
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                name = f"weight_hh{self._suffix(k, d)}"
                self.params[name] = self._rng.uniform(0.0, 1.0, size=self.hidden_size).astype(self.dtype)
        self.project_params()

    def project_params(self):
        if self.recurrent_max is None:
            return
        m = self.recurrent_max
        for name, a in self.params.items():
            if name.startswith("weight_hh"):
                np.clip(a, -m, m, out=a)

    def _cell_spec(self):
        return {"kind": _KIND.indrnn, "relu": self.nonlinearity == "relu"}

    @classmethod
    def _demo_runs(cls, hidden):
        return [(45, "IndRNN (relu)", {"recurrent_max": 2 ** (1 / 100)})]

    def _extra_repr(self):
        rm = "" if self.recurrent_max is None else f", recurrent_max={self.recurrent_max}"
        return f", nonlinearity={self.nonlinearity!r}{rm}"

    def _extra_config(self):
        return {"nonlinearity": self.nonlinearity, "recurrent_max": self.recurrent_max}

    def _timescale_info(self, s):
        u = np.abs(np.asarray(self.params[f"weight_hh{s}"], np.float64))
        with np.errstate(divide="ignore"):
            tau = np.where(u < 1.0, -1.0 / np.log(np.where(u < 1.0, u, 0.5)), np.inf)
        return {"spectral_radius": {"weight_hh": float(u.max())}, "recurrent_abs": u, "tau": tau}
