"""ONNX: `gas export --onnx` files compute what gas's models compute, and latency measured in ONNX Runtime.

Every reference of both spaces and random genomes of both (mask-unit and global attention, Q-pools,
EfficientViT fused and not) are given random weights, exported at 64px and run in ONNX Runtime at a batch
size other than the one traced; a file `gas export --onnx` writes gives its weights by name to gas's model.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from gas.cli import main as gas_main
from gas.errors import GasError
from gas.genome import Genome
from gas.latency import LatencyModel, LatencySettings, fingerprint
from gas.latency.device import difference, fingerprint_id
from gas.onnx_model import INPUT_NAME, OPSET, TRACE_BATCH, session, to_onnx
from gas.provenance import provenance_for_trial
from gas.record import StudyKey, TrialKey, latency_record, settings_differences
from gas.search.latency_limit import LatencyTarget
from gas.search.sampling import sample_genomes
from gas.space import get_space, load_genome, space_names
from tests.studies import objective_study

RESOLUTION = 64
BATCH = 3  # not the traced batch: the file's batch dimension must be dynamic
ONE_THREAD = LatencySettings(device="cpu", threads=1)
ONNX_ONE_THREAD = LatencySettings(device="cpu", threads=1, runtime="onnxruntime")


def _cases() -> dict[str, tuple[Genome, bool]]:
    """Name → (genome at 64px, fused): every reference, and random genomes of both spaces at a small budget."""
    cases = {
        name: (genome.at_resolution(RESOLUTION), False)
        for space in space_names()
        for name, genome in get_space(space).references.items()
    }
    cases["efficientvit_m0:fused"] = (cases["efficientvit_m0"][0], True)
    for index, (genome, _) in enumerate(sample_genomes("turbovit", 2, seed=1, resolution=RESOLUTION, budget=10**8)):
        cases[f"random_turbovit_{index}"] = (genome, False)
    for index, (genome, _) in enumerate(sample_genomes("efficientvit", 2, seed=1, resolution=RESOLUTION)):
        cases[f"random_efficientvit_{index}"] = (genome, index == 1)
    return cases


CASES = _cases()


def test_random_cases_cover_both_attentions_q_pools_and_fusion():
    random_turbovit = [genome for name, (genome, _) in CASES.items() if name.startswith("random_turbovit")]
    blocks = [block for genome in random_turbovit for block in genome.blocks]
    assert {block.attention for block in blocks} == {"mask_unit", "global"}
    assert all(sum(block.q_pool for block in genome.blocks) == 3 for genome in random_turbovit)
    fused = {fused for name, (_, fused) in CASES.items() if name.startswith("random_efficientvit")}
    assert fused == {True, False}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights unlike a fresh model's (zero biases, unit norms, a BatchNorm weight of 0 that mutes a branch)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.mul_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                scale = 0.5 * max(tensor.std().item() if tensor.numel() > 1 else 0.0, 0.02)
                tensor.add_(scale * torch.randn(tensor.shape, generator=generator))


def _onnx_runtime_outputs(exported, images: torch.Tensor) -> np.ndarray:
    (logits,) = session(exported, threads=1).run(None, {INPUT_NAME: images.numpy()})
    return logits


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_model_runs_in_onnx_runtime_as_the_pytorch_model_does(case, one_torch_thread):
    genome, fused = CASES[case]
    model = get_space(genome.space).build(genome).eval()
    _randomize(model, seed=len(case))
    model = model.fuse() if fused else model
    exported = to_onnx(model, (3, genome.resolution, genome.resolution))

    # Every initializer is a state_dict entry under its own name; only BatchNorm's batch counter, which
    # inference never reads, stays out.
    names = [initializer.name for initializer in exported.graph.initializer]
    assert sorted(names) == sorted(key for key in model.state_dict() if not key.endswith("num_batches_tracked"))
    assert [value.name for value in exported.graph.input] == [INPUT_NAME]
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch dimension

    images = torch.randn(BATCH, 3, genome.resolution, genome.resolution)
    with torch.no_grad():
        expected = model(images).numpy()
    actual = _onnx_runtime_outputs(exported, images)
    scale = float(np.abs(expected).max())
    assert scale > 1e-2  # the comparison means something only if the outputs are not ~0
    assert actual.shape == expected.shape == (BATCH, genome.num_classes)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)
    assert BATCH != TRACE_BATCH


def test_sessions_optimise_fully_on_the_given_threads():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    options = session(to_onnx(model, (3, 8, 8)), threads=2).get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.graph_optimization_level.name == "ORT_ENABLE_ALL"


def test_gas_export_writes_the_py_file_unchanged_and_a_checked_onnx_file(tmp_path, capsys, monkeypatch):
    genome_file = tmp_path / "hiera_tiny_64.json"
    genome_file.write_text(load_genome("hiera_tiny").at_resolution(RESOLUTION).to_json())
    both, alone = tmp_path / "both", tmp_path / "alone"
    both.mkdir()
    alone.mkdir()
    args = ["export", str(genome_file), "--out", "model.py"]
    monkeypatch.chdir(alone)
    assert gas_main(args) == 0
    monkeypatch.chdir(both)
    capsys.readouterr()
    assert gas_main([*args, "--onnx", "model.onnx"]) == 0
    assert (both / "model.py").read_bytes() == (alone / "model.py").read_bytes()

    written = both / "model.onnx"
    onnx.checker.check_model(str(written), full_check=True)
    model = onnx.load(written)
    assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [OPSET]
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert json.loads(metadata["gas_genome"]) == json.loads(genome_file.read_text())
    assert metadata["gas_source"] == f"genome file {genome_file}"
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    megabytes = written.stat().st_size / 1e6
    assert closing.startswith("wrote model.onnx (turbovit space, 64px, dynamic batch")
    assert closing.endswith(f"ONNX opset {OPSET}, {megabytes:.2f}MB")

    # The file's weights, put into gas's model by name, give the file's outputs.
    genome = load_genome(genome_file)
    ours = get_space(genome.space).build(genome).eval()
    weights = {value.name: torch.from_numpy(numpy_helper.to_array(value).copy()) for value in model.graph.initializer}
    ours.load_state_dict(weights, strict=True)
    images = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        expected = ours(images).numpy()
    np.testing.assert_allclose(_onnx_runtime_outputs(model, images), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["turbovit"], "give --out FILE.py, --onnx FILE.onnx, or both"),
        (["turbovit", "--onnx", "model.pt"], "--onnx model.pt must be a .onnx file"),
    ],
)
def test_gas_export_bad_onnx_arguments_are_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gas_main(["export", *args]) == 2
    error = capsys.readouterr().err
    assert error == f"gas export: error: {message}\n"
    assert not list(tmp_path.iterdir())


# ---- without the onnx extra -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hidden", "args", "expected"),
    [
        (
            "onnx",
            ["export", "turbovit", "--out", "model.py", "--onnx", "model.onnx"],
            "gas export: error: --onnx needs the onnx package: pip install 'gas[onnx]'",
        ),
        (
            "onnxruntime",
            ["latency", "turbovit", "--runtime", "onnxruntime"],
            "gas latency: error: latency in ONNX Runtime needs the onnxruntime package: pip install 'gas[onnx]'",
        ),
        (
            "onnxruntime",
            ["search", "--max-latency", "20ms", "--latency-runtime", "onnxruntime", "--no-progress"],
            "gas search: error: --latency-runtime onnxruntime needs the onnxruntime package: pip install 'gas[onnx]'",
        ),
    ],
)
def test_without_the_onnx_extra_the_error_names_it(hidden, args, expected, tmp_path):
    # Both packages are installed here, so a missing one is made the way Python sees a missing package: a
    # None entry in sys.modules makes its import raise ImportError. The CLI itself is unchanged.
    code = f"import sys; sys.modules[{hidden!r}] = None; from gas.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert result.stderr.strip() == expected and result.stdout == ""
    assert not list(tmp_path.iterdir())  # nothing written before the refusal


# ---- latency in ONNX Runtime --------------------------------------------------------------------------


def test_gas_latency_in_onnx_runtime_prints_its_fingerprint(tmp_path, capsys, one_torch_thread):
    genome_file = tmp_path / "turbovit_64.json"
    genome_file.write_text(load_genome("turbovit").at_resolution(RESOLUTION).to_json())
    args = ["latency", str(genome_file), "--runtime", "onnxruntime", "--threads", "1", "--batch", "2"]
    assert gas_main([*args, "--json", "--runs", "3", "--warmup", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    import onnxruntime

    assert report["settings"]["runtime"] == "onnxruntime"
    assert report["settings"]["runtime_version"] == onnxruntime.__version__
    assert report["settings"]["threads"] == 1 and report["settings"]["batch"] == 2
    (row,) = report["models"]
    assert row["runs"] == 3 and row["median_s"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compile"], "--compile is torch.compile; ONNX Runtime optimises the graph itself, drop --compile"),
        (["--dtype", "bf16"], "ONNX Runtime's CPU kernels run fp32, not bf16; use --dtype fp32"),
    ],
)
def test_onnx_runtime_refuses_what_it_cannot_run_in_one_line(args, message, capsys):
    assert gas_main(["latency", "turbovit", "--runtime", "onnxruntime", *args]) == 2
    assert capsys.readouterr().err == f"gas latency: error: {message}\n"


def test_gas_bench_times_the_runtimes_side_by_side(tmp_path, capsys, one_torch_thread):
    genome_file = tmp_path / "efficientvit_m0_64.json"
    genome_file.write_text(load_genome("efficientvit_m0").at_resolution(RESOLUTION).to_json())
    csv_path = tmp_path / "bench.csv"
    args = ["bench", f"{genome_file}:fused", "--device", "cpu", "--threads", "1", "--runtimes", "torch", "onnxruntime"]
    args += ["--batch-sizes", "1", "2", "--repeats", "2", "--batch-repeats", "1", "--warmup", "1"]
    assert gas_main([*args, "--csv", str(csv_path)]) == 0
    import pandas as pd

    table = pd.read_csv(csv_path)
    assert len(table) == 2 * 2  # runtimes x batch sizes
    assert set(table["setting"]) == {"cpu fp32", "cpu fp32 onnxruntime"}
    assert (table["median_ms"] > 0).all()
    assert (table.loc[table["runtime"] == "torch", "vs_eager"] == 1.0).all()
    onnx_rows = table[table["runtime"] == "onnxruntime"].set_index(["model", "batch"])
    eager_rows = table[table["runtime"] == "torch"].set_index(["model", "batch"])
    ratios = onnx_rows["median_ms"] / eager_rows.loc[onnx_rows.index, "median_ms"]
    assert np.allclose(onnx_rows["vs_eager"], ratios)
    assert "vs eager" in capsys.readouterr().out.splitlines()[1]


# ---- the device fingerprint ---------------------------------------------------------------------------


def _legacy(fields: dict) -> dict:
    """A fingerprint as gas wrote it before the runtime was part of it."""
    return {name: value for name, value in fields.items() if name not in ("runtime", "runtime_version")}


def test_fingerprint_names_the_runtime_and_refuses_another():
    torch_fields, onnx_fields = fingerprint(ONE_THREAD), fingerprint(ONNX_ONE_THREAD)
    import onnxruntime

    assert torch_fields["runtime"] == "torch" and torch_fields["runtime_version"] is None
    assert onnx_fields["runtime"] == "onnxruntime" and onnx_fields["runtime_version"] == onnxruntime.__version__
    assert difference(onnx_fields, torch_fields) == "runtime 'onnxruntime' here, 'torch' in the file"
    assert difference(onnx_fields, _legacy(torch_fields)) == "runtime 'onnxruntime' here, 'torch' in the file"
    assert fingerprint_id(onnx_fields) != fingerprint_id(torch_fields)


def test_a_cached_latency_model_from_before_runtimes_loads_as_a_torch_one(tmp_path):
    """A cache file whose fingerprint has no runtime is found under its old name, read as torch's, and refused
    for ONNX Runtime."""
    saved = LatencyModel(ONE_THREAD).to_dict()
    saved["fingerprint"] = _legacy(saved["fingerprint"])
    saved["builds"] = {"turbovit": {"seconds": 1.0}}
    old_name = tmp_path / f"{fingerprint_id(saved['fingerprint'])}.json"
    old_name.write_text(json.dumps(saved))

    loaded = LatencyModel.for_device(ONE_THREAD, cache=tmp_path)
    assert loaded.path == old_name and loaded.builds == saved["builds"]
    with pytest.raises(GasError) as error:
        LatencyModel.load(old_name, ONNX_ONE_THREAD)
    expected = "made for another device or settings: runtime 'onnxruntime' here, 'torch' in the file"
    assert str(error.value).endswith(expected)


def test_a_latency_study_from_before_runtimes_resumes_as_a_torch_one():
    wanted = {"latency": LatencyTarget(ONE_THREAD, 0.02).to_dict()}
    recorded = copy.deepcopy(wanted)
    del recorded["latency"]["settings"]["runtime"]
    recorded["latency"]["fingerprint"] = _legacy(recorded["latency"]["fingerprint"])
    assert settings_differences(recorded, wanted) == []
    in_onnx_runtime = {"latency": LatencyTarget(ONNX_ONE_THREAD, 0.02).to_dict()}
    assert 'latency.settings.runtime "torch" (now "onnxruntime")' in settings_differences(recorded, in_onnx_runtime)


# ---- the export's docstring -------------------------------------------------------------------------------


def test_export_docstring_states_the_runtime_latency_was_measured_in(tmp_path):
    _, study = objective_study(tmp_path / "latency.db", "latency")
    measured = next(trial for trial in study.get_trials() if TrialKey.MEASURED_LATENCY in trial.user_attrs)
    recorded = dict(study.user_attrs[StudyKey.LATENCY])

    # Recorded before the runtime was: measured in torch.
    legacy = {**recorded, "settings": dict(recorded["settings"]), "fingerprint": _legacy(recorded["fingerprint"])}
    del legacy["settings"]["runtime"]
    study.set_user_attr(StudyKey.LATENCY, legacy)
    (line,) = [line for line in provenance_for_trial(study, measured).details if line.startswith("Measured latency")]
    assert f" in PyTorch {torch.__version__} (eager) on cpu fp32, 1 thread" in line

    study.set_user_attr(StudyKey.LATENCY, {**LatencyTarget(ONNX_ONE_THREAD, 0.03).to_dict(), "accuracy": None})
    (line,) = [line for line in provenance_for_trial(study, measured).details if line.startswith("Measured latency")]
    import onnxruntime

    assert f" in ONNX Runtime {onnxruntime.__version__} on cpu fp32, 1 thread" in line
    study.set_user_attr(StudyKey.LATENCY, {"settings": {"compile": True}})
    assert latency_record(study).measured_in == "PyTorch (torch.compile)"

