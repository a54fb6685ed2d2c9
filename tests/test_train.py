"""The trainer and the proxy entry point: learning, determinism, divergence, the schedule and the result."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gas.errors import GasError
from gas.evaluate.datasets import Splits, load_dataset
from gas.evaluate.proxy import ProxyConfig, TrialFailed, build_proxy_model, check_data, evaluate
from gas.evaluate.train import TrainConfig, train, warmup_cosine
from gas.search.sampling import sample_genomes

# A small genome keeps every run here to a few seconds on one CPU thread.
SMALL = sample_genomes("turbovit", 1, seed=0, budget=600_000_000)[0][0]
TINY = ProxyConfig(resolution=32, train_size=512, val_size=256, zero_cost_batch=16).with_overrides(
    device="cpu", epochs=3
)


@pytest.fixture(scope="module")
def tiny_run():
    reports: list[dict[str, float]] = []
    result = evaluate(SMALL, TINY, report=reports.append)
    return result, reports


def test_proxy_learns_the_default_dataset(tiny_run):
    result, reports = tiny_run
    chance = 1 / 8
    assert result.accuracy > 2 * chance, reports
    assert reports[-1]["loss"] < reports[0]["loss"]


def test_proxy_reports_every_epoch_and_returns_the_contract(tiny_run):
    result, reports = tiny_run
    assert [report["epoch"] for report in reports] == [1.0, 2.0, 3.0]
    assert all({"epoch", "accuracy", "loss"} <= set(report) for report in reports)
    assert result.accuracy == reports[-1]["accuracy"]
    assert (result.accuracy * 256).is_integer()  # a share of the 256 validation images
    assert result.epochs == 3 and result.device == "cpu"
    assert result.wall_time > 0 and result.images_per_second > 0
    assert result.mfu is None  # no peak FLOP/s is known for a CPU
    assert set(result.zero_cost) == {"naswot", "synflow", "grad_norm"}


def test_the_reported_accuracy_is_the_trained_models_on_the_validation_images():
    """Digits are easy: two epochs take a small network far above chance, and the figure training reports is
    the share of validation images the trained model labels correctly, counted here by hand."""
    splits = load_dataset("digits", 32, train_size=128, val_size=64)
    model = build_proxy_model(SMALL, 32, splits.num_classes)
    result = train(model, splits, TrainConfig(epochs=2, batch_size=16, device="cpu"))
    model.eval()
    with torch.no_grad():
        labelled = model(splits.val_images).argmax(dim=1)
    assert result.accuracy == int((labelled == splits.val_labels).sum()) / len(splits.val_labels)
    assert result.accuracy > 3 / splits.num_classes, result.history


def test_same_seed_same_result_on_cpu(tiny_run):
    result, _ = tiny_run
    again = evaluate(SMALL, TINY)
    assert again.accuracy == result.accuracy
    assert again.loss == result.loss
    short = TINY.with_overrides(epochs=1, train_size=128, val_size=32, zero_cost_batch=0)
    assert evaluate(SMALL, short.with_overrides(seed=1)).loss != evaluate(SMALL, short).loss


def test_huge_learning_rate_fails_the_trial_with_a_reason():
    config = TINY.with_overrides(epochs=1, train_size=128, val_size=32, lr=1e6, zero_cost_batch=0)
    with pytest.raises(TrialFailed) as caught:
        evaluate(SMALL, config)
    message = str(caught.value)
    assert "\n" not in message
    assert "loss became" in message and "diverged" in message and "epoch 1" in message


def test_poisoned_batch_fails_the_trial():
    splits = load_dataset("shapes", 32, train_size=64, val_size=16)
    poisoned = splits.train_images.clone()
    poisoned[5, 0, 3, 3] = math.nan
    splits = dataclasses.replace(splits, train_images=poisoned)
    model = build_proxy_model(SMALL, 32, splits.num_classes)
    with pytest.raises(TrialFailed, match="loss became nan"):
        train(model, splits, TrainConfig(epochs=1, batch_size=16, device="cpu"))


def test_trial_failed_is_a_gas_error():
    assert issubclass(TrialFailed, GasError)


def test_warmup_then_cosine_to_zero():
    total, warmup = 100, 10
    factors = [warmup_cosine(step, total, warmup) for step in range(total)]
    assert factors[0] < 0.2
    assert max(factors) == pytest.approx(1.0)
    assert factors.index(max(factors)) == warmup
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :], strict=False))
    assert warmup_cosine(total, total, warmup) == pytest.approx(0.0)


def test_check_data_names_the_problem_in_one_line(tmp_path):
    check_data(ProxyConfig())
    problems = {
        "does not divide the 12x12 token grid at 48px": ProxyConfig(resolution=48),
        "cifar-10-batches-py": ProxyConfig(dataset="cifar10", data_dir=str(tmp_path)),
        "unknown dataset": ProxyConfig(dataset="mnist"),
        "unknown evaluator": ProxyConfig(evaluator="guess"),
    }
    for expected, config in problems.items():
        with pytest.raises(GasError) as caught:
            check_data(config)
        assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_training_on_a_prebuilt_split_reports_images_per_second():
    splits = load_dataset("digits", 32, train_size=64, val_size=32)
    model = build_proxy_model(SMALL, 32, splits.num_classes)
    seen = []
    result = train(model, splits, TrainConfig(epochs=1, batch_size=16, device="cpu"), report=seen.append)
    assert isinstance(splits, Splits) and len(seen) == 1
    assert result.images_per_second > 0 and result.train_seconds > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_uses_bf16_and_reports_mfu(monkeypatch):
    monkeypatch.setenv("GAS_PEAK_FLOPS", "1e15")  # a peak for any GPU, so MFU is reported
    config = TINY.with_overrides(device="cuda", epochs=1)
    reports: list[dict[str, float]] = []
    result = evaluate(SMALL, config, report=reports.append)
    assert result.device == torch.cuda.get_device_name(0)
    assert (result.accuracy * 256).is_integer() and result.accuracy_history == (result.accuracy,)
    (epoch,) = reports  # training's forward and backward passes: 3 forward passes of multiply-adds, 2 FLOPs each
    assert result.mfu == pytest.approx(epoch["images_per_second"] * 3 * 2 * result.forward_flops / 1e15)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_out_of_memory_fails_the_trial():
    """Cap this process's share of the GPU so that an ordinary proxy batch really runs out of memory."""
    splits = load_dataset("shapes", 64, train_size=512, val_size=16)
    model = build_proxy_model(SMALL, 64, splits.num_classes)
    _, total = torch.cuda.mem_get_info()
    torch.cuda.set_per_process_memory_fraction(64 * 2**20 / total)  # 64 MiB: far below a batch of 512
    try:
        with pytest.raises(TrialFailed, match="out of memory"):
            train(model, splits, TrainConfig(epochs=1, batch_size=512, device="cuda"))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
