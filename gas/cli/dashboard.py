"""`gas dashboard`: optuna-dashboard on a study's storage."""

from __future__ import annotations

import argparse

from gas.cli.common import add_study_options


def register(commands: argparse._SubParsersAction) -> None:
    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on a study's storage")
    add_study_options(dashboard, "study name (its URL is printed)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080; 0 picks one)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine)")
    dashboard.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gas.dashboard import serve

    serve(args.study, args.storage, args.host, args.port)
    return 0
