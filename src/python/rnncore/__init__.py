"""rnncore: fast CPU recurrent networks with fused C++ forward and BPTT kernels."""
from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# OpenMP workers that spin after each parallel region hold a core that the
# rest of a pipeline (or the other half of a team on a busy machine) needs:
# unless the user chose a policy, rnncore's OpenMP threads wait passively
# (read once, when the OpenMP runtime loads). rnncore's own per-step barrier
# spins a few microseconds before it sleeps, so its time loop does not depend
# on this. See rnncore.show_runtime().
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

try:
    from . import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - shown only on a broken install
    raise ImportError(
        "rnncore's C++ extension (_core) could not be imported; reinstall with "
        "`pip install .` from the source tree"
    ) from e

from .runtime import (available_isas, get_isa, get_num_threads, runtime_info,
                      set_num_threads, show_runtime)
from .layers import GRU, LSTM, RNN, ClockworkRNN, LeakyRNN, SkipRNN
from .modules import Dropout, Linear
from .model import History, NonFiniteError, Sequential
from . import callbacks, diagnostics, losses, optim
from .io import from_torch, load, load_checkpoint

__all__ = [
    "LSTM", "GRU", "RNN", "LeakyRNN", "SkipRNN", "ClockworkRNN",
    "Linear", "Dropout", "Sequential", "History", "NonFiniteError",
    "losses", "optim", "callbacks", "diagnostics", "load", "load_checkpoint", "from_torch",
    "set_num_threads", "get_num_threads", "show_runtime", "runtime_info",
    "available_isas", "get_isa", "__version__",
]
