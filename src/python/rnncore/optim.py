"""Optimizers (torch.optim semantics), learning-rate schedules and gradient
clipping. Optimizers are built from hyper-parameters alone and bound to a
model's parameters later (Keras-style); they update the arrays in place."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from ._checks import shape_str

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop",
    "Schedule", "StepDecay", "ExponentialDecay", "CosineDecay",
    "global_norm", "clip_by_global_norm", "clip_by_value",
    "from_config", "get",
]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# -- argument checks -----------------------------------------------------------

def _number(name: str, value, *, lo: float | None = None, lo_open: bool = False,
            hi: float | None = None, hi_open: bool = True) -> float:
    """``value`` as a finite Python float within [lo, hi) (ends as asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    low_bad = lo is not None and (v <= lo if lo_open else v < lo)
    high_bad = hi is not None and (v >= hi if hi_open else v > hi)
    if not math.isfinite(v) or low_bad or high_bad:
        if lo is not None and hi is not None:
            want = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            want = f"{'>' if lo_open else '>='} {lo:g}"
        else:
            want = "finite"
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_lr(lr):
    """A positive float, or a schedule ``step -> lr`` (checked at step 0)."""
    if callable(lr) and not isinstance(lr, type):
        _lr_value(lr, 0)
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a positive number or a schedule callable(step) -> float, "
                        f"got {type(lr).__name__} {lr!r}")
    return _number("lr", lr, lo=0.0, lo_open=True)


def _lr_value(schedule, step: int) -> float:
    v = schedule(step)
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"lr schedule {schedule!r} must return a number, got "
                        f"{type(v).__name__} {v!r} at step {step}") from None
    if not math.isfinite(f) or f < 0:
        raise ValueError(f"lr schedule {schedule!r} must return a finite number >= 0, "
                         f"got {v!r} at step {step}")
    return f


# -- schedules -----------------------------------------------------------------

class Schedule:
    """A learning-rate schedule: ``schedule(step) -> lr``, step counting from 0."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        cfg = self.get_config()
        cfg.pop("class_name")
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"


class StepDecay(Schedule):
    """``initial * gamma ** (step // step_size)``."""

    def __init__(self, initial: float, step_size: int, gamma: float):
        self.initial = _number("initial", initial, lo=0.0, lo_open=True)
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _number("gamma", gamma, lo=0.0, lo_open=True)

    def __call__(self, step: int) -> float:
        return self.initial * self.gamma ** (int(step) // self.step_size)

    def get_config(self) -> dict:
        return {"class_name": "StepDecay", "initial": self.initial,
                "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """``initial * gamma ** step``."""

    def __init__(self, initial: float, gamma: float):
        self.initial = _number("initial", initial, lo=0.0, lo_open=True)
        self.gamma = _number("gamma", gamma, lo=0.0, lo_open=True)

    def __call__(self, step: int) -> float:
        return self.initial * self.gamma ** int(step)

    def get_config(self) -> dict:
        return {"class_name": "ExponentialDecay", "initial": self.initial, "gamma": self.gamma}


class CosineDecay(Schedule):
    """``final + (initial - final) * (1 + cos(pi * step / total_steps)) / 2``
    for step < total_steps, then ``final``."""

    def __init__(self, initial: float, total_steps: int, final: float = 0.0):
        self.initial = _number("initial", initial, lo=0.0, lo_open=True)
        self.total_steps = _int("total_steps", total_steps, 1)
        self.final = _number("final", final, lo=0.0)

    def __call__(self, step: int) -> float:
        step = int(step)
        if step >= self.total_steps:
            return self.final
        cos = 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))
        return self.final + (self.initial - self.final) * cos

    def get_config(self) -> dict:
        return {"class_name": "CosineDecay", "initial": self.initial,
                "total_steps": self.total_steps, "final": self.final}


# -- optimizers ----------------------------------------------------------------

class Optimizer:
    """Base optimizer: hyper-parameters at construction, parameters at ``bind``.

    ``bind(params, frozen)`` keeps a reference to ``params`` (name -> float32
    or float64 array) and updates those arrays in place on each
    ``step(grads)``; state (moments, momentum buffers) is allocated lazily in
    each parameter's dtype, the first time the parameter gets a gradient.
    ``lr`` is a positive float or a schedule ``step -> lr`` (step = the
    number of steps taken before this one).

    ``state_dict()`` is flat: ``"iterations"`` plus ``"<slot>/<param name>"``
    arrays (e.g. ``"m/weight_ih_l0"``) and, for Adam-type optimizers,
    ``"step/<param name>"`` ints (each parameter's own step count, as in
    torch.optim). ``load_state_dict`` works before or after ``bind`` and
    continues bit-for-bit.
    """

    _per_param_step = False

    def __init__(self, lr):
        self._lr = _check_lr(lr)
        self._params: Mapping[str, np.ndarray] | None = None
        self._frozen: frozenset = frozenset()
        self._iterations = 0
        self._state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self._slots()}
        self._steps: dict[str, int] = {}
        self._scratch: dict[np.dtype, tuple[np.ndarray, np.ndarray]] = {}

    # -- hyper-parameters --

    @property
    def lr(self):
        """The learning rate: a float or a schedule ``step -> float``."""
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        self._lr = _check_lr(value)

    @property
    def iterations(self) -> int:
        """Number of ``step`` calls so far."""
        return self._iterations

    @property
    def frozen(self) -> frozenset:
        return self._frozen

    def current_lr(self) -> float:
        """The learning rate the next ``step`` will use."""
        if callable(self._lr):
            return _lr_value(self._lr, self._iterations)
        return self._lr

    def _hyper(self) -> dict:
        return {}

    def get_config(self) -> dict:
        """JSON-able hyper-parameters with ``"class_name"``; see ``from_config``."""
        if callable(self._lr):
            if not hasattr(self._lr, "get_config"):
                raise TypeError(
                    f"lr schedule {self._lr!r} has no get_config(); use StepDecay, "
                    "ExponentialDecay, CosineDecay or a Schedule subclass to save the optimizer")
            lr = self._lr.get_config()
        else:
            lr = self._lr
        hyper = {k: list(v) if isinstance(v, tuple) else v for k, v in self._hyper().items()}
        return {"class_name": type(self).__name__, "lr": lr, **hyper}

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self._hyper().items())
        return f"{type(self).__name__}(lr={self._lr!r}{', ' if hyper else ''}{hyper})"

    # -- binding and state --

    def _slots(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays."""
        return ()

    def bind(self, params: Mapping[str, np.ndarray], frozen=frozenset()) -> "Optimizer":
        """Attach to ``params`` (updated in place); ``frozen`` names are never updated.

        State already held (from earlier steps or ``load_state_dict``) is kept
        and must match ``params`` in names and shapes; ``reset()`` drops it.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of name -> np.ndarray, got {type(params).__name__}")
        for name, p in params.items():
            if not isinstance(name, str):
                raise TypeError(f"params keys must be str, got {type(name).__name__} {name!r}")
            if not isinstance(p, np.ndarray) or p.dtype not in _FLOATS:
                what = f"dtype {p.dtype}" if isinstance(p, np.ndarray) else type(p).__name__
                raise TypeError(f"params[{name!r}] must be a float32 or float64 np.ndarray, got {what}")
            if not p.flags.writeable:
                raise ValueError(f"params[{name!r}] must be writeable (it is updated in place)")
        if isinstance(frozen, str):
            raise TypeError(f"frozen must be a set of parameter names, got str {frozen!r}")
        frozen = frozenset(frozen)
        unknown = sorted(n for n in frozen if n not in params)
        if unknown:
            raise ValueError(f"frozen names must be keys of params, got unknown {unknown}")
        self._adopt_state(params)
        self._params = params
        self._frozen = frozen
        return self

    def _adopt_state(self, params: Mapping[str, np.ndarray]) -> None:
        """Check the held state against ``params`` and cast it to their dtypes."""
        for slot, arrays in self._state.items():
            for name, a in list(arrays.items()):
                if name not in params:
                    raise ValueError(f"optimizer state has {slot}/{name!r} but params has no "
                                     f"{name!r}; call reset() to drop the state")
                p = params[name]
                if a.shape != p.shape:
                    raise ValueError(f"optimizer state {slot}/{name} must be {shape_str(p.shape)} "
                                     f"(the shape of params[{name!r}]), got {shape_str(a.shape)}")
                if a.dtype != p.dtype:
                    arrays[name] = a.astype(p.dtype)
        for name in self._steps:
            if name not in params:
                raise ValueError(f"optimizer state has step/{name!r} but params has no "
                                 f"{name!r}; call reset() to drop the state")

    def reset(self) -> None:
        """Drop all state and set ``iterations`` to 0 (the binding stays)."""
        self._iterations = 0
        self._state = {s: {} for s in self._slots()}
        self._steps = {}

    def state_dict(self) -> dict:
        """Flat copy of the state: ``"iterations"``, ``"<slot>/<name>"`` arrays,
        ``"step/<name>"`` ints (Adam, AdamW). Fits in an ``.npz``."""
        d: dict = {"iterations": self._iterations}
        for slot, arrays in self._state.items():
            for name, a in arrays.items():
                d[f"{slot}/{name}"] = a.copy()
        for name, s in self._steps.items():
            d[f"step/{name}"] = s
        return d

    def load_state_dict(self, d: Mapping) -> None:
        """Replace the state with ``d`` (from ``state_dict``, possibly via an ``.npz``)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(d).__name__}")
        if "iterations" not in d:
            raise ValueError("state_dict must have an 'iterations' entry, got keys "
                             f"{sorted(d)}")
        iterations = self._load_int("iterations", d["iterations"])
        state: dict[str, dict[str, np.ndarray]] = {s: {} for s in self._slots()}
        steps: dict[str, int] = {}
        for key, value in d.items():
            if key == "iterations":
                continue
            slot, sep, name = str(key).partition("/")
            if sep and slot == "step" and self._per_param_step:
                steps[name] = self._load_int(key, value)
            elif sep and slot in state:
                a = np.array(value, copy=True)
                if a.dtype.kind != "f":
                    raise TypeError(f"state_dict[{key!r}] must be a float array, got dtype {a.dtype}")
                state[slot][name] = a
            else:
                want = ["'iterations'"] + [f"'{s}/<name>'" for s in self._slots()]
                if self._per_param_step:
                    want.append("'step/<name>'")
                raise ValueError(f"unexpected key {key!r} in state_dict for {type(self).__name__}; "
                                 f"expected {', '.join(want)}")
        if self._per_param_step:
            for slot, arrays in state.items():
                if set(arrays) != set(steps):
                    raise ValueError(f"state_dict must hold {slot}/<name> and step/<name> for the same "
                                     f"names, got {sorted(arrays)} and {sorted(steps)}")
        old = (self._state, self._steps)
        self._state, self._steps = state, steps
        if self._params is not None:
            try:
                self._adopt_state(self._params)
            except ValueError:
                self._state, self._steps = old
                raise
        self._iterations = iterations

    @staticmethod
    def _load_int(key: str, value) -> int:
        a = np.asarray(value)
        if a.shape != () or a.dtype.kind not in "iu" or int(a) < 0:
            raise ValueError(f"state_dict[{key!r}] must be an int >= 0, got {value!r}")
        return int(a)

    # -- stepping --

    def _buffers(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two scratch arrays shaped like ``p``, reused across steps and parameters."""
        pair = self._scratch.get(p.dtype)
        if pair is None or pair[0].size < p.size:
            pair = (np.empty(p.size, p.dtype), np.empty(p.size, p.dtype))
            self._scratch[p.dtype] = pair
        return pair[0][:p.size].reshape(p.shape), pair[1][:p.size].reshape(p.shape)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One update of the bound parameters from ``grads`` (name -> array).

        Frozen names are skipped and parameters without a gradient are left
        as they are; ``iterations`` always advances by one.
        """
        if self._params is None:
            raise RuntimeError(f"{type(self).__name__}.step called before bind(params)")
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads must be a dict of name -> np.ndarray, got {type(grads).__name__}")
        lr = self.current_lr()
        params = self._params
        work = []
        for name, g in grads.items():
            if name not in params:
                raise ValueError(f"grads[{name!r}] has no matching parameter; bound params are "
                                 f"{sorted(params)}")
            if name in self._frozen:
                continue
            p = params[name]
            g = np.asarray(g, dtype=p.dtype)
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] must be {shape_str(p.shape)}, got {shape_str(g.shape)}")
            work.append((name, p, g))
        for name, p, g in work:
            self._update(name, p, g, lr, *self._buffers(p))
        self._iterations += 1

    def _slot(self, slot: str, name: str, p: np.ndarray) -> np.ndarray:
        arrays = self._state[slot]
        a = arrays.get(name)
        if a is None or a.shape != p.shape:
            if a is not None:
                raise ValueError(f"optimizer state {slot}/{name} is {shape_str(a.shape)} but "
                                 f"params[{name!r}] is now {shape_str(p.shape)}; call reset()")
            a = arrays[name] = np.zeros_like(p, order="C")
        elif a.dtype != p.dtype:
            a = arrays[name] = a.astype(p.dtype)
        return a

    def _update(self, name: str, p: np.ndarray, g: np.ndarray, lr: float,
                t1: np.ndarray, t2: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    ``g += weight_decay * p``; ``b = momentum * b + g`` (``b = g`` on the first
    step); ``g = g + momentum * b`` if nesterov else ``b``; ``p -= lr * g``.
    """

    def __init__(self, lr=0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        self.momentum = _number("momentum", momentum, lo=0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__} {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError(f"nesterov=True needs momentum > 0, got momentum={momentum!r}")
        self.weight_decay = _number("weight_decay", weight_decay, lo=0.0)
        super().__init__(lr)

    def _slots(self):
        return ("momentum_buffer",) if self.momentum else ()

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def _update(self, name, p, g, lr, t1, t2):
        if self.weight_decay:
            np.multiply(p, self.weight_decay, out=t1)
            t1 += g
            g = t1
        if self.momentum:
            bufs = self._state["momentum_buffer"]
            b = bufs.get(name)
            if b is None:
                b = bufs[name] = np.array(g, order="C", copy=True)
            else:
                b = self._slot("momentum_buffer", name, p)
                b *= self.momentum
                b += g
            if self.nesterov:
                np.multiply(b, self.momentum, out=t2)
                t2 += g
                g = t2
            else:
                g = b
        np.multiply(g, lr, out=t2)
        p -= t2


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam`` (L2 ``weight_decay``
    added to the gradient; bias-corrected moments; eps outside the sqrt):

    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g²``,
    ``p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)``,
    t = the parameter's own step count.
    """

    _per_param_step = True
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_number("betas[0]", betas[0], lo=0.0, hi=1.0),
                      _number("betas[1]", betas[1], lo=0.0, hi=1.0))
        self.eps = _number("eps", eps, lo=0.0)
        self.weight_decay = _number("weight_decay", weight_decay, lo=0.0)
        super().__init__(lr)

    def _slots(self):
        return ("m", "v")

    def _hyper(self):
        return {"betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay}

    def _update(self, name, p, g, lr, t1, t2):
        b1, b2 = self.betas
        m = self._slot("m", name, p)
        v = self._slot("v", name, p)
        t = self._steps.get(name, 0) + 1
        self._steps[name] = t
        if self.weight_decay:
            if self._decoupled:
                p *= 1.0 - lr * self.weight_decay  # AdamW: p -= lr * wd * p
            else:
                np.multiply(p, self.weight_decay, out=t1)
                t1 += g
                g = t1
        np.subtract(g, m, out=t2)               # m += (1-b1) (g - m)
        t2 *= 1.0 - b1
        m += t2
        v *= b2                                 # v = b2 v + (1-b2) g*g
        np.multiply(g, g, out=t2)
        t2 *= 1.0 - b2
        v += t2
        step_size = lr / (1.0 - b1 ** t)
        np.sqrt(v, out=t1)                      # g is dead from here: t1 is free
        t1 /= math.sqrt(1.0 - b2 ** t)
        t1 += self.eps
        np.divide(m, t1, out=t1)
        t1 *= step_size
        p -= t1


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as
    ``torch.optim.AdamW``: ``p *= 1 - lr * weight_decay`` before the Adam step."""

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop`` (not centered):

    ``g += weight_decay * p``; ``s = alpha s + (1-alpha) g²``;
    ``d = g / (sqrt(s) + eps)``; with momentum ``b = momentum b + d`` and
    ``p -= lr b``, else ``p -= lr d``.
    """

    def __init__(self, lr=1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        self.alpha = _number("alpha", alpha, lo=0.0, hi=1.0)
        self.eps = _number("eps", eps, lo=0.0)
        self.momentum = _number("momentum", momentum, lo=0.0)
        self.weight_decay = _number("weight_decay", weight_decay, lo=0.0)
        super().__init__(lr)

    def _slots(self):
        return ("square_avg", "momentum_buffer") if self.momentum else ("square_avg",)

    def _hyper(self):
        return {"alpha": self.alpha, "eps": self.eps, "momentum": self.momentum,
                "weight_decay": self.weight_decay}

    def _update(self, name, p, g, lr, t1, t2):
        s = self._slot("square_avg", name, p)
        if self.weight_decay:
            np.multiply(p, self.weight_decay, out=t1)
            t1 += g
            g = t1
        s *= self.alpha
        np.multiply(g, g, out=t2)
        t2 *= 1.0 - self.alpha
        s += t2
        np.sqrt(s, out=t2)
        t2 += self.eps
        np.divide(g, t2, out=t2)
        if self.momentum:
            b = self._slot("momentum_buffer", name, p)
            b *= self.momentum
            b += t2
            np.multiply(b, lr, out=t2)
        else:
            t2 *= lr
        p -= t2


# -- configs -------------------------------------------------------------------

_CLASSES = {c.__name__: c for c in (SGD, Adam, AdamW, RMSprop, StepDecay, ExponentialDecay,
                                      CosineDecay)}


def from_config(cfg: Mapping):
    """Rebuild an optimizer (or schedule) from its ``get_config()`` dict."""
    if not isinstance(cfg, Mapping) or "class_name" not in cfg:
        raise ValueError(f"cfg must be a dict with a 'class_name' entry, got {cfg!r}")
    kwargs = dict(cfg)
    name = kwargs.pop("class_name")
    cls = _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"cfg['class_name'] must be one of {sorted(_CLASSES)}, got {name!r}")
    if isinstance(kwargs.get("lr"), Mapping):
        kwargs["lr"] = from_config(kwargs["lr"])
    if "betas" in kwargs and isinstance(kwargs["betas"], list):
        kwargs["betas"] = tuple(kwargs["betas"])
    try:
        return cls(**kwargs)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise ValueError(f"cfg for {name} has an unknown entry: {e}") from None
        raise


_OPTIMIZER_NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(name_or_optimizer) -> Optimizer:
    """An optimizer with default hyper-parameters from its name ("sgd", "adam",
    "adamw", "rmsprop"; case-insensitive), or an ``Optimizer`` instance as is."""
    if isinstance(name_or_optimizer, Optimizer):
        return name_or_optimizer
    if isinstance(name_or_optimizer, str) and name_or_optimizer.lower() in _OPTIMIZER_NAMES:
        return _OPTIMIZER_NAMES[name_or_optimizer.lower()]()
    valid = ", ".join(repr(n) for n in _OPTIMIZER_NAMES)
    raise ValueError(f"optimizer must be one of {valid} or a rnncore.optim.Optimizer instance, "
                     f"got {name_or_optimizer!r}")


# -- gradient clipping (Pascanu et al. 2013) -------------------------------------

def _arrays(grads):
    return list(grads.values()) if isinstance(grads, Mapping) else list(grads)


def global_norm(grads) -> float:
    """sqrt of the sum of squares of every entry of every array in ``grads``
    (a dict name -> array), accumulated in float64."""
    total = 0.0
    arrays = _arrays(grads)
    with np.errstate(over="ignore", invalid="ignore"):
        for g in arrays:
            r = np.asarray(g, dtype=np.float64).reshape(-1)
            # einsum's own loop, not numpy's BLAS: its threads would spin
            # beside rnncore's team (see runtime.py)
            total += float(np.einsum("i,i->", r, r))
    if math.isinf(total):
        # Squares overflowed float64 though the entries may be finite: rescale.
        big = max((float(np.max(np.abs(g))) for g in arrays if np.size(g)), default=0.0)
        if math.isfinite(big) and big > 0:
            total = 0.0
            for g in arrays:
                r = np.asarray(g, dtype=np.float64).reshape(-1) / big
                total += float(np.einsum("i,i->", r, r))
            return big * math.sqrt(total)
    return math.sqrt(total)


def clip_by_global_norm(grads, max_norm: float) -> float:
    """Scale every array of ``grads`` in place by ``max_norm / norm`` when the
    global norm exceeds ``max_norm``. Returns the norm before clipping; a
    non-finite norm leaves ``grads`` untouched (the caller decides)."""
    max_norm = _number("max_norm", max_norm, lo=0.0, lo_open=True)
    norm = global_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in _arrays(grads):
            g *= g.dtype.type(scale)
    return norm


def clip_by_value(grads, clip_value: float) -> None:
    """Clip every array of ``grads`` in place to ``[-clip_value, clip_value]``."""
    v = _number("clip_value", clip_value, lo=0.0, lo_open=True)
    for g in _arrays(grads):
        np.clip(g, -v, v, out=g)
