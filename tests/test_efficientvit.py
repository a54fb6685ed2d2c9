"""The efficientvit space: published M0-M5 costs, the cost model against fvcore, BN fusion, rules, shapes."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F
from optuna.trial import TrialState
from torch import nn

from gas.errors import GasError, GenomeError
from gas.export import export_genome, load_exported
from gas.front import pick_trial
from gas.fvcore_count import fvcore_flops
from gas.models.efficientvit import BlockSpec, WindowAttention, relative_position_index
from gas.provenance import Provenance
from gas.space import get_space, load_genome
from tests.conftest import REPO, run_gas

RUFF = Path(sys.executable).with_name("ruff")

PUBLISHED = {  # params, FLOPs (fvcore MACs) at 224px: arXiv 2305.07027, microsoft/Cream EfficientViT
    "efficientvit_m0": (2.3e6, 79e6),
    "efficientvit_m1": (3.0e6, 167e6),
    "efficientvit_m2": (4.2e6, 201e6),
    "efficientvit_m3": (6.9e6, 263e6),
    "efficientvit_m4": (8.8e6, 299e6),
    "efficientvit_m5": (12.4e6, 522e6),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def space():
    return get_space("efficientvit")


@pytest.fixture(scope="module")
def sampled_genomes(tmp_path_factory):
    """24 genomes written by `gas sample`: 16 within 0.5G at 224px, 4 at 96px and 4 at 160px.

    96 and 160 make 6x6 and 10x10 token grids, which most sampled windows do not divide: padding is covered.
    """
    out = tmp_path_factory.mktemp("efficientvit_genomes")
    paths = []
    for resolution, n, budget in [(224, 16, "0.5G"), (96, 4, None), (160, 4, None)]:
        folder = out / str(resolution)
        args = ["sample", "--space", "efficientvit", "--n", str(n), "--seed", str(resolution)]
        args += ["--resolution", str(resolution), *(["--budget", budget] if budget else []), "--out", str(folder)]
        result = run_gas(*args)
        assert result.returncode == 0, result.stderr
        paths += sorted(folder.glob("*.json"))
    assert len(paths) == 24
    return paths


# ---- published figures and the cost model --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_cli_cost_matches_published_efficientvit(gas_cli, name):
    """Published figures are of the BatchNorm-fused model; the as-built count adds the norms on top."""
    result = gas_cli("cost", name, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    params, flops = PUBLISHED[name]
    assert report["fused"]["params"] == pytest.approx(params, rel=0.02)
    assert report["fused"]["flops"] == pytest.approx(flops, rel=0.02)
    assert report["fused"]["params"] < report["params"] and report["fused"]["flops"] < report["flops"]
    assert sum(part["flops"] for part in report["parts"]) == report["flops"]
    assert sum(part["params"] for part in report["parts"]) == report["params"]
    names = [part["name"] for part in report["parts"]]
    assert names[0] == "stem" and names[-1] == "head" and "subsample 1" in names


def test_analytic_cost_equals_built_model_and_fvcore(space, sampled_genomes):
    worst = 0.0
    for path in sampled_genomes:
        genome = load_genome(path)
        cost = space.cost(genome)
        model = space.build(genome)
        assert cost.params == sum(p.numel() for p in model.parameters()), path
        reference = fvcore_flops(model, genome.resolution)
        worst = max(worst, abs(cost.flops - reference) / reference)
        assert cost.flops == pytest.approx(reference, rel=0.005), path
    assert worst <= 0.005


def test_sample_respects_budget_and_is_seeded(space, sampled_genomes, tmp_path):
    assert all(space.cost(load_genome(path)).flops <= 0.5e9 for path in sampled_genomes[:16])
    args = ["sample", "--space", "efficientvit", "--n", "5", "--seed", "224", "--budget", "0.5G"]
    again = run_gas(*args, "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert [p.read_text() for p in sorted(tmp_path.glob("*.json"))] == [p.read_text() for p in sampled_genomes[:5]]


def test_sampled_genomes_vary_every_searched_field(sampled_genomes):
    genomes = [load_genome(path) for path in sampled_genomes[:16]]
    blocks = [block for genome in genomes for stage in genome.stages for block in stage.blocks]
    for field in ("heads", "key_dim", "window", "ffn_ratio", "dw_kernel", "q_kernels"):
        assert len({getattr(block, field) for block in blocks}) > 1, field
    # Query kernels are drawn per head: one per head, and heads of one block do not all share one kernel.
    assert all(len(block.q_kernels) == block.heads for block in blocks)
    assert {kernel for block in blocks for kernel in block.q_kernels} == {3, 5, 7}
    assert any(len(set(block.q_kernels)) > 1 for block in blocks)
    subsamples = [spec for genome in genomes for spec in genome.subsamples]
    assert len({spec.se_ratio for spec in subsamples}) == 2
    assert len({tuple(stage.dim for stage in genome.stages) for genome in genomes}) > len(genomes) // 2


# ---- the built model -----------------------------------------------------------------------------


def _randomize(model: nn.Module, seed: int = 0) -> None:
    """Give every norm non-trivial statistics and affine terms, and the attention biases values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
        for name, parameter in model.named_parameters():
            if name.endswith("attention_biases"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize(("source", "resolution"), [("efficientvit_m0", 224), ("sampled", 96)])
def test_fused_model_has_no_batch_norm_and_the_same_outputs(space, sampled_genomes, source, resolution):
    genome = load_genome(sampled_genomes[16] if source == "sampled" else source).at_resolution(resolution)
    model = space.build(genome)
    _randomize(model)
    model.eval()
    images = torch.randn(2, 3, resolution, resolution)
    fused = copy.deepcopy(model).fuse()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert not fused.training
    with torch.no_grad():
        expected, actual = model(images), fused(images)
    scale = expected.abs().max().item()
    assert scale > 1e-3  # the comparison means something only if the outputs are not ~0
    assert (actual - expected).abs().max().item() <= 1e-4 * max(1.0, scale)
    cost = space.cost(genome)
    assert cost.fused.params == sum(p.numel() for p in fused.parameters())
    assert cost.fused.flops == pytest.approx(fvcore_flops(fused, resolution), rel=0.005)


@pytest.mark.parametrize("resolution", [224, 64])
@pytest.mark.parametrize("source", ["efficientvit_m0", "sampled"])
def test_trains_one_step_at_224_and_a_proxy_resolution(space, sampled_genomes, source, resolution):
    genome = load_genome(sampled_genomes[0] if source == "sampled" else source).at_resolution(resolution)
    model = space.build(genome)
    images = torch.randn(2, 3, resolution, resolution)
    logits = model(images)
    assert logits.shape == (2, genome.num_classes)
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_num_classes_sets_the_head(space):
    genome = load_genome({**load_genome("efficientvit_m0").to_dict(), "num_classes": 10, "resolution": 64})
    assert space.build(genome)(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_reference_has_the_published_layer_shapes(space):
    model = space.build(load_genome("efficientvit_m0"))
    stem = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [(conv.in_channels, conv.out_channels, conv.stride) for conv in stem] == [
        (3, 8, (2, 2)),
        (8, 16, (2, 2)),
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]
    first = model.stages[0].blocks[0]
    attention = first.attn.attn
    assert len(attention.qkvs) == 4 and attention.qkvs[0].conv.weight.shape == (16 + 16 + 16, 16, 1, 1)
    assert attention.q_convs[0].conv.weight.shape == (16, 1, 5, 5)
    assert first.ffn0.expand.conv.out_channels == 128
    # 7x7 windows on the 14x14 and 7x7 grids; the 4x4 grid of stage 3 is one window of its own size.
    sides = [stage.blocks[0].attn.attn.attention_biases.shape for stage in model.stages]
    assert sides == [(4, 49), (4, 49), (4, 16)]
    merge = model.stages[1].subsample.merge
    assert merge.expand.conv.out_channels == 256 and merge.down.conv.stride == (2, 2)
    assert merge.se.reduce.out_channels == 64  # a quarter of the 4x expansion
    assert isinstance(model.head.bn, nn.BatchNorm1d) and model.head.linear.in_features == 192


def test_window_attention_pads_to_whole_windows():
    torch.manual_seed(0)
    spec = BlockSpec(heads=2, key_dim=8, window=4, q_kernels=(3, 3))
    attention = WindowAttention(16, spec, grid=9).eval()  # 9x9 is padded to 12x12: nine 4x4 windows
    _randomize(attention)
    x = torch.randn(2, 16, 9, 9)
    padded = F.pad(x, (0, 3, 0, 3))
    expected = torch.zeros(2, 16, 12, 12)
    with torch.no_grad():
        for row in range(3):
            for col in range(3):
                window = (slice(None), slice(None), slice(4 * row, 4 * row + 4), slice(4 * col, 4 * col + 4))
                expected[window] = attention.attn(padded[window])
        torch.testing.assert_close(attention(x), expected[:, :, :9, :9])


def test_a_grid_smaller_than_the_window_is_one_window_of_its_own_size():
    attention = WindowAttention(16, BlockSpec(heads=2, window=7, q_kernels=(5, 5)), grid=4).eval()
    assert attention.attn.attention_biases.shape == (2, 16)
    x = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(attention(x), attention.attn(x))


def test_relative_position_index_is_one_bias_per_offset():
    side = 5
    index = relative_position_index(side)
    for query in range(side * side):
        for key in range(side * side):
            dy, dx = abs(query // side - key // side), abs(query % side - key % side)
            assert index[query, key] == dy * side + dx
    assert index.unique().numel() == side * side


def test_attention_heads_cascade():
    """Head 1 sees head 0's output, so its input split alone does not decide it; head 0 never sees split 1."""
    torch.manual_seed(0)
    spec = BlockSpec(heads=2, key_dim=8, window=4, q_kernels=(5, 3))
    attention = WindowAttention(16, spec, grid=4).eval().attn
    _randomize(attention)
    captured = []
    attention.act.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    x = torch.randn(1, 16, 4, 4)
    changed_split0, changed_split1 = x.clone(), x.clone()
    changed_split0[:, :8] += 1.0
    changed_split1[:, 8:] += 1.0
    with torch.no_grad():
        for inputs in (x, changed_split0, changed_split1):
            attention(inputs)
    base, after0, after1 = ((out[:, :8], out[:, 8:]) for out in captured)
    assert not torch.allclose(after0[0], base[0]) and not torch.allclose(after0[1], base[1])
    torch.testing.assert_close(after1[0], base[0])
    assert not torch.allclose(after1[1], base[1])


# ---- genomes: JSON, rules, options ------------------------------------------------------------------


def test_json_round_trip_is_exact(tmp_path, sampled_genomes):
    for source in [*PUBLISHED, sampled_genomes[0], sampled_genomes[-1]]:
        genome = load_genome(source)
        path = tmp_path / "genome.json"
        path.write_text(genome.to_json())
        again = load_genome(path)
        assert again == genome
        assert again.to_json() == genome.to_json()


def test_a_genome_with_one_q_kernel_per_block_still_loads(space, tmp_path):
    """Files written before query kernels were per head: `q_kernel` means that kernel on every head, and a
    block without one had the default of that time, 5."""
    older = load_genome("efficientvit_m0").to_dict()
    for stage in older["stages"]:
        for block in stage["blocks"]:
            del block["q_kernels"]
            block["q_kernel"] = 5
    del older["stages"][0]["blocks"][0]["q_kernel"]
    older["stages"][2]["blocks"][1]["q_kernel"] = 3
    path = tmp_path / "older.json"
    path.write_text(json.dumps(older))
    genome = load_genome(path)
    kernels = [[block.q_kernels for block in stage.blocks] for stage in genome.stages]
    assert kernels == [[(5, 5, 5, 5)], [(5, 5, 5, 5)] * 2, [(5, 5, 5, 5), (3, 3, 3, 3), (5, 5, 5, 5)]]
    model = space.build(genome)
    assert [conv.conv.kernel_size for conv in model.stages[2].blocks[1].attn.attn.q_convs] == [(3, 3)] * 4
    # Saved again, it is written in the current form, which loads to the same genome.
    block = json.loads(genome.to_json())["stages"][2]["blocks"][1]
    assert "q_kernel" not in block and block["q_kernels"] == [3, 3, 3, 3]
    assert load_genome(json.loads(genome.to_json())) == genome


def test_references_follow_the_published_structure():
    configs = {  # dims, depths, heads (REFERENCE.md §4)
        "efficientvit_m0": ((64, 128, 192), (1, 2, 3), (4, 4, 4)),
        "efficientvit_m1": ((128, 144, 192), (1, 2, 3), (2, 3, 3)),
        "efficientvit_m2": ((128, 192, 224), (1, 2, 3), (4, 3, 2)),
        "efficientvit_m3": ((128, 240, 320), (1, 2, 3), (4, 3, 4)),
        "efficientvit_m4": ((128, 256, 384), (1, 2, 3), (4, 4, 4)),
        "efficientvit_m5": ((192, 288, 384), (1, 3, 4), (3, 3, 4)),
    }
    for name, (dims, depths, heads) in configs.items():
        genome = load_genome(name)
        assert tuple(stage.dim for stage in genome.stages) == dims
        assert tuple(len(stage.blocks) for stage in genome.stages) == depths
        for stage, count in zip(genome.stages, heads, strict=True):
            assert {(b.heads, b.key_dim, b.window, b.ffn_ratio) for b in stage.blocks} == {(count, 16, 7, 2.0)}
        assert genome.stem.widths == (dims[0] // 8, dims[0] // 4, dims[0] // 2, dims[0])
        assert [(s.expand_ratio, s.se_ratio) for s in genome.subsamples] == [(4.0, 0.25), (4.0, 0.25)]


def test_describe(space):
    assert space.describe(load_genome("efficientvit_m5")) == {
        "depth": "8 (1-3-4)",
        "widths": "192-288-384",
        "heads": "3 | 3,3,3 | 4,4,4,4",
        "attention": "key 16, window 7",
    }


def _broken(edit):
    data = load_genome("efficientvit_m0").to_dict()
    edit(data)
    return data


def _block(data, stage, position):
    return data["stages"][stage]["blocks"][position]


BROKEN = [
    # (edit, expected fragment of the single-line message)
    (lambda d: d.update(resolution=0), "resolution must be positive, got 0"),
    (lambda d: d.update(num_classes=0), "num_classes must be positive, got 0"),
    (lambda d: d["stem"].update(widths=[16, 32, 64]), "stem: needs 4 conv widths (four stride-2 convs"),
    (lambda d: d["stem"].update(widths=[0, 16, 32, 64]), "stem: conv widths must be positive, got [0, 16, 32, 64]"),
    (lambda d: d.update(stages=d["stages"][:2]), "the efficientvit space needs exactly 3 stages, found 2"),
    (lambda d: d.update(subsamples=d["subsamples"][:1]), "3 stages need 2 subsample blocks"),
    (lambda d: d["stem"].update(widths=[8, 16, 32, 48]), "stem: its last conv is 48 wide but stage 0 is 64 wide"),
    (lambda d: d["stages"][2].update(dim=2048), "stage 2: dim=2048 is outside the space's range 8..1024"),
    (lambda d: d["stages"][1].update(blocks=[]), "stage 1: the space admits 1 to 12 blocks per stage, got 0"),
    (lambda d: _block(d, 2, 1).update(heads=5), "stage 2 block 1: heads=5 does not divide dim=192"),
    (lambda d: _block(d, 0, 0).update(heads=0), "stage 0 block 0: heads=0 does not divide dim=64"),
    (lambda d: _block(d, 1, 0).update(key_dim=2), "stage 1 block 0: key_dim=2 is outside the space's range 4..64"),
    (lambda d: _block(d, 1, 1).update(window=0), "stage 1 block 1: window=0 is outside the space's range 1..32"),
    (lambda d: _block(d, 2, 2).update(ffn_ratio=9), "stage 2 block 2: ffn_ratio=9 is outside the space's range"),
    (lambda d: _block(d, 0, 0).update(dw_kernel=4), "stage 0 block 0: dw_kernel=4 must be odd and from 1 to 9"),
    (lambda d: _block(d, 2, 0).update(q_kernels=[5, 11, 5, 5]), "stage 2 block 0: q_kernels[1]=11 must be odd"),
    (lambda d: _block(d, 2, 0).update(q_kernels=[7, 5, 4, 3]), "stage 2 block 0: q_kernels[2]=4 must be odd and from"),
    (
        lambda d: _block(d, 1, 1).update(q_kernels=[7, 5, 3]),
        "stage 1 block 1: q_kernels has 3 kernels for heads=4; give one per head",
    ),
    (lambda d: _block(d, 0, 0).update(q_kernels=5), "stage 0 block 0.q_kernels: must be a list"),
    # A block in the older form: one q_kernel, meaning that kernel on every head.
    (
        lambda d: (_block(d, 2, 0).pop("q_kernels"), _block(d, 2, 0).update(q_kernel=11)),
        "stage 2 block 0: q_kernels[0]=11 must be odd and from 1 to 9",
    ),
    (
        lambda d: _block(d, 2, 0).update(q_kernel=3),
        "stage 2 block 0: give q_kernels (one per head) or the older q_kernel, not both",
    ),
    (lambda d: d["subsamples"][0].update(expand_ratio=0.5), "subsample 0: expand_ratio=0.5 is outside"),
    (lambda d: d["subsamples"][1].update(se_ratio=2), "subsample 1: se_ratio=2 is outside the space's range 0..1"),
    (lambda d: d["subsamples"][1].update(ffn_ratio=0.25), "subsample 1: ffn_ratio=0.25 is outside"),
    (lambda d: d["subsamples"][0].update(dw_kernel=2), "subsample 0: dw_kernel=2 must be odd and from 1 to 9"),
    (
        lambda d: d["stages"][2].update(dim=96),
        "stage 2: dim=96 is narrower than stage 1's 128; the efficientvit space keeps or widens the width",
    ),
    # Parse errors inside nested lists keep their parent's place.
    (lambda d: _block(d, 2, 1).update(heads="4"), "stage 2 block 1.heads: must be an integer"),
    (lambda d: _block(d, 0, 0).update(width=3), "stage 0 block 0: unknown field 'width'"),
    (lambda d: d["stages"][1].pop("dim"), "stage 1: missing field 'dim'"),
    (lambda d: d["subsamples"][0].update(se_ratio="x"), "subsample 0.se_ratio: must be a number"),
    (lambda d: d["stem"].update(widths=8), "stem.widths: must be a list"),
]


@pytest.mark.parametrize(("edit", "message"), BROKEN, ids=[message for _, message in BROKEN])
def test_broken_genome_names_the_first_broken_rule(edit, message):
    with pytest.raises(GasError) as error:
        load_genome(_broken(edit))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_cli_broken_genome_is_one_line(gas_cli, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_broken(lambda d: _block(d, 2, 1).update(heads=5))))
    result = gas_cli("cost", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == "gas cost: error: stage 2 block 1: heads=5 does not divide dim=192"


def test_stages_option_changes_the_design_rule():
    data = _broken(lambda d: d.update(stages=d["stages"][:2], subsamples=d["subsamples"][:1]))
    with pytest.raises(GenomeError, match="exactly 3 stages"):
        load_genome(data)
    genome = load_genome({**data, "space": "efficientvit:stages=2"})
    space = get_space(genome.space)
    assert space.stages == 2 and space.references == {}
    assert space.build(genome.at_resolution(64))(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    with pytest.raises(GasError, match="stages must be an integer from 1 to 5"):
        get_space("efficientvit:stages=9")


# ---- export ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "resolution"), [("efficientvit_m0", 224), ("sampled", 96)])
def test_exported_module_is_gas_model(space, sampled_genomes, tmp_path, source, resolution):
    """The standalone file builds the same parameters, and with shared weights the same outputs, fused too."""
    genome = load_genome(sampled_genomes[17] if source == "sampled" else source).at_resolution(resolution)
    path = export_genome(genome, tmp_path / "exported_efficientvit.py", Provenance("test")).path
    lint = subprocess.run([RUFF, "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(path)])
    assert lint.returncode == 0
    module = load_exported(path.read_text(), "exported_efficientvit")
    assert json.loads(genome.to_json()) == module.GENOME
    ours = space.build(genome)
    _randomize(ours)
    ours.eval()
    theirs = module.build_model(num_classes=genome.num_classes).eval()
    assert [(name, tuple(t.shape)) for name, t in theirs.state_dict().items()] == [
        (name, tuple(t.shape)) for name, t in ours.state_dict().items()
    ]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(2, 3, resolution, resolution)
    with torch.no_grad():
        expected = ours(images)
        torch.testing.assert_close(theirs(images), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(theirs.fuse()(images), expected, atol=1e-4, rtol=1e-4)


# ---- search ---------------------------------------------------------------------------------------------


def test_search_end_to_end_on_this_space(space, tmp_path):
    """A search runs this space as it runs turbovit: budget checked first, trials trained, front exported.

    In process: the Ray driver and the CLI around it are the same for every space and tested on turbovit.
    """
    search = pytest.importorskip("gas.search", reason="gas search is not part of this checkout")
    from gas.evaluate.proxy import ProxyConfig

    config = search.SearchConfig(
        budget=500_000_000,
        space="efficientvit",
        study="ev",
        storage=f"sqlite:///{tmp_path}/runs/gas.db",
        trials=3,
        seed=1,
        proxy=ProxyConfig(dataset="digits", resolution=32, train_size=128, val_size=64).with_overrides(
            epochs=1, device="cpu"
        ),
        progress=False,
        replicates=None,  # one seed per trial: each trial's accuracy is its one training's
    )
    search.search_in_process(config)

    study = optuna.load_study(study_name="ev", storage=f"sqlite:///{tmp_path}/runs/gas.db")
    assert study.user_attrs["space"] == "efficientvit"
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and not [t for t in trials if t.state == TrialState.RUNNING]
    for trial in complete:
        attrs = trial.user_attrs
        genome = load_genome(attrs["genome"])
        cost = space.cost(genome)
        assert genome.space == "efficientvit" and genome.resolution == 224
        assert attrs["flops"] == cost.flops <= 0.5e9 and attrs["params"] == cost.params
        assert trial.values == [attrs["accuracy"], attrs["flops"]] and attrs["accuracy_history"] == [attrs["accuracy"]]
        assert (attrs["accuracy"] * 64).is_integer()  # a share of the 64 validation images
        assert attrs["proxy_resolution"] == 32 and attrs["proxy_epochs"] == 1
    for trial in trials:
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs["flops"] > 0.5e9 and trial.constraints["flops"] > 0

    exported = run_gas("export", "--study", "ev", "--pick", "best", "--out", "best_ev.py", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    module = load_exported((tmp_path / "best_ev.py").read_text(), "best_ev")
    best = pick_trial(study, "best")
    assert best.values[0] == max(t.values[0] for t in complete)
    genome = load_genome(best.user_attrs["genome"])
    assert json.loads(genome.to_json()) == module.GENOME
    assert module.build_model().state_dict().keys() == space.build(genome).state_dict().keys()
