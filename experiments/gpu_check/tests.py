"""GPU check, step tests: the suite's CUDA tests must run and pass here; a skipped one fails the check.

    python experiments/gpu_check/tests.py [--dry-run] [--out DIR]    # as run.py --only tests
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/gpu_check/NAME.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import subprocess
import tempfile
import xml.etree.ElementTree as ElementTree

from experiments.common.results import REPO
from experiments.gpu_check.harness import Check, Report, Sizes

CUDA_TEST_FILES = ("tests/test_train.py", "tests/test_gpu.py")
# Tests named for CUDA that check what happens without it (test_latency's) are not CUDA tests.
CUDA_TEST_SELECTION = "cuda and not without_cuda"


def junit_counts(path: Path) -> dict[str, int]:
    """Tests, failures, errors and skips in a pytest JUnit XML report."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    return {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")}


def run(report: Report, check: Check, sizes: Sizes) -> None:
    with tempfile.TemporaryDirectory(prefix="gas-gpu-check-scratch-") as scratch:
        junit = Path(scratch) / "cuda_tests.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            CUDA_TEST_SELECTION,
            f"--junitxml={junit}",
            *CUDA_TEST_FILES,
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
        if not junit.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"pytest exited {done.returncode} without a report: {tail[0]}")
        counts = junit_counts(junit)
    ran = counts["tests"] - counts["skipped"]
    summary = (
        f"`pytest -k '{CUDA_TEST_SELECTION}' {' '.join(CUDA_TEST_FILES)}`: {counts['tests']} selected, {ran} ran, "
        f"{counts['skipped']} skipped, {counts['failures'] + counts['errors']} failed"
    )
    if counts["failures"] or counts["errors"] or done.returncode not in (0, 5):
        check.status, check.detail = "failed", summary
    elif report.on_gpus:
        passed = counts["tests"] > 0 and counts["skipped"] == 0
        check.status = "passed" if passed else "failed"
        check.detail = summary + ("" if passed else " (a CUDA test must run here, not skip)")
    else:
        check.status, check.detail = report.skip_reason(), summary


if __name__ == "__main__":
    from experiments.gpu_check.run import main

    sys.exit(main(step="tests"))
