"""Training callbacks: early stopping and checkpoints."""
from __future__ import annotations

import math

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint"]


class Callback:
    """Hooks called by :meth:`Sequential.fit`; ``logs`` holds the epoch's
    figures (``loss``, ``val_loss`` when validating)."""

    def on_train_begin(self, model, logs=None):
        pass

    def on_epoch_end(self, model, epoch, logs):
        pass

    def on_train_end(self, model, logs=None):
        pass


def _monitored(logs, monitor):
    if monitor not in logs:
        raise KeyError(f"monitor {monitor!r} not in the epoch logs {sorted(logs)}; "
                       "pass validation_data to fit() to monitor 'val_loss'")
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience``
    epochs; with ``restore_best`` put back the best epoch's parameters."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.restore_best = restore_best
        self.best, self.wait, self.best_params, self.stopped_epoch = math.inf, 0, None, None

    def on_train_begin(self, model, logs=None):
        self.best, self.wait, self.best_params, self.stopped_epoch = math.inf, 0, None, None

    def on_epoch_end(self, model, epoch, logs):
        value = _monitored(logs, self.monitor)
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            if self.restore_best:
                self.best_params = {k: v.copy() for k, v in model.params.items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            model.stop_training = True

    def on_train_end(self, model, logs=None):
        if self.restore_best and self.best_params is not None:
            for k, v in model.params.items():
                v[...] = self.best_params[k]


class ModelCheckpoint(Callback):
    """Save the model (and optimizer state, for resuming) after each epoch, or
    only when ``monitor`` improves with ``save_best_only``. ``path`` may hold
    ``{epoch}``."""

    def __init__(self, path, monitor="loss", save_best_only=False):
        self.path, self.monitor, self.save_best_only = str(path), monitor, save_best_only
        self.best = math.inf
        self.saved = []

    def on_epoch_end(self, model, epoch, logs):
        if self.save_best_only:
            value = _monitored(logs, self.monitor)
            if not value < self.best:
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1)
        model.save(path, optimizer=model.optimizer, epoch=epoch + 1)
        self.saved.append(path)
