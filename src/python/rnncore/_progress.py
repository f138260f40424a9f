"""Progress display for long work: tqdm when installed, a plain fallback
otherwise, nothing in quiet mode."""
from __future__ import annotations

import sys
import time

__all__ = []


class _Plain:
    """A minimal text bar: redrawn in place on a terminal, one line per
    epoch elsewhere (logs, pipelines)."""

    def __init__(self, total, desc, file=None):
        self.total, self.desc, self.n = total, desc, 0
        self.file = file or sys.stderr
        self.tty = hasattr(self.file, "isatty") and self.file.isatty()
        self.t0 = time.perf_counter()
        self.postfix = ""

    def update(self, n=1):
        self.n += n
        if self.tty:
            self._draw("\r")

    def set_postfix_str(self, s):
        self.postfix = s

    def _draw(self, lead):
        width = 24
        done = int(width * self.n / max(1, self.total))
        bar = "#" * done + "." * (width - done)
        el = time.perf_counter() - self.t0
        self.file.write(f"{lead}{self.desc} [{bar}] {self.n}/{self.total} {el:.1f}s {self.postfix}")
        self.file.flush()

    def close(self):
        self._draw("\r" if self.tty else "")
        self.file.write("\n")
        self.file.flush()


class _Quiet:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _Quiet()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Plain(total, desc)
    return tqdm(total=total, desc=desc, leave=True)
