"""The `gas` command line: one module per command, each with its parser beside its handler."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from gas.cli import audit, bench, compare, cost, dashboard, export, latency, pareto, sample, search
from gas.cli.search import search_config
from gas.errors import GasError

__all__ = ["build_parser", "main", "search_config"]

# In the order `gas --help` lists them.
COMMANDS = (cost, sample, search, export, pareto, audit, compare, dashboard, bench, latency)


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments get one line naming the problem and where help is, not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="gas", description="Generate fast vision transformers by constrained architecture search."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A warning meant for the user (e.g. images skipped as unreadable) is one line, like an error.
    warnings.formatwarning = lambda message, category, *_: f"gas {args.command}: warning: {message}\n"
    try:
        return args.run(args)
    except GasError as error:
        print(f"gas {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
