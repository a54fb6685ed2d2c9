"""What several commands share: the study and storage options, and how a command names its storage."""

from __future__ import annotations

import argparse

STORAGE_HELP = "Optuna storage URL (default: sqlite:///runs/gas.db)"


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help=STORAGE_HELP)


def add_study_options(parser: argparse.ArgumentParser, study_help: str) -> None:
    parser.add_argument("--study", required=True, help=study_help)
    add_storage_option(parser)


def storage_option(storage: str | None) -> str:
    """' --storage URL' for a command to print (password hidden), or '' for the default storage."""
    import shlex

    from gas.storage import redacted_url

    return f" --storage {shlex.quote(redacted_url(storage))}" if storage else ""
