"""Command line: ``python -m rnncore demo`` (the main job) or ``runtime``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnncore")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="train recurrent cells on the adding problem")
    sub.add_parser("runtime", help="print the ISA, threads, OpenMP and BLAS in use")
    args, rest = parser.parse_known_args(argv)
    if args.command == "runtime":
        from . import show_runtime
        show_runtime()
        return 0
    from . import _demo
    return _demo.main(rest)


if __name__ == "__main__":
    sys.exit(main())
