"""Training on GPUs: how trials are packed, which proxy a GPU gets, the per-process device copy of the data,
the GPU check's harness (its dry run, on the CPU), each device's peak for MFU, the trials that run again on a
fresh worker, and the GPU kept for measuring latency. Tests named with "cuda" need a CUDA device; the GPU
check runs them and fails if they skip, so no other test's name or id holds that word."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from gas.cli import main as gas_main
from gas.defaults import TRIALS_PER_GPU
from gas.errors import GasError
from gas.evaluate import train as training
from gas.evaluate.datasets import load_dataset
from gas.evaluate.proxy import GPU_PROXY, ProxyConfig, build_proxy_model, check_data, default_proxy, evaluate
from gas.search import Engine, SearchConfig, ray_tune
from gas.search.early_stop import EarlyStopping
from gas.search.ray_tune import gpus_per_trial
from gas.search.sampling import sample_genomes
from gas.space import load_genome
from tests.conftest import REPO, run_gas


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


def _windows_per_block(proxy: ProxyConfig) -> list[int]:
    """How many mask units each attention layer of the `turbovit` reference attends within, as `proxy` trains it."""
    model = build_proxy_model(load_genome("turbovit"), proxy.resolution, num_classes=10)
    return [block.attn.windows for block in model.blocks]


def test_in_the_gpu_proxy_mask_unit_attention_is_not_global():
    """What the GPU proxy is for: at the CPU proxy's size a mask unit spans the image, at the GPU's it does not."""
    genome = load_genome("turbovit")
    mask_unit_blocks = [index for index, block in enumerate(genome.blocks) if block.attention == "mask_unit"]
    assert mask_unit_blocks and len(mask_unit_blocks) < len(genome.blocks)
    on_cpu, on_gpu = _windows_per_block(ProxyConfig()), _windows_per_block(GPU_PROXY)
    assert {on_cpu[index] for index in mask_unit_blocks} == {1}
    assert {on_gpu[index] for index in mask_unit_blocks} == {4}  # 64px: 16x16 tokens, 2x2 units of 8x8
    assert all(on_gpu[index] == 1 for index in range(len(genome.blocks)) if index not in mask_unit_blocks)


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


def test_a_gpu_study_resumes_on_any_gpu_and_refuses_another_proxy(tmp_path):
    """The study records the GPU proxy's settings with the device's kind: another GPU (or the same one named
    otherwise) resumes it; the CPU proxy, or the GPU proxy trained on CPUs, is refused naming what differs."""
    storage = f"sqlite:///{tmp_path / 'gas.db'}"
    gpu_proxy, data = check_data(GPU_PROXY)  # checked as "auto": this machine need not have CUDA
    cpu_proxy, _ = check_data(ProxyConfig())

    def engine(proxy: ProxyConfig, **overrides: str) -> Engine:
        proxy = proxy.with_overrides(**overrides)
        return Engine(SearchConfig(budget=2_500_000_000, storage=storage, study="gpu", proxy=proxy), data)

    engine(gpu_proxy, device="cuda:0")
    engine(gpu_proxy, device="cuda:1")
    engine(gpu_proxy, device="cuda", data_dir=str(tmp_path))  # the data may live elsewhere on another machine
    with pytest.raises(GasError, match=r"other settings: .*proxy\.resolution 64 \(now 32\)"):
        engine(cpu_proxy, device="cuda")
    with pytest.raises(GasError, match=r"other settings: proxy\.device \"cuda\" \(now \"cpu\"\);"):
        engine(gpu_proxy, device="cpu")


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


# ---- the device's peak, for MFU ------------------------------------------------------------------------

# Names as torch.cuda.get_device_name reports them, and each part's dense bf16 tensor peak from its data sheet
# (half the figure "with sparsity" where the sheet prints only that one). None: a part the table does not know.
DEVICE_NAMES = {
    "NVIDIA H100 80GB HBM3": 989.4e12,  # SXM5
    "NVIDIA H100 PCIe": 756.0e12,
    "NVIDIA H100 NVL": 1671e12 / 2,
    "NVIDIA H200": 989.4e12,
    "NVIDIA H200 NVL": 1671e12 / 2,
    "NVIDIA GH200 480GB": 989.4e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA L40S": 362.05e12,
    "NVIDIA L40": 181.05e12,
    "NVIDIA L4": 121e12,
    "NVIDIA A10": 125e12,
    "NVIDIA RTX A6000": 154.8e12,
    "NVIDIA RTX 6000 Ada Generation": None,
    "Tesla T4": None,
}


@pytest.mark.parametrize(("name", "dense"), DEVICE_NAMES.items())
def test_each_device_name_gets_its_own_parts_peak(name, dense):
    assert training.listed_peak_flops(name) == (None if dense is None else pytest.approx(dense, rel=1e-3))


# ---- trials that share a GPU, and CUDA errors that break a worker -------------------------------------

OUT_OF_MEMORY = "out of memory on NVIDIA H100 80GB HBM3 at batch size 64"  # as TrialFailed words it
CUDA_OUT_OF_MEMORY = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity"
STICKY = [
    "RuntimeError: CUDA error: an illegal memory access was encountered",
    "AcceleratorError: CUDA error: device-side assert triggered",
    "RuntimeError: CUDA error: unspecified launch failure",
    "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, ...`",
]
OWN_ERRORS = [
    "loss became nan at epoch 2 step 40/512 (lr 0.0001); the model diverged",
    "RuntimeError: injected fault in forward",
    "ValueError: cannot unroll 196 tokens as a 14x14 grid split by [2, 2, 2] per side",
]


@pytest.mark.parametrize(
    "error",
    [OUT_OF_MEMORY, CUDA_OUT_OF_MEMORY, "RuntimeError: CUDA error: out of memory"],
    ids=["trial_failed", "allocator", "runtime"],  # no "cuda" in a name: the GPU check runs those as CUDA tests
)
def test_out_of_memory_is_retried_only_where_the_gpu_was_shared(error):
    assert "out of memory" in ray_tune.retry_reason(error, gpus=0.25)
    assert error in ray_tune.retry_reason(error, gpus=0.25)  # the reason carries the first run's error
    assert ray_tune.retry_reason(error, gpus=1.0) is None  # a GPU of its own: the trial's memory is its result
    assert ray_tune.retry_reason(error, gpus=0.0) is None  # on CPUs
    assert not training.breaks_cuda_context(error)  # the worker recovers once the memory is freed


@pytest.mark.parametrize("error", STICKY, ids=["illegal_address", "device_assert", "launch_failure", "cublas"])
def test_a_gpu_error_that_breaks_the_worker_is_retried_on_any_share(error):
    assert training.breaks_cuda_context(error)
    for gpus in (0.25, 1.0):
        assert ray_tune.retry_reason(error, gpus) == f"a CUDA error that breaks its worker: {error}"


@pytest.mark.parametrize("error", OWN_ERRORS, ids=["diverged", "raised", "refused"])
def test_a_trials_own_error_is_its_result(error):
    assert not training.breaks_cuda_context(error)
    assert ray_tune.retry_reason(error, gpus=0.25) is None


def _faults_in(folder):
    from tests.faulty_space import cuda_faults

    before = os.environ.get("GAS_TEST_FAULTS")
    os.environ["GAS_TEST_FAULTS"] = str(folder / "faults")
    try:
        return cuda_faults()
    finally:
        if before is None:
            del os.environ["GAS_TEST_FAULTS"]
        else:
            os.environ["GAS_TEST_FAULTS"] = before


def test_a_worker_a_gpu_error_broke_is_replaced_and_the_trial_retried_once(tmp_path):
    """One Ray worker at a time: trial 0 meets a context-breaking CUDA error once, trial 1 every time, trial 2
    none. Trial 0 is retried and trains on a new worker; trial 1 is retried once, then recorded with its
    error; the worker it broke refuses trial 2, which trains on a new worker."""
    from tests.faulty_space import CUDA_FAULT_ALWAYS, CUDA_FAULT_ONCE

    args = ["search", "--space", "tests.faulty_space:fault=cuda", "--budget", "100G", "--trials", "3"]
    args += ["--max-concurrent", "1", "--study", "sticky", "--dataset", "digits", "--resolution", "32"]
    args += ["--evaluator", "zero-cost", "--no-progress", "--seed", "1", "--audit", "0"]
    env = {"PYTHONPATH": str(REPO), "GAS_TEST_FAULTS": str(tmp_path / "faults")}
    result = run_gas(*args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    study = optuna.load_study(study_name="sticky", storage=f"sqlite:///{tmp_path}/runs/gas.db")
    once, always, healthy = sorted(study.get_trials(), key=lambda trial: trial.number)
    faults = _faults_in(tmp_path)
    assert [kernel for kernel, _ in faults] == [CUDA_FAULT_ONCE, CUDA_FAULT_ALWAYS, CUDA_FAULT_ALWAYS]
    (_, once_pid), (_, always_first_pid), (_, always_second_pid) = faults
    sticky = "RuntimeError: CUDA error: an illegal memory access was encountered"

    assert once.state == TrialState.COMPLETE
    assert once.user_attrs["retried"] == f"a CUDA error that breaks its worker: {sticky}"
    assert once.user_attrs["worker"]["pid"] != once_pid  # trained by another process than the one that broke

    assert always.state == TrialState.FAIL and always.user_attrs["error"] == sticky
    assert always.user_attrs["retried"] == f"a CUDA error that breaks its worker: {sticky}"
    assert always_second_pid != always_first_pid and always.user_attrs["worker"]["pid"] == always_second_pid

    assert healthy.state == TrialState.COMPLETE and "retried" not in healthy.user_attrs
    assert healthy.user_attrs["worker"]["pid"] not in (once_pid, always_first_pid, always_second_pid)
    refused = [path.read_text() for path in (tmp_path / "runs" / "ray").glob("*/trial_2/error.txt")]
    assert len(refused) == 1 and "WorkerBroken: an earlier trial in this worker broke its CUDA context" in refused[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_a_trial_sharing_a_gpu_is_held_to_its_share():
    total = torch.cuda.get_device_properties(0).total_memory
    assert training.hold_to_share(0.25)
    try:
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(int(0.3 * total), dtype=torch.uint8, device="cuda")
        within = torch.empty(int(0.2 * total), dtype=torch.uint8, device="cuda")
        del within
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert not training.hold_to_share(1.0)  # a GPU of its own: no cap


# ---- latency measured on a GPU no trial trains on ------------------------------------------------------


def test_latency_measured_on_a_gpu_keeps_the_last_one_from_trials():
    assert ray_tune.measuring_gpu(4, trials_want_gpus=True) == 3
    assert ray_tune.measuring_gpu(2, trials_want_gpus=True) == 1
    assert ray_tune.measuring_gpu(1, trials_want_gpus=False) == 0  # trials on CPUs leave the one GPU alone
    with pytest.raises(GasError, match=r"this machine has one; train on CPUs \(--device cpu\)"):
        ray_tune.measuring_gpu(1, trials_want_gpus=True)
    with pytest.raises(GasError, match="has no CUDA"):
        ray_tune.measuring_gpu(0, trials_want_gpus=False)
    # A cluster gas joins: the node on the driver's machine must not offer the last GPU.
    assert ray_tune.measuring_gpu(4, trials_want_gpus=True, node_gpus=3) == 3
    assert ray_tune.measuring_gpu(4, trials_want_gpus=True, node_gpus=0) == 3
    with pytest.raises(GasError, match=r"\(4 of 4 GPUs\); start the node with `ray start --num-gpus 3`"):
        ray_tune.measuring_gpu(4, trials_want_gpus=True, node_gpus=4)


def test_trials_want_gpus_unless_they_train_on_cpus():
    budget = 2_500_000_000
    assert ray_tune.trials_want_gpus(SearchConfig(budget=budget))
    assert ray_tune.trials_want_gpus(SearchConfig(budget=budget, gpus_per_trial=0.5))
    assert not ray_tune.trials_want_gpus(SearchConfig(budget=budget, gpus_per_trial=0.0))
    assert not ray_tune.trials_want_gpus(SearchConfig(budget=budget, proxy=ProxyConfig().with_overrides(device="cpu")))


def test_a_search_measuring_on_the_only_gpu_its_trials_would_train_on_is_refused(monkeypatch, tmp_path):
    from gas.latency import LatencySettings
    from gas.search.latency_limit import LatencyTarget

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a machine with one GPU
    target = LatencyTarget(LatencySettings(device="cuda", dtype="bf16"), limit=0.02)
    config = SearchConfig(budget=2_500_000_000, storage=f"sqlite:///{tmp_path / 'gas.db'}", latency=target)
    with pytest.raises(GasError, match="this machine has one"):
        ray_tune.run_search(config)
    assert not (tmp_path / "gas.db").exists(), "refused before anything is written"


def test_a_local_cluster_given_one_gpu_fewer_never_hands_out_the_last(monkeypatch):
    """What measuring_gpu rests on: Ray gives a node's GPUs out from the first this process sees. GPUs Ray
    is told of are enough to show it on a CPU machine; it maps ids, CUDA is never called."""
    import ray

    from gas.search.cluster import ray_cluster

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")  # the driver would measure on its second: device 7

    @ray.remote(num_cpus=0, num_gpus=0.5)  # packed, as trials are
    def devices_seen() -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    with ray_cluster(num_cpus=1, num_gpus=1) as cluster:
        assert cluster.gpus == 1 and cluster.node_gpus == 1
        assert set(ray.get([devices_seen.remote() for _ in range(2)])) == {"4"}
