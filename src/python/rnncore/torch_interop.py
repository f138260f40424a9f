"""Moving layers between rnncore and PyTorch: the configuration and weights
of a torch.nn.LSTM, GRU or RNN to the rnncore layer of the same name and
back. torch is an optional dependency, imported only by to_torch (a module
given to from_torch is already a torch object)."""
from __future__ import annotations

import numpy as np

from .module import registered

__all__ = ["from_torch", "to_torch"]

_TORCH_KIND = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "RNN"}


def from_torch(module, *, dtype=None):
    """An rnncore layer with the configuration and weights of a torch.nn.LSTM,
    GRU or RNN."""
    name = type(module).__name__
    if name not in _TORCH_KIND:
        raise TypeError(f"module must be a torch.nn.LSTM, GRU or RNN, got {name}")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"LSTM with proj_size={module.proj_size} has no rnncore equivalent")
    w0 = module.weight_ih_l0.detach()
    dt = np.dtype(dtype) if dtype is not None else np.dtype(str(w0.dtype).replace("torch.", ""))
    kw = dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
              dropout=float(module.dropout), bidirectional=module.bidirectional, dtype=dt)
    if name == "RNN":
        kw["nonlinearity"] = module.nonlinearity
    layer = registered()[_TORCH_KIND[name]](module.input_size, module.hidden_size, **kw)
    tparams = dict(module.named_parameters())
    if set(tparams) != set(layer.params):
        raise ValueError(f"parameter names differ: torch {sorted(tparams)} vs rnncore {sorted(layer.params)}")
    for k, p in layer.params.items():
        p[...] = tparams[k].detach().cpu().numpy().astype(dt)
    return layer


def to_torch(layer):
    """A torch.nn.LSTM, GRU or RNN with this layer's configuration and weights."""
    import torch
    reg = registered()
    if isinstance(layer, reg["LSTM"]):
        if layer.peephole:
            raise ValueError("torch.nn.LSTM has no peepholes: cannot convert LSTM(peephole=True)")
        cls, kw = torch.nn.LSTM, {}
    elif isinstance(layer, reg["GRU"]):
        if not layer.reset_after:
            raise ValueError("torch.nn.GRU has only reset_after=True: cannot convert GRU(reset_after=False)")
        cls, kw = torch.nn.GRU, {}
    elif type(layer) is reg["RNN"]:
        cls, kw = torch.nn.RNN, {"nonlinearity": layer.nonlinearity}
    else:
        raise TypeError(f"{type(layer).__name__} has no torch.nn equivalent (LSTM, GRU and RNN do)")
    tdt = torch.float64 if layer.dtype == np.float64 else torch.float32
    m = cls(layer.input_size, layer.hidden_size, num_layers=layer.num_layers, bias=layer.bias,
            batch_first=layer.batch_first, dropout=layer.dropout, bidirectional=layer.bidirectional,
            dtype=tdt, **kw)
    with torch.no_grad():
        for k, p in m.named_parameters():
            p.copy_(torch.from_numpy(np.array(layer.params[k], copy=True)))
    return m
