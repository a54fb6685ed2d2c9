"""Training on GPUs: how trials are packed, which proxy a GPU gets, the per-process device copy of the data,
and the GPU check's harness (its dry run, on the CPU). Tests named with "cuda" need a CUDA device; the GPU
check runs them and fails if they skip."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gas.cli import main as gas_main
from gas.defaults import TRIALS_PER_GPU
from gas.errors import GasError
from gas.evaluate import train as training
from gas.evaluate.datasets import load_dataset
from gas.evaluate.proxy import GPU_PROXY, ProxyConfig, check_data, default_proxy, evaluate
from gas.search import SearchConfig
from gas.search.early_stop import EarlyStopping
from gas.search.ray_tune import gpus_per_trial
from gas.search.sampling import sample_genomes
from tests.conftest import REPO


@pytest.fixture
def empty_device_cache():
    """Each test starts and leaves with no device copies, whatever ran before it in this process."""
    training._device_data.clear()
    yield training._device_data
    training._device_data.clear()


# ---- packing ------------------------------------------------------------------------------------------


def test_gas_packs_trials_on_gpus_and_takes_none_without():
    assert gpus_per_trial(1, None) == pytest.approx(1 / TRIALS_PER_GPU)
    assert gpus_per_trial(8, None) == pytest.approx(1 / TRIALS_PER_GPU)  # per trial, whatever the GPU count
    assert gpus_per_trial(0, None) == 0.0
    assert gpus_per_trial(1, None, device="cpu") == 0.0  # --device cpu on a GPU machine


def test_gpus_per_trial_flag_overrides_the_packing():
    assert gpus_per_trial(1, 1.0) == 1.0
    assert gpus_per_trial(4, 0.125) == 0.125
    assert gpus_per_trial(1, 0.0) == 0.0
    assert gpus_per_trial(1, 0.0, device="cpu") == 0.0
    with pytest.raises(GasError, match="--device cpu trains on CPUs"):
        gpus_per_trial(1, 0.5, device="cpu")
    with pytest.raises(GasError, match="0 or more"):
        gpus_per_trial(1, -1.0)


# ---- which proxy --------------------------------------------------------------------------------------


def test_gpus_get_the_gpu_proxy_and_cpus_the_cpu_one():
    assert default_proxy(False) == ProxyConfig()
    assert default_proxy(True) == GPU_PROXY
    # A proxy a GPU affords and in which mask units of 8 tokens do not span the image: 64px / stride 4 = 16
    # tokens a side, 2x2 units of 8.
    assert GPU_PROXY.resolution // 4 // 8 == 2
    assert GPU_PROXY.train_size > ProxyConfig().train_size and GPU_PROXY.train.epochs > ProxyConfig().train.epochs


def test_user_settings_choose_the_proxy():
    # Settings that do not shape the proxy keep the GPU one.
    assert default_proxy(True, {"dataset": "digits", "seed": 3}) == GPU_PROXY.with_overrides(dataset="digits", seed=3)
    assert default_proxy(True, {"device": "auto"}) == GPU_PROXY
    # --device cpu, a shaped proxy or the zero-cost evaluator keep the CPU proxy's defaults under the user's.
    assert default_proxy(True, {"device": "cpu"}) == ProxyConfig().with_overrides(device="cpu")
    assert default_proxy(True, {"resolution": 96}) == ProxyConfig(resolution=96)
    assert default_proxy(True, {"epochs": 10}) == ProxyConfig().with_overrides(epochs=10)
    assert default_proxy(True, {"evaluator": "zero-cost"}) == ProxyConfig(evaluator="zero-cost")
    assert default_proxy(False, {"dataset": "digits"}) == ProxyConfig(dataset="digits")


def test_the_gpu_proxy_is_checked_and_recorded_like_any_proxy():
    checked, _ = check_data(GPU_PROXY)
    settings = checked.with_overrides(device="cuda").settings()  # as a GPU cluster records it
    assert settings["resolution"] == 64 and settings["train_size"] == GPU_PROXY.train_size
    assert settings["epochs"] == GPU_PROXY.train.epochs and settings["device"] == "cuda"
    assert settings["batch_size"] == GPU_PROXY.train.batch_size and settings["lr"] == GPU_PROXY.train.lr


def test_gas_search_gives_the_engine_both_proxies(monkeypatch):
    """`gas search` cannot know the cluster yet: it passes the CPU proxy and the one for GPUs."""
    import gas.search.ray_tune

    seen = []

    def capture(config):
        seen.append(config)
        raise GasError("stopped before the cluster")

    monkeypatch.setattr(gas.search.ray_tune, "run_search", capture)
    assert gas_main(["search", "--budget", "2.5G"]) == 2
    assert seen[-1].proxy == ProxyConfig() and seen[-1].gpu_proxy == GPU_PROXY
    assert gas_main(["search", "--budget", "2.5G", "--device", "cpu"]) == 2
    assert seen[-1].gpu_proxy == seen[-1].proxy == ProxyConfig().with_overrides(device="cpu")
    assert gas_main(["search", "--budget", "2.5G", "--resolution", "64", "--epochs", "2"]) == 2
    assert seen[-1].gpu_proxy == seen[-1].proxy == ProxyConfig(resolution=64).with_overrides(epochs=2)


class _Stop(Exception):
    """Raised where the search would start training: what was decided by then is what the test checks."""


@pytest.fixture
def gpu_cluster_search(monkeypatch, tmp_path):
    """run_search on a pretend cluster of 16 CPUs and 1 GPU; returns the config the engine would get."""
    import contextlib

    from gas.search import ray_tune
    from gas.search.cluster import Cluster

    @contextlib.contextmanager
    def one_gpu(address=None, **options):
        yield Cluster(cpus=16, gpus=1, address="local")

    seen = []

    def engine(config, data=None):
        seen.append(config)
        raise _Stop

    monkeypatch.setattr(ray_tune, "ray_cluster", one_gpu)
    monkeypatch.setattr(ray_tune, "Engine", engine)

    def search(**settings):
        config = SearchConfig(budget=2_500_000_000, storage=f"sqlite:///{tmp_path / 'gas.db'}", **settings)
        with pytest.raises(_Stop):
            ray_tune.run_search(config)
        return seen[-1]

    return search


def test_a_gpu_cluster_packs_trials_and_trains_the_gpu_proxy(gpu_cluster_search, capsys):
    chosen = gpu_cluster_search(proxy=default_proxy(False), gpu_proxy=default_proxy(True))
    assert chosen.proxy == GPU_PROXY.with_overrides(device="cuda")
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith(f"gas search: {TRIALS_PER_GPU:g} trials per GPU on 1 GPU")
    assert "proxy 64px, 8 epochs of 4096 images at batch 64" in printed[0]
    stopping = gpu_cluster_search(proxy=ProxyConfig(), gpu_proxy=GPU_PROXY, early_stop=EarlyStopping(max_epochs=9))
    assert stopping.proxy == GPU_PROXY.with_overrides(epochs=9, device="cuda")  # the rungs' longest schedule


def test_a_gpu_cluster_keeps_what_the_user_chose(gpu_cluster_search, capsys):
    whole_gpu = gpu_cluster_search(proxy=default_proxy(False), gpu_proxy=default_proxy(True), gpus_per_trial=1.0)
    assert whole_gpu.proxy == GPU_PROXY.with_overrides(device="cuda")
    assert capsys.readouterr().out == ""  # the user chose the packing: nothing to announce
    on_cpus = {"device": "cpu"}
    cpu = gpu_cluster_search(proxy=default_proxy(False, on_cpus), gpu_proxy=default_proxy(True, on_cpus))
    assert cpu.proxy == ProxyConfig().with_overrides(device="cpu")
    # A caller that names no GPU proxy trains its own proxy on the GPUs, as before.
    own = gpu_cluster_search(proxy=ProxyConfig(resolution=64))
    assert own.proxy == ProxyConfig(resolution=64).with_overrides(device="cuda")


# ---- the device copy of the data ----------------------------------------------------------------------


def test_the_device_copy_is_made_once_per_key(empty_device_cache):
    cpu = torch.device("cpu")
    first = load_dataset("shapes", 32, train_size=16, val_size=8)
    again = load_dataset("shapes", 32, train_size=16, val_size=8)  # the same data in new tensors
    assert again.train_images is not first.train_images
    kept = training.data_on_device(first, cpu, key="a")
    assert training.data_on_device(again, cpu, key="a").train_images is kept.train_images
    assert training.data_on_device(again, cpu, key="a").val_labels is kept.val_labels
    assert training.data_on_device(again, cpu, key="b").train_images is again.train_images
    assert training.data_on_device(again, cpu).train_images is again.train_images  # no key: no cache
    assert len(empty_device_cache) == 2


def test_the_device_cache_keeps_the_latest_entries(empty_device_cache):
    cpu = torch.device("cpu")
    splits = load_dataset("shapes", 32, train_size=16, val_size=8)
    for key in range(training.DEVICE_DATA_ENTRIES + 3):
        training.data_on_device(splits, cpu, key=key)
    assert [key for key, _ in empty_device_cache] == list(range(3, training.DEVICE_DATA_ENTRIES + 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trials_in_one_process_share_one_copy_of_the_data(empty_device_cache):
    genome = sample_genomes("turbovit", 1, seed=0, budget=600_000_000)[0][0]
    config = GPU_PROXY.with_overrides(device="cuda", epochs=1, train_size=256, val_size=64, zero_cost_batch=0)
    first = evaluate(genome, config)
    copies = [splits.train_images for splits in empty_device_cache.values()]
    second = evaluate(genome, config.with_overrides(seed=1))
    assert first.device == second.device == torch.cuda.get_device_name(0)
    assert len(copies) == 1 and copies[0].is_cuda
    (kept,) = empty_device_cache.values()
    assert kept.train_images is copies[0]
    assert first.batch_size == second.batch_size == config.train.batch_size  # the recorded batch, not a grown one


# ---- the GPU check's harness --------------------------------------------------------------------------


def test_gpu_check_dry_run_runs_through_on_the_cpu(tmp_path):
    """Every step of experiments/gpu_check at tiny sizes: the harness a device run relies on works."""
    out = tmp_path / "results"
    done = subprocess.run(
        ["bash", "experiments/gpu_check/run.sh", "--dry-run", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GPU_CHECK_PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    markdown = (out / "gpu_check.md").read_text()
    skipped = "skipped: dry run" if torch.cuda.is_available() else "skipped: no CUDA"
    for step in ("tests", "search", "fidelity", "bench"):
        assert f"| {step} | {skipped} |" in markdown, markdown
    assert "No check failed. DRY RUN" in markdown
    for name in ("gpu_check.csv", "gpu_check_bench.csv", "gpu_check_fidelity.csv"):
        assert (out / name).stat().st_size > 0
    assert "## Search on the GPU" in markdown and "## Proxy fidelity" in markdown and "## Inference" in markdown


def test_a_gpu_check_step_runs_alone_as_its_own_script(tmp_path):
    """experiments/gpu_check/bench.py is the runner's --only bench, and its page says how to run it again."""
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "experiments/gpu_check/bench.py", "--dry-run", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    markdown = (out / "gpu_check.md").read_text()
    skipped = "skipped: dry run" if torch.cuda.is_available() else "skipped: no CUDA"
    assert f"| bench | {skipped} |" in markdown and "## Inference" in markdown
    for step in ("tests", "search", "fidelity"):
        assert f"| {step} | not run (--only) |" in markdown
    assert f"Command: `bash experiments/gpu_check/run.sh --dry-run --out {out} --only bench`" in markdown
    assert (out / "gpu_check_bench.csv").stat().st_size > 0 and not (out / "gpu_check.csv").exists()
