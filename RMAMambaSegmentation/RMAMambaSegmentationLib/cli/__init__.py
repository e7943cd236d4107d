"""The ``rmamamba`` command: ``segment``, ``train``, ``evaluate`` and ``benchmark`` sub-commands.

Each sub-command lives in its own module ``<name>_command.py`` exposing ``add_parser(subparsers)`` and
``run(args) -> int``; heavy imports (torch) happen inside ``run`` so ``rmamamba --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from RMAMambaSegmentationLib import __version__
from RMAMambaSegmentationLib.runtime.devices import enable_mps_fallback

COMMANDS = ("segment", "train", "evaluate", "benchmark")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog="rmamamba", description="RMA-Mamba liver segmentation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"RMAMambaSegmentationLib.cli.{name}_command")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmamamba`` console script."""
    enable_mps_fallback()  # before any torch import: operators without an Apple-GPU kernel then run on the CPU
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
