"""Numeric test helpers that need nothing but numpy (so that the reference's
own tests can use them without the extension): central differences, and
reading and replacing entries of nested argument tuples."""
from __future__ import annotations

import numpy as np


def central_diff(f, a, eps=1e-6):
    """d f() / d a by central differences, entry by entry (a float64, perturbed
    in place and restored)."""
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        fp = f()
        a[idx] = old - eps
        fm = f()
        a[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def deep_copy(v):
    """v with every array, tuple, list and dict in it copied (the bindings' arguments)."""
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, dict):
        return {k: deep_copy(e) for k, e in v.items()}
    if isinstance(v, tuple):
        return tuple(deep_copy(e) for e in v)
    if isinstance(v, list):
        return [deep_copy(e) for e in v]
    return v


def get_path(args, path):
    """args[path[0]][path[1]]... ."""
    v = args
    for p in path:
        v = v[p]
    return v


def replace_path(args, path, value):
    """A copy of the nested tuples/lists/dicts args with the entry at path set to value."""
    out = dict(args) if isinstance(args, dict) else list(args)
    out[path[0]] = value if len(path) == 1 else replace_path(args[path[0]], path[1:], value)
    return tuple(out) if isinstance(args, tuple) else out


def delete_path(args, path):
    """A copy of the nested dicts args without the entry at path."""
    out = dict(args)
    if len(path) == 1:
        del out[path[0]]
    else:
        out[path[0]] = delete_path(args[path[0]], path[1:])
    return out
