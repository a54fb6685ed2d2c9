"""Ray for a search: join a cluster the user names, or start a quiet local one that goes away after."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from gas.errors import GasError

CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Cluster:
    cpus: float
    gpus: float
    address: str  # "local" for a cluster this process started
    node_gpus: float = 0.0  # of `gpus`, those on this machine's own node


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at host:port."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise GasError(f"--ray-address {address!r} must be host:port (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise GasError(f"cannot reach a Ray cluster at {address}: {reason}") from None


def _worker_env() -> dict[str, str]:
    # Workers import gas and search spaces the way the driver does, including a space module that
    # lives in the user's working directory.
    paths = [os.getcwd(), *(p for p in sys.path if p and os.path.isdir(p))]
    existing = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": os.pathsep.join([*paths, *([existing] if existing else [])]),
        # Ray Tune runs each trial of a reused worker in a new thread, and glibc gives each new thread a
        # malloc arena of its own that keeps what it freed: a worker grew to 4.6x its first trial's memory
        # over 20 trials. One arena (and the trim after each trial) holds it at 1.03x, at no cost in
        # training time (experiments/worker_memory/worker_memory.md).
        "MALLOC_ARENA_MAX": "1",
    }


@contextlib.contextmanager
def ray_cluster(
    address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[Cluster]:
    """Connect to `address`, or start a local cluster with no dashboard and no auth token on disk.

    A local cluster gets `num_cpus` CPUs and `num_gpus` GPUs (None: all this machine has); Ray hands its
    GPUs out from the first this process sees, so `num_gpus` one fewer than the machine's keeps the last
    one from every trial. A local cluster is shut down on exit, so nothing is left running after a search.
    """
    import ray

    if address and address != "auto":
        _check_reachable(address.removeprefix("ray://"))
    started_here = not address
    if started_here:
        # Token auth writes ~/.ray/auth_token; a private loopback cluster needs neither.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    options = dict(
        include_dashboard=False,
        logging_level=logging.ERROR,
        log_to_driver=False,
        runtime_env={"env_vars": _worker_env()},
    )
    try:
        if started_here:
            # "local" starts a private cluster even when another one runs on this machine.
            ray.init(
                address="local", num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=256 * 1024**2, **options
            )
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise GasError(f"cannot start or join Ray ({address or 'local'}): {str(error).splitlines()[0]}") from None
    try:
        resources = ray.cluster_resources()
        node_gpus = 0.0  # a Ray Client driver (ray://) runs on no node of the cluster
        if not (address or "").startswith("ray://"):
            here = ray.get_runtime_context().get_node_id()
            node = next((node for node in ray.nodes() if node["NodeID"] == here and node["Alive"]), {})
            node_gpus = node.get("Resources", {}).get("GPU", 0.0)
        yield Cluster(resources.get("CPU", 0.0), resources.get("GPU", 0.0), address or "local", node_gpus)
    finally:
        ray.shutdown()
