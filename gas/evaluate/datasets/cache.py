"""The disk cache of decoded datasets: a fresh Ray worker reads megabytes instead of decoding images again."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from gas.evaluate.datasets.raw import RawSplits, RawTest

CACHE_VERSION = 3  # bump whenever a source or the generator changes what it produces

Raw = TypeVar("Raw", RawSplits, RawTest)


def cache_dir() -> Path:
    """Where decoded datasets are kept: $GAS_CACHE_DIR, else ~/.cache/gas."""
    return Path(os.environ.get("GAS_CACHE_DIR") or Path.home() / ".cache" / "gas")


def cache_key(text: str) -> str:
    """A short file-name-safe key for everything that decides a cached file's content."""
    return hashlib.sha256(f"{CACHE_VERSION}|{text}".encode()).hexdigest()[:20]


def load_or_build(path: Path, build: Callable[[], Raw], kind: type[Raw]) -> Raw:
    """The `kind` stored at `path`, or `build()`'s, stored there for the next process."""
    try:
        return kind(**torch.load(path, weights_only=True))
    except (OSError, RuntimeError, TypeError, pickle.UnpicklingError, EOFError):
        pass  # absent, half-written by a killed worker, or from another torch: rebuild it
    raw = build()
    write_atomically(path, lambda temporary: torch.save(raw.__dict__, temporary))
    return raw


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file and a rename, so concurrent workers never read half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        write(temporary)
        temporary.replace(path)
    except OSError:
        pass  # a read-only home only costs the next process a rebuild
