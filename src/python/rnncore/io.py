"""Saving and loading models as one ``.npz`` (parameters + a JSON config, no
pickle anywhere). Layer classes are found by name in the registry of
:mod:`rnncore.module`; ``from_torch`` / ``to_torch`` live in
:mod:`rnncore.torch_interop` and are re-exported here."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import optim
from .module import registered
from .torch_interop import from_torch, to_torch

__all__ = ["load", "load_checkpoint", "from_torch", "to_torch"]

FORMAT = "rnncore-model-1"


def _layer_classes() -> dict:
    """Name -> class of what a model's layers may be (not a model itself)."""
    return {n: c for n, c in registered().items() if n != "Sequential"}


def layer_config(layer) -> dict:
    name, reg = type(layer).__name__, _layer_classes()
    if reg.get(name) is not type(layer):
        why = "its name is taken by another registered class" if name in reg else "it is not registered"
        raise TypeError(f"cannot save a layer of type {name} ({why}: subclass rnncore.module.Module "
                        f"with a name of its own); known: {sorted(reg)}")
    cfg = {"class": name, "config": layer.get_config()}
    rng = getattr(layer, "_rng", None)
    if rng is not None:  # dropout masks continue as in an uninterrupted run
        cfg["rng_state"] = rng.bit_generator.state
    return cfg


def _npz_path(path) -> str:
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def save_model(model, path, *, optimizer=None, epoch=None) -> None:
    path = _npz_path(path)
    config = model.get_config()
    config["format"] = FORMAT
    if epoch is not None:
        config["epoch"] = int(epoch)
    arrays = {f"param:{k}": v for k, v in model.params.items()}
    if optimizer is not None:
        config["optimizer"] = optimizer.get_config()
        for k, v in optimizer.state_dict().items():
            arrays[f"optim:{k}"] = np.asarray(v)
    arrays["__config__"] = np.array(json.dumps(config))
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rnncore-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class _Bad(ValueError):
    pass


def _read(path):
    """(config dict, {name: array}) from a file, or a ValueError saying why not."""
    path = _npz_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            if "__config__" not in z.files:
                raise _Bad("it has no __config__ entry (not an rnncore model)")
            raw = z["__config__"]
            arrays = {name: z[name] for name in z.files if name != "__config__"}
    except _Bad as e:
        raise ValueError(f"{path}: {e}") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not a readable rnncore model file ({type(e).__name__}: {e})") from None
    if raw.dtype.kind != "U" or raw.shape != ():
        raise ValueError(f"{path}: __config__ must be a JSON string, got dtype {raw.dtype} shape {raw.shape}")
    try:
        config = json.loads(str(raw))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: __config__ is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: format must be {FORMAT!r}, got {got!r}")
    return path, config, arrays


def _build(path, config, arrays):
    Sequential = registered()["Sequential"]
    layers_cfg = config.get("layers")
    if not isinstance(layers_cfg, list) or not layers_cfg:
        raise ValueError(f"{path}: config 'layers' must be a non-empty list")
    reg = _layer_classes()
    layers = []
    for i, lc in enumerate(layers_cfg):
        if not isinstance(lc, dict) or not isinstance(lc.get("config"), dict):
            raise ValueError(f"{path}: layers[{i}] must be an object with a 'config' object")
        name = lc.get("class")
        if name not in reg:
            raise ValueError(f"{path}: layers[{i}] names an unknown layer class {name!r}; known: {sorted(reg)}")
        try:
            layer = reg[name](**lc["config"])
            if "rng_state" in lc and hasattr(layer, "_rng"):
                layer._rng.bit_generator.state = lc["rng_state"]
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: layers[{i}] ({name}) has a bad config: {e}") from None
        layers.append(layer)
    try:
        model = Sequential(*layers, readout=config.get("readout", "last"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad model config: {e}") from None
    params = model.params
    stored = {k[len("param:"):] for k in arrays if k.startswith("param:")}
    missing, extra = sorted(set(params) - stored), sorted(stored - set(params))
    if missing or extra:
        raise ValueError(f"{path}: parameters do not match the config (missing {missing}, unexpected {extra})")
    others = sorted(k for k in arrays if not k.startswith(("param:", "optim:")))
    if others:
        raise ValueError(f"{path}: unexpected entries {others}")
    for k, p in params.items():
        a = arrays[f"param:{k}"]
        if a.shape != p.shape or a.dtype != p.dtype:
            raise ValueError(f"{path}: parameter {k} must be {p.dtype} {p.shape}, got {a.dtype} {a.shape}")
    for k, p in params.items():  # only now, when everything checked out
        p[...] = arrays[f"param:{k}"]
    return model


def load(path):
    """Rebuild a model saved by ``model.save(path)``, bit-exact. A truncated,
    corrupt or foreign file raises ValueError; nothing is unpickled."""
    return _build(*_read(path))


def load_checkpoint(path):
    """``(model, optimizer, epoch)`` from a file written by ModelCheckpoint or
    ``model.save(path, optimizer=..., epoch=...)``; resume with
    ``model.fit(..., optimizer=optimizer, initial_epoch=epoch)``."""
    path, config, arrays = _read(path)
    model = _build(path, config, arrays)
    if "optimizer" not in config:
        raise ValueError(f"{path}: holds no optimizer state (saved without optimizer=)")
    try:
        opt = optim.from_config(config["optimizer"])
        opt.bind(model.params, model.frozen_params())
        opt.load_state_dict({k[len("optim:"):]: v for k, v in arrays.items() if k.startswith("optim:")})
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: bad optimizer state: {e}") from None
    opt._bound_to = model
    model.optimizer = opt
    return model, opt, int(config.get("epoch", 0))
