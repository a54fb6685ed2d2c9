"""The harnesses' worker pool: workers run the harness's tasks and do not outlive a killed harness."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from experiments.common.workers import worker_pool
from tests.conftest import REPO

HARNESS = textwrap.dedent(
    """
    import os, time
    from experiments.common.workers import worker_pool

    if __name__ == "__main__":
        pool = worker_pool(1)
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 120)  # a task far longer than the test
        time.sleep(120)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0; it has stopped running all the same.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_pool_runs_tasks_in_other_processes():
    with worker_pool(2, threads=1) as pool:
        pids = {pool.submit(os.getpid).result() for _ in range(2)}
    assert os.getpid() not in pids


def test_workers_stop_when_the_harness_is_killed(tmp_path):
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    # The harness imports experiments.common as a benchmark script does, from the repository root.
    harness = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        worker = int(harness.stdout.readline())
        assert _alive(worker)
        harness.send_signal(signal.SIGKILL)  # no chance to shut its pool down
        harness.wait()
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), "the worker outlived its killed harness"
    finally:
        harness.kill()
