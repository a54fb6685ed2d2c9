"""Process pools for the experiment harnesses: spawned workers that stop when the process that started them does."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def _follow_parent(parent: int, threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)

    def watch() -> None:
        # A killed parent cannot shut its pool down, and a worker in the middle of an hour-long search
        # would otherwise run on, orphaned, competing with whatever runs next.
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


def worker_pool(workers: int, threads: int | None = None) -> ProcessPoolExecutor:
    """A pool of `workers` spawned processes, each with `threads` torch threads if given.

    Spawned, not forked: a forked child would inherit this process's torch thread pool and Ray state.
    """
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_follow_parent,
        initargs=(os.getpid(), threads),
    )
