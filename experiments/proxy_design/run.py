"""Proxy design: which cheap training schedule ranks genomes above its own seed noise?

    python experiments/proxy_design/run.py --jobs 2            # runs what is missing, then the table
    python experiments/proxy_design/run.py --report-only       # redraw the table from the runs CSV

Every setting trains the same genomes (the first --genomes of experiments/results/fidelity_genomes.json, drawn
at random within 2.5G FLOPs, plus the `turbovit` reference) at two training seeds; the seed fixes the
initialisation and the batch order, nothing else. Against that, the target: the mean over --target-seeds
seeds of a schedule with 4x the default proxy's optimiser steps at 64 px (where a mask unit of 8x8 tokens no
longer covers the whole image), scored on the TEST split, which no setting's figure reads. Per setting:

    retest_tau    Kendall tau between the genomes' seed-0 and seed-1 accuracies (test-retest), with its 95%
                  interval: how much of the proxy's ranking survives a change of seed
    icc           intraclass correlation of the seed accuracies: the share of one evaluation's variance that is
                  the genome's, not the seed's
    target_tau    Kendall tau between the setting's seed-mean accuracy and the target's, with its interval
    seconds       mean CPU seconds of one evaluation on one thread (the worker process's CPU time, which other
                  jobs on the machine do not inflate as they do wall time), and its ratio to today's default

Goals: retest_tau >= 0.85, icc >= 0.9, target_tau >= 0.75, each at no more than 2x today's seconds.

Every run is one row of proxy_design_runs.csv, written as it finishes; a rerun skips the rows it finds, so
the hours this takes may be spread over several sessions. Runs go in this order, so that a partial run
already answers something: today's default at both seeds, the target, then the other settings.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python experiments/NAME/run.py`: the repository root holds experiments.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import csv
import json
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass

import pandas as pd

from experiments.common.cli import harness_parser
from experiments.common.results import RESULTS, command_line, stamp, write_page
from experiments.common.tables import frame_markdown, write_csv
from experiments.common.workers import worker_pool
from gas.evaluate.proxy import ProxyConfig
from gas.stats import kendall_tau, seed_noise, tau_interval

SCRIPT = "experiments/proxy_design/run.py"
GENOMES_FILE = RESULTS / "fidelity_genomes.json"
RUN_COLUMNS = ("setting", "genome", "seed", "accuracy", "test_accuracy", "seconds", "error")
GOALS = {"retest_tau": 0.85, "icc": 0.9, "target_tau": 0.75, "cost_x": 2.0}
TARGET = "target"
TARGET_ROW = f"{TARGET} (test split)"  # the target's own seed agreement, first in the table


@dataclass(frozen=True)
class Setting:
    """A proxy to measure: the default's fields it changes."""

    name: str
    overrides: dict

    def proxy(self, base: ProxyConfig) -> ProxyConfig:
        return base.with_overrides(device="cpu", **self.overrides)


def target_setting(base: ProxyConfig | None = None) -> Setting:
    """4x the base proxy's optimiser steps (epochs x images / batch) at 64 px: the same images and epochs in
    batches a quarter the size. At 64 px a batch of 8 holds as many tokens as 32 images at 32 px, so the
    target costs what 4x the tokens cost, not the 16x that 4x the epochs at 64 px would."""
    base = base or ProxyConfig()
    return Setting(TARGET, {"resolution": 64, "batch_size": max(1, base.train.batch_size // 4)})


# Today's default first: every other row is read against it. Then in order of promise, so that the rows a
# session has time for are the likeliest to matter: the validation set's own sampling noise (512 images at
# 70% carry a binomial sd of 2 points), a learning rate that trains further in the same steps, more steps.
SETTINGS = (
    Setting("today", {}),
    Setting("2048 val images", {"val_size": 2048}),
    Setting("lr 1e-3", {"lr": 1e-3}),
    Setting("lr 1e-3, 2048 val", {"lr": 1e-3, "val_size": 2048}),
    Setting("8 epochs", {"epochs": 8}),
    Setting("lr 1e-3, 2048 val, 6 epochs", {"lr": 1e-3, "val_size": 2048, "epochs": 6}),
    Setting("lr 3e-4, 2048 val", {"lr": 3e-4, "val_size": 2048}),
    Setting("lr 3e-4", {"lr": 3e-4}),
    Setting("batch 16", {"batch_size": 16}),
    Setting("2048 train images", {"train_size": 2048}),
    Setting("no warm-up", {"warmup_fraction": 0.0}),
    Setting("warm-up 0.3", {"warmup_fraction": 0.3}),
    Setting("batch 64", {"batch_size": 64}),
    Setting("no label smoothing", {"label_smoothing": 0.0}),
    Setting("64 px", {"resolution": 64}),
)


def genomes(count: int) -> list[dict]:
    from gas.space import get_space

    drawn = json.loads(GENOMES_FILE.read_text())[:count]
    return [*drawn, get_space("turbovit").references["turbovit"].to_dict()]


def train_one(setting: Setting, base: ProxyConfig, genome: dict, seed: int) -> dict:
    """One evaluation on one thread: validation accuracy as a search sees it, and test accuracy for the target."""
    import torch

    from gas.evaluate.datasets import load_dataset, load_test_split
    from gas.evaluate.proxy import build_proxy_model, evaluate, proxy_genome
    from gas.evaluate.train import evaluate_accuracy, train
    from gas.space import get_space, load_genome

    torch.set_num_threads(1)
    config = setting.proxy(base).with_overrides(seed=seed, zero_cost_batch=0)
    loaded = load_genome(genome)
    started = time.process_time()
    row = {"setting": setting.name, "seed": seed, "accuracy": None, "test_accuracy": None, "error": ""}
    try:
        if setting.name != TARGET:
            row["accuracy"] = evaluate(loaded, config).accuracy
        else:
            splits = load_dataset(config.dataset, config.resolution, None, config.train_size, config.val_size)
            model = build_proxy_model(loaded, config.resolution, splits.num_classes, seed)
            flops = get_space(loaded.space).cost(proxy_genome(loaded, config.resolution, splits.num_classes)).flops
            row["accuracy"] = train(model, splits, config.train, forward_flops=flops).accuracy
            test = load_test_split(config.dataset, config.resolution, None, config.train_size, config.test_size)
            row["test_accuracy"] = evaluate_accuracy(model, test.images, test.labels, torch.device("cpu"))[0]
    except Exception as error:  # a run that fails is a row with its error; the others go on
        row["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    row["seconds"] = time.process_time() - started
    return row


def planned(
    count: int, target_seeds: int, base: ProxyConfig, only: Sequence[str] = ()
) -> list[tuple[Setting, int, int]]:
    """(setting, genome index, seed) in the order they run: today's, the target, then the rest."""
    runs = [(SETTINGS[0], index, seed) for seed in (0, 1) for index in range(count)]
    runs += [(target_setting(base), index, seed) for seed in range(target_seeds) for index in range(count)]
    runs += [(setting, index, seed) for setting in SETTINGS[1:] for seed in (0, 1) for index in range(count)]
    return [run for run in runs if not only or run[0].name in only]


def read_runs(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=RUN_COLUMNS)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def run_missing(out: Path, count: int, target_seeds: int, jobs: int, base: ProxyConfig, only: Sequence[str]) -> None:
    path = out / "proxy_design_runs.csv"
    done = {(row.setting, int(row.genome), int(row.seed)) for row in read_runs(path).itertuples()}
    todo = [(s, i, seed) for s, i, seed in planned(count, target_seeds, base, only) if (s.name, i, seed) not in done]
    print(f"proxy_design: {len(done)} runs found, {len(todo)} to go", flush=True)
    if not todo:
        return
    drawn = genomes(count - 1)
    new_file = not path.exists()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with path.open("a", newline="") as handle, worker_pool(jobs, threads=1) as pool:
        writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
        if new_file:
            writer.writeheader()
        pending = {}
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < jobs:
                setting, index, seed = queue.pop(0)
                pending[pool.submit(train_one, setting, base, drawn[index], seed)] = index
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                row = {**future.result(), "genome": index}
                writer.writerow(row)
                handle.flush()
                shown = row["error"] or f"acc {row['accuracy']:.3f}" + (
                    f" test {row['test_accuracy']:.3f}" if row["test_accuracy"] is not None else ""
                )
                left = len(queue) + len(pending)
                print(
                    f"[{time.perf_counter() - started:6.0f}s] {row['setting']:<20} genome {index:2d} "
                    f"seed {row['seed']} {shown} in {row['seconds']:.0f}s; {left} to go",
                    flush=True,
                )


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting with every genome at both seeds: the figures the module docstring defines. The
    target's own row comes first: its test accuracies' agreement across seeds bounds how well any setting can
    agree with it."""
    runs = runs[runs.error.isna() | (runs.error == "")]
    today_seconds = runs[runs.setting == "today"].seconds.mean()
    target_runs = runs[runs.setting == TARGET].pivot_table(index="genome", columns="seed", values="test_accuracy")
    target = target_runs.mean(axis=1)
    rows = []
    if not target_runs.empty and {0, 1} <= set(target_runs.columns):
        rows.append(_noise_row(TARGET_ROW, target_runs, runs[runs.setting == TARGET].seconds.mean()))
    for name in [setting.name for setting in SETTINGS]:
        own = runs[runs.setting == name].pivot_table(index="genome", columns="seed", values="accuracy")
        if own.empty or not {0, 1} <= set(own.columns):
            continue
        row = _noise_row(name, own.dropna(subset=[0, 1]), runs[runs.setting == name].seconds.mean())
        common = own.index.intersection(target.index)
        if len(common) >= 3:
            means, goal = own.loc[common, [0, 1]].mean(axis=1), target.loc[common]
            row["target_tau"] = kendall_tau(means, goal)
            row["target_95%"] = _interval(*tau_interval(means, goal))
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["cost_x"] = table.seconds / today_seconds if today_seconds else None
    return table


def _noise_row(name: str, by_genome: pd.DataFrame, seconds: float) -> dict:
    """Seed noise of one setting; `by_genome` holds a row per genome and a column per seed."""
    noise = seed_noise([list(values[~pd.isna(values)]) for values in by_genome.to_numpy()])
    return {
        "setting": name,
        "genomes": len(by_genome),
        "seeds": by_genome.shape[1],
        "retest_tau": noise["retest_tau"],
        "retest_95%": _interval(noise["retest_low"], noise["retest_high"]),
        "icc": noise["icc"],
        "seed_sd": noise["seed_sd"],
        "between_sd": noise["between_sd"],
        "target_tau": None,
        "target_95%": "",
        "seconds": seconds,
    }


def _interval(low: float | None, high: float | None) -> str:
    if low is None or high is None or low != low:
        return ""
    return f"[{low:.2f}, {high:.2f}]"


def verdict(row: pd.Series) -> str:
    if row.setting == TARGET_ROW:
        return "yardstick"
    met = [
        row.retest_tau is not None and row.retest_tau >= GOALS["retest_tau"],
        row.icc is not None and row.icc >= GOALS["icc"],
        row.target_tau is not None and row.target_tau == row.target_tau and row.target_tau >= GOALS["target_tau"],
        row.cost_x is not None and row.cost_x <= GOALS["cost_x"],
    ]
    return f"{sum(met)}/4 goals"


def reading(table: pd.DataFrame) -> str:
    """What the table says about the default: the settings that meet every goal, else the closest on each."""
    settings = table[table.setting != TARGET_ROW] if not table.empty else table
    if settings.empty:
        return ""
    met = settings[settings.goals == "4/4 goals"]
    if not met.empty:
        return f"\n\nMeeting every goal: {', '.join(met.setting)}."
    labels = {"retest_tau": "test-retest τ", "icc": "ICC", "target_tau": "τ against the target"}
    figures = {column: settings[column].astype(float) for column in labels}
    best = {column: settings.loc[values.idxmax()] for column, values in figures.items() if values.notna().any()}
    closest = "; ".join(
        f"{labels[column]} {row[column]:.2f} ({row.setting}, {row.cost_x:.2f}x)" for column, row in best.items()
    )
    default = settings[settings.setting == SETTINGS[0].name]  # one row, or none before today's runs are in
    today = ", ".join(f"{labels[column]} {_figure(default[column].astype(float).max())}" for column in labels)
    return f"\n\nNo setting meets every goal, so the CPU default stays today's. Highest: {closest}. Today: {today}."


def _figure(value: float) -> str:
    return f"{value:.2f}" if pd.notna(value) else "n/a"


def report(out: Path, count: int, target_seeds: int, base: ProxyConfig) -> str:
    runs = read_runs(out / "proxy_design_runs.csv")
    table = summarise(runs)
    if not table.empty:
        table["goals"] = table.apply(verdict, axis=1)
    target = runs[runs.setting == TARGET]
    expected = len(planned(count, target_seeds, base))
    yardstick = ""
    own = table[table.setting == TARGET_ROW] if not table.empty else table
    if not own.empty and pd.notna(own.icc.iloc[0]):
        icc, seeds = own.icc.iloc[0], int(own.seeds.iloc[0])
        # Spearman-Brown: the reliability of a mean of k evaluations from that of one.
        yardstick = (
            f" The target's first row is its own agreement across seeds on the test split: the mean of its "
            f"{seeds} seeds has reliability {seeds * icc / (1 + (seeds - 1) * icc):.2f} (Spearman-Brown from "
            "its ICC), which bounds how well any setting can agree with it."
        )
    shown = table.copy()
    if not shown.empty:  # the target has no tau against itself: an empty cell, not "nan"
        shown["target_tau"] = [f"{tau:.3f}" if pd.notna(tau) else "" for tau in shown.target_tau]
    markdown = (
        "## Proxy design: ranking above the seed noise\n\n"
        f"{count} genomes of the turbovit space (30 drawn at random within 2.5G FLOPs, the first {count - 1} of "
        f"them, and `turbovit`), two training seeds per setting, on `shapes`. Target: {target_seeds} seeds of "
        f"{target_setting(base).overrides} (4x today's steps at 64 px), scored on the test split "
        f"({target.genome.nunique()} genomes done). Goals: test-retest τ ≥ {GOALS['retest_tau']}, ICC ≥ "
        f"{GOALS['icc']}, τ against the target ≥ {GOALS['target_tau']}, at ≤ {GOALS['cost_x']}x today's "
        f"CPU seconds per evaluation on one thread. Runs: {len(runs)} of {expected} planned "
        f"(proxy_design_runs.csv).{yardstick}\n\n"
        + (frame_markdown(shown, floatfmt=".3f") if not table.empty else "No setting is complete yet.")
        + reading(table)
        + f"\n\n{stamp(command_line(SCRIPT))}\n"
    )
    write_csv(out / "proxy_design.csv", table)
    write_page(out, "proxy_design", markdown, summary=markdown)
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness_parser(__doc__, redraw="redraw from the runs CSV; train nothing")
    parser.add_argument("--genomes", type=int, default=15, help="drawn genomes, plus turbovit (default: 15)")
    parser.add_argument("--target-seeds", type=int, default=3, help="seeds of the target schedule (default: 3)")
    parser.add_argument("--jobs", type=int, default=2, help="evaluations at a time, one thread each (default: 2)")
    parser.add_argument("--only", nargs="+", default=(), metavar="SETTING", help="run only these settings")
    parser.add_argument("--epochs", type=int, help="epochs of every setting that does not set its own (tiny runs)")
    parser.add_argument("--train-size", type=int, help="training images of every setting that does not set its own")
    parser.add_argument("--val-size", type=int, help="validation images of every setting that does not set its own")
    parser.add_argument("--test-size", type=int, help="test images the target is scored on (default: the dataset's)")
    args = parser.parse_args(argv)
    count = args.genomes + 1
    known = {setting.name for setting in SETTINGS} | {TARGET}
    unknown = [name for name in args.only if name not in known]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}")
    sizes = {name: getattr(args, name) for name in ("epochs", "train_size", "val_size", "test_size")}
    sizes = {name: size for name, size in sizes.items() if size is not None}
    for name, size in sizes.items():  # refused now, not after every run has trained
        if size < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {size}")
    base = ProxyConfig().with_overrides(**sizes)
    recorded = args.out / "proxy_design_base.json"
    if recorded.exists() and json.loads(recorded.read_text()) != base.to_dict():
        parser.error(f"{args.out} holds runs of another base proxy ({recorded}); give another --out")
    if not args.report_only:
        args.out.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(base.to_dict(), indent=1))
        run_missing(args.out, count, args.target_seeds, args.jobs, base, args.only)
    print(report(args.out, count, args.target_seeds, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
