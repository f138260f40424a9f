"""rnncore: fast CPU recurrent networks with fused C++ forward and BPTT kernels."""
from __future__ import annotations

__version__ = "0.1.0"

try:
    from . import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - shown only on a broken install
    raise ImportError(
        "rnncore's C++ extension (_core) could not be imported; reinstall with "
        "`pip install .` from the source tree"
    ) from e

from .runtime import (available_isas, get_isa, get_num_threads, runtime_info,
                      set_num_threads, show_runtime, tuning_info)
from .layers import *  # noqa: F403 - every recurrent layer (layers.__all__)
from .layers import __all__ as _layer_names
from .modules import Dropout, Linear
from .model import History, NonFiniteError, Sequential
from . import callbacks, diagnostics, losses, optim
from .io import from_torch, load, load_checkpoint

__all__ = [
    *_layer_names,
    "Linear", "Dropout", "Sequential", "History", "NonFiniteError",
    "losses", "optim", "callbacks", "diagnostics", "load", "load_checkpoint", "from_torch",
    "set_num_threads", "get_num_threads", "show_runtime", "runtime_info", "tuning_info",
    "available_isas", "get_isa", "__version__",
]
