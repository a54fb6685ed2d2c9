"""`gas export`: the written module is gas's model in torch-only code, deterministic and lint-clean."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import optuna
import pytest
import torch

from gas.cli import main
from gas.errors import GasError
from gas.export import export_genome, render_module
from gas.front import knee_point
from gas.fvcore_count import fvcore_flops
from gas.provenance import Provenance
from gas.space import ExportConstant, get_space, load_genome
from gas.study import front
from search_spaces.turbovit import TurboViTSpace
from tests.conftest import run_gas
from tests.studies import add_complete, mixed_study, new_study, sampled_genomes, sqlite_url

REPO = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


def _import_file(path: Path):
    """Import an exported file as a module of its own (removed from sys.modules again afterwards)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses looks the module up while creating classes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[path.stem]
    return module


def _genome_cases() -> dict[str, dict | str]:
    """References and random genomes (as `gas sample` draws them), at 224px and at 64px."""
    random_224 = sampled_genomes(1, seed=11, budget=1_000_000_000)[0]
    random_64 = sampled_genomes(1, seed=4, resolution=64)[0]
    hiera_tiny_64 = json.loads(load_genome("hiera_tiny").at_resolution(64).to_json())
    return {"turbovit": "turbovit", "hiera_tiny_64": hiera_tiny_64, "random_224": random_224, "random_64": random_64}


CASES = _genome_cases()


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """Every case exported once into one folder, named after the case."""
    folder = tmp_path_factory.mktemp("exported")
    return {
        case: export_genome(load_genome(source), folder / f"{case}.py", Provenance(f"test case {case}")).path
        for case, source in CASES.items()
    }


@pytest.fixture(scope="module")
def gas_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        case: get_space(load_genome(source).space).build(load_genome(source)).eval() for case, source in CASES.items()
    }


@pytest.mark.parametrize("case", list(CASES))
def test_exported_model_equals_gas_model(case, exports, gas_models):
    genome = load_genome(CASES[case])
    module = _import_file(exports[case])
    assert json.loads(genome.to_json()) == module.GENOME

    ours = gas_models[case]
    theirs = module.build_model(num_classes=genome.num_classes).eval()
    assert [(name, tuple(t.shape)) for name, t in theirs.state_dict().items()] == [
        (name, tuple(t.shape)) for name, t in ours.state_dict().items()
    ]
    theirs.load_state_dict(ours.state_dict(), strict=True)

    cost = get_space(genome.space).cost(genome)
    assert sum(p.numel() for p in theirs.parameters()) == cost.params
    exported_flops = fvcore_flops(theirs, genome.resolution)
    assert exported_flops == fvcore_flops(ours, genome.resolution)
    assert abs(exported_flops - cost.flops) <= 0.005 * cost.flops

    images = torch.randn(1, 3, genome.resolution, genome.resolution)
    with torch.no_grad():
        torch.testing.assert_close(theirs(images), ours(images), atol=1e-6, rtol=0)


def test_exported_modules_run_where_gas_cannot_be_imported(exports, gas_models, tmp_path):
    """A new Python without site (so the editable gas install is invisible), outside the repo, builds each one."""
    inputs, expected = {}, {}
    threads = torch.get_num_threads()
    for case, model in gas_models.items():
        resolution = load_genome(CASES[case]).resolution
        inputs[case] = {"state_dict": model.state_dict(), "images": torch.randn(1, 3, resolution, resolution)}
        with torch.no_grad():
            expected[case] = model(inputs[case]["images"])
    torch.save(inputs, tmp_path / "inputs.pt")
    script = textwrap.dedent(
        """
        import importlib, importlib.util, sys
        import torch
        torch.set_num_threads(int(sys.argv[3]))  # the parent's, so both reduce in the same order
        assert importlib.util.find_spec("gas") is None, "gas must not be importable here"
        try:
            import gas  # noqa: F401
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("import gas succeeded")
        results = {}
        for case, given in torch.load(sys.argv[1]).items():
            exported = importlib.import_module(case)
            model = exported.build_model(num_classes=exported.GENOME["num_classes"])
            model.load_state_dict(given["state_dict"], strict=True)
            with torch.no_grad():
                results[case] = {"logits": model.eval()(given["images"]), "genome": exported.GENOME}
        assert not any(name == "gas" or name.startswith("gas.") for name in sys.modules)
        torch.save(results, sys.argv[2])
        """
    )
    paths = sysconfig.get_paths()
    folder = next(iter(exports.values())).parent
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(folder), paths["purelib"], paths["platlib"]]),
    }
    result = subprocess.run(
        [sys.executable, "-S", "-c", script, str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"), str(threads)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    results = torch.load(tmp_path / "out.pt")
    assert set(results) == set(CASES)
    for case, result in results.items():
        torch.testing.assert_close(result["logits"], expected[case], atol=1e-6, rtol=0)
        assert json.loads(load_genome(CASES[case]).to_json()) == result["genome"]


def test_exported_modules_pass_ruff_check_and_format(exports):
    files = [str(path) for path in exports.values()] + [str(REPO / "generated" / "turbovit.py")]
    config = ["--config", str(REPO / "pyproject.toml"), "--no-cache"]
    lint = subprocess.run([RUFF, "check", *config, *files], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    formatted = subprocess.run([RUFF, "format", "--check", *config, *files], capture_output=True, text=True)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_module_reads_top_down_data_then_family_then_build_model(tmp_path):
    source = render_module(load_genome("turbovit"), Provenance("reference genome 'turbovit'"), "turbovit")
    lines = source.splitlines()
    assert lines[0].startswith('"""turbovit: ')
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    assert {line.split()[1].split(".")[0] for line in imports} <= {
        "__future__",
        "dataclasses",
        "math",
        "typing",
        "torch",
    }
    blocks_at, family_at, build_at = (
        source.index("\nBLOCKS = ["),
        source.index("\nclass Hiera("),
        source.index("\ndef build_model("),
    )
    assert blocks_at < family_at < build_at
    genome = load_genome("turbovit")
    rows = source[blocks_at : source.index("\n]", blocks_at)].strip().splitlines()[1:]
    assert len(rows) == len(genome.blocks)


def test_committed_turbovit_export_is_current():
    """generated/turbovit.py is what `gas export turbovit --out generated/turbovit.py` writes today."""
    command = "gas export turbovit --out generated/turbovit.py"
    provenance = Provenance("reference genome 'turbovit' (turbovit space)", command=command)
    expected = render_module(load_genome("turbovit"), provenance, "turbovit")
    assert (REPO / "generated" / "turbovit.py").read_text() == expected, f"stale: re-run `{command}`"


def _brute_force_front(study) -> list[int]:
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE" and t.user_attrs["feasible"]]

    def dominates(a, b):
        at_least = a.values[0] >= b.values[0] and a.values[1] <= b.values[1]
        return at_least and (a.values[0] > b.values[0] or a.values[1] < b.values[1])

    return sorted(t.number for t in complete if not any(dominates(o, t) for o in complete))


def test_export_from_study_is_deterministic_and_picks_match_their_definitions(tmp_path):
    url, study, numbers = mixed_study(tmp_path / "study.db")
    front_numbers = _brute_force_front(study)
    trials = {t.number: t for t in study.get_trials()}
    best = max(front_numbers, key=lambda n: trials[n].values[0])

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    from_study = ("export", "--study", "mixed", "--storage", url, "--out", "model.py")
    by_trial = run_gas(*from_study, "--trial", str(best), cwd=first)
    assert by_trial.returncode == 0, by_trial.stderr
    by_pick = run_gas(*from_study, "--pick", "best", cwd=second)
    assert by_pick.returncode == 0, by_pick.stderr
    assert (first / "model.py").read_bytes() == (second / "model.py").read_bytes()
    text = (first / "model.py").read_text()
    assert f"study 'mixed', trial {best}" in text
    assert f"Trial seed: {trials[best].user_attrs['seed']}" in text
    assert f"Proxy accuracy: {trials[best].values[0]:.2%}" in text

    # The knee by its geometric definition: farthest above the chord from the cheapest to the most accurate.
    points = sorted((trials[n].values[1], trials[n].values[0], n) for n in front_numbers)
    (f0, a0, _), (f1, a1, _) = points[0], points[-1]
    scaled = [((f - f0) / (f1 - f0), (a - a0) / (a1 - a0), n) for f, a, n in points]
    distances = {n: (a - f) / 2**0.5 for f, a, n in scaled}
    top = max(distances.values())
    knee_candidates = [n for n, d in distances.items() if abs(d - top) < 1e-12]
    assert knee_point(front(study)).number == max(knee_candidates, key=lambda n: trials[n].values[0])

    budget = sorted(trials[n].values[1] for n in front_numbers)[2]
    within = [n for n in numbers["complete"] if trials[n].values[1] <= budget]
    expected_under = max(within, key=lambda n: trials[n].values[0])
    assert (
        main(
            [
                "export",
                "--study",
                "mixed",
                "--storage",
                url,
                "--pick",
                "max-acc-under",
                str(int(budget)),
                "--out",
                str(tmp_path / "under.py"),
            ]
        )
        == 0
    )
    assert f"trial {expected_under}\n" in (tmp_path / "under.py").read_text()


def test_export_of_reference_through_cli_writes_an_importable_module(tmp_path):
    result = run_gas("export", "hiera_tiny", "--out", str(tmp_path / "hiera_tiny.py"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hiera_tiny.py" in result.stdout and "27.91M params" in result.stdout
    module = _import_file(tmp_path / "hiera_tiny.py")
    assert json.loads(load_genome("hiera_tiny").to_json()) == module.GENOME


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope", "--trial", "0"], "no study 'nope'"),
        (["--study", "s", "--trial", "42"], "has no trial 42"),
        (["--study", "s", "--trial", "1"], "is PRUNED"),
        (["--study", "s", "--pick", "cheapest"], "--pick 'cheapest' is not one of"),
        (["--study", "s", "--pick", "max-acc-under", "lots"], "not a count"),
        (["--study", "s"], "exactly one of --trial N or --pick"),
        (["turbovit", "--study", "s", "--trial", "0"], "not both"),
        (["no_such_reference"], "neither a genome file nor a reference"),
    ],
)
def test_export_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    url = sqlite_url(tmp_path / "s.db")
    study = new_study(url, "s", budget=10**10)
    add_complete(study, json.loads(load_genome("turbovit").to_json()), 0.5, budget=10**10)
    trial = study.ask()
    trial.set_constraint("flops", 1.0)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    out = tmp_path / "out.py"
    assert main(["export", *args, "--storage", url, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def test_export_refuses_an_unimportable_out_name(tmp_path, capsys):
    assert main(["export", "turbovit", "--out", str(tmp_path / "turbo-vit.py")]) == 2
    assert "not importable" in capsys.readouterr().err


class _AlteredRecipeSpace(TurboViTSpace):
    """The turbovit space with its export recipe altered, to see export refuse a recipe that breaks the contract."""

    def __init__(self, alter) -> None:
        super().__init__()
        self.alter = alter

    def export_recipe(self, genome):
        return self.alter(super().export_recipe(genome))


def _wider_stem(recipe):
    constants = tuple(
        dataclasses.replace(c, value={**c.value, "dim": c.value["dim"] + 8}) if c.name == "STEM" else c
        for c in recipe.constants
    )
    return dataclasses.replace(recipe, constants=constants)


@pytest.mark.parametrize(
    ("alter", "message"),
    [
        (_wider_stem, "its model shapes pos_embed (1, 3136, 72) instead of (1, 3136, 64)"),
        (lambda recipe: dataclasses.replace(recipe, model_module="gas.space"), "imports 'gas'"),
        (lambda recipe: dataclasses.replace(recipe, model_module="gas.fvcore_count"), "imports below the top"),
        (
            lambda recipe: dataclasses.replace(
                recipe, arguments={**recipe.arguments, "blocks": "[" + "BLOCKS, " * 20 + "]"}
            ),
            "does not fit on one",
        ),
        (
            lambda recipe: dataclasses.replace(recipe, constants=(*recipe.constants, ExportConstant("Hiera", 1))),
            "UPPER_CASE",
        ),
        (
            lambda recipe: dataclasses.replace(
                recipe, constants=(*recipe.constants, ExportConstant("LAYER_NORM_EPS", 1))
            ),
            "clashes",
        ),
    ],
)
def test_export_refuses_a_recipe_that_breaks_the_contract(alter, message, tmp_path):
    out = tmp_path / "broken.py"
    with pytest.raises(GasError, match=re.escape(message)):
        export_genome(load_genome("turbovit"), out, Provenance("test"), space=_AlteredRecipeSpace(alter))
    assert not out.exists()


def test_committed_search_winner_export_is_current(tmp_path):
    """generated/turbovit_search_2_5g.py is what its README command writes from the committed study."""
    study_file = Path("experiments") / "results" / "default_search.db"
    (tmp_path / study_file.parent).mkdir(parents=True)
    shutil.copy(REPO / study_file, tmp_path / study_file)  # opening a SQLite study writes beside it
    out = Path("generated") / "turbovit_search_2_5g.py"
    args = ["export", "--study", "turbovit-2.5G", "--storage", f"sqlite:///{study_file}", "--trial", "41"]
    result = run_gas(*args, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / out).read_text() == (REPO / out).read_text(), "stale: re-run the command in generated/README.md"
