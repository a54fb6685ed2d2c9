"""`gas dashboard`: optuna-dashboard on a study's storage, stopped cleanly by Ctrl-C or SIGTERM.

optuna-dashboard's Pareto plot draws the non-dominated COMPLETE trials and ignores constraints set with
`trial.set_constraint` (Optuna 5 stores them under keys the dashboard does not read). gas never lets an
infeasible proposal become COMPLETE (the study contract prunes it before training), so the dashboard's
front is the feasible front `gas pareto` prints.

The server is optuna-dashboard's WSGI app under the standard library's threaded wsgiref server (what its
own `optuna-dashboard` command runs), so gas owns the listening socket and can close it on a signal.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from types import FrameType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from gas.errors import GasError
from gas.storage import DEFAULT_STORAGE, open_study, redacted_url, storage_for


class _Server(ThreadingMixIn, WSGIServer):
    # Request threads must not keep the process alive after the listening socket is closed.
    daemon_threads = True
    block_on_close = False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """The dashboard polls every few seconds; one line per request would bury the URL."""


class _Stop(Exception):
    """Raised in the main thread by the signal handler to leave `serve_forever`."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop the server, even where SIGINT arrives ignored (a shell's background job)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, action in previous.items():
            signal.signal(signum, action)


def serve(study_name: str, storage: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard for `study_name` until Ctrl-C or SIGTERM; prints the URLs first."""
    import optuna_dashboard

    study = open_study(study_name, storage)
    backend = storage_for(storage)
    study_id = backend.get_study_id_from_name(study.study_name)
    app = optuna_dashboard.wsgi(backend)
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as error:
        hint = "; pick another with --port" if error.errno == errno.EADDRINUSE else ""
        raise GasError(f"cannot listen on {host}:{port}: {error.strerror}{hint}") from None
    bound_port = server.server_address[1]
    base = f"http://{host}:{bound_port}"
    try:
        with _stop_on_signals():
            print(f"optuna-dashboard for study {study_name!r} in {redacted_url(storage or DEFAULT_STORAGE)}")
            print(f"  study:   {base}/dashboard/studies/{study_id}")
            print(f"  studies: {base}/dashboard")
            if host not in ("127.0.0.1", "localhost"):
                print(f"  bound to {host}: other machines may reach it")
            print("Press Ctrl-C to stop.", flush=True)
            server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        server.server_close()
    print("dashboard stopped", file=sys.stderr, flush=True)
