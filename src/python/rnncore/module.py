"""The base of everything that can sit in a :class:`rnncore.Sequential`, and
the registry of such classes.

A module holds ``params`` and ``grads`` (name -> array, the same names and
shapes), makes ``y = module(x)`` (inference) and ``y, tape = forward(x)`` /
``dx = backward(tape, dy)`` (training), and describes itself by
``get_config()``: the keyword arguments that rebuild it, JSON-able, so that
:func:`rnncore.load` can. ``train()`` / ``eval()`` switch ``training``: in
training mode ``forward`` draws dropout masks, in eval mode it draws none
(PyTorch's ``module.train()`` / ``module.eval()``); inference never drops.

Every public subclass (a name not starting with ``_``) enters the registry
as it is defined; saving and loading, the torch interop and the diagnostics
find classes there by name, so a new layer needs no list of its own
anywhere else.
"""
from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["Module", "registered"]

_REGISTRY: dict = {}


class Module:
    """Base of rnncore's layers and models (see the module docstring)."""

    #: Whether :meth:`forward` draws dropout masks; see :meth:`train`.
    training = True
    params: dict
    grads: dict

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if not cls.__name__.startswith("_"):
            # the first class of a name keeps it: rnncore's own, defined at
            # import, are not shadowed by a user's subclass of the same name
            _REGISTRY.setdefault(cls.__name__, cls)

    def train(self, mode=True):
        """Training mode (``mode=True``) or eval mode; returns the module."""
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"mode must be a bool, got {type(mode).__name__} {mode!r}")
        self.training = bool(mode)
        return self

    def eval(self):
        """Eval mode: :meth:`forward` draws no dropout masks; returns the module."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every gradient in :attr:`grads` to zero."""
        for g in self.grads.values():
            g[...] = 0

    def frozen_params(self) -> set:
        """Names of parameters optimizers must leave unchanged."""
        return set()

    def project_params(self) -> None:
        """Put parameters back in their domain after an update (no-op here)."""

    def get_config(self) -> dict:
        """Constructor arguments (JSON-able); parameters are saved separately."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to rebuild it (get_config)")


@contextlib.contextmanager
def scratch_pass(modules):
    """For one inspecting pass (the diagnostics, Sequential.hidden_grads):
    gradients go to scratch arrays (``grads``, the user's accumulated
    gradients, are untouched) and every module is in eval mode (no dropout
    masks, no random numbers drawn, so training runs stay reproducible);
    both are put back on exit."""
    saved = [(m, m.grads, getattr(m, "training", True)) for m in modules]
    try:
        for m in modules:
            m.grads = {k: np.zeros_like(v) for k, v in m.grads.items()}
            m.training = False
        yield
    finally:
        for m, grads, mode in saved:
            m.grads, m.training = grads, mode


def registered() -> dict:
    """Class name -> class of every registered module (a copy)."""
    return dict(_REGISTRY)
