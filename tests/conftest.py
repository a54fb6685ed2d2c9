"""Shared fixtures: the CLI as users run it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_gas(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `python -m gas ARGS` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "gas", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start_gas(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m gas ARGS` without waiting, output piped as text: for tests that stop it or talk to it."""
    return subprocess.Popen(
        [sys.executable, "-m", "gas", *args],
        cwd=cwd or REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def gas_cli():
    return run_gas


@pytest.fixture(scope="module")
def one_torch_thread():
    """The suite shares two cores with other work; one thread avoids OpenMP contention that is 10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
