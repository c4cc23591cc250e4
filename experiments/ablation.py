"""The paper's ablations as runs: Table 4 rows (a)-(d), the alpha / beta sweeps (Tables
S1 / S2) and Table 2's untrained control, each trained per seed and analyzed with
``spurious_analysis``.

Layout of ``out_dir``::

    runs/<row>/seed<s>/           the training run dir (``tdfast.training`` layout; loadable)
    runs/<row>/seed<s>/result.json   what ``run_one`` measured: train summary + analyses

A run whose ``result.json`` exists is skipped, one with a ``last/`` checkpoint is resumed,
so an interrupted ablation continues where it stopped. ``summary.summarize`` turns the
results into the table.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from tdfast.errors import InputError
from tdfast.model.config import TDDETRConfig
from tdfast.training.config import RunConfig

# Table 4: (VSDC, TDEM) per row.
TABLE4_ROWS: dict[str, dict[str, Any]] = {
    "a": {"use_vsdc": False, "use_tdem": False},
    "b": {"use_vsdc": True, "use_tdem": False},
    "c": {"use_vsdc": False, "use_tdem": True},
    "d": {"use_vsdc": True, "use_tdem": True},
}
# The opt-in variant (docs/fidelity.md, section 5) and its parts, each on top of row d.
VARIANT_NET = {"flow_keep_magnitude": True, "dyn_null_slot": True}
VARIANT_ROWS: dict[str, dict[str, Any]] = {
    "v": {**TABLE4_ROWS["d"], **VARIANT_NET, "vsdc_moment_in_context": True},
    "v-net": {**TABLE4_ROWS["d"], **VARIANT_NET},
    "v-vsdc": {**TABLE4_ROWS["d"], "vsdc_moment_in_context": True},
    "v-magnitude": {**TABLE4_ROWS["d"], "flow_keep_magnitude": True, "vsdc_moment_in_context": True},
    "v-null": {**TABLE4_ROWS["d"], "dyn_null_slot": True, "vsdc_moment_in_context": True},
}
# Each row below is its parent plus the fields it names, so a row differs from its parent only there.
# VSDC that also strips the moment's look (keeps its temporal differences) in every synthesized
# sample (w) or in half of them (w-half); w-vsdc without the network switches
_W = {**VARIANT_ROWS["v"], "vsdc_strip_look": 1.0}
# w plus the loss that asks the dynamics attention to mark the moment (w_dyn_match)
_X = {**_W, "w_dyn_match": 1.0}
# x-half whose first half of the epochs strips every sample (p = 1, then 0.5): the dynamics are
# learned before the moment's look is shown
_X_THEN_HALF = {**_X, "vsdc_strip_look": 0.5, "vsdc_strip_all_first": 0.5}
_NO_DROPOUT = {"dropout": 0.0, "input_dropout": 0.0}
# x-then-half with the preset's dropout kept but time-locked (one mask per video and channel, so
# a temporal difference is not dropout noise); z also strips only moments whose clips show
# dynamics (von Neumann ratio > 1.1; docs/fidelity.md, section 5)
_Z_LOCK = {**_X_THEN_HALF, "time_locked_dropout": True}
_Z = {**_Z_LOCK, "vsdc_strip_gate": 1.1}
VARIANT_ROWS.update({
    "w": _W,
    "w-half": {**_W, "vsdc_strip_look": 0.5},
    "w-vsdc": {**VARIANT_ROWS["v-vsdc"], "vsdc_strip_look": 1.0},
    "x": _X,
    "x-half": {**_X, "vsdc_strip_look": 0.5},
    # x with the dynamics cue made easier to learn (issue 29's in-distribution goal): a 4x match
    # loss (x-dm4); A_t weighed 0.7 and the clip's own features 0.3 in the merge (x-b03, beta 0.3)
    "x-dm4": {**_X, "w_dyn_match": 4.0},
    "x-b03": {**_X, "beta": 0.3},
    "x-then-half": _X_THEN_HALF,
    # x trained without dropout: dropout on the clip features (input projection and layers)
    # puts its noise into every temporal difference, the signal A_t has to learn from
    "x-nodrop": {**_X, **_NO_DROPOUT},
    # x-then-half without dropout
    "y": {**_X_THEN_HALF, **_NO_DROPOUT},
    "z-lock": _Z_LOCK,
    "z": _Z,
    # z showing the look more after the first half (p = 0.25 instead of 0.5): in distribution
    "z-quarter": {**_Z, "vsdc_strip_look": 0.25},
    # screens of z's in-distribution gap at 40 epochs (docs/fidelity.md, "Training length"): z with
    # the all-strip phase a quarter of the epochs, and z without the match loss
    "z-f25": {**_Z, "vsdc_strip_all_first": 0.25},
    "z-m0": {**_Z, "w_dyn_match": 0.0},
})
NAMED_ROWS = {**TABLE4_ROWS, **VARIANT_ROWS}
# Table 2's "No-training" control: row (a)'s network at the trainer's initialization.
UNTRAINED = "untrained"
DEFAULT_ROWS = ("a", "b", "c", "d", UNTRAINED)
# Tables S1 / S2 sweep one ratio with both components on (alpha = 1 reproduces row c,
# beta = 1 row b, as in the paper's tables).
PAPER_ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
PAPER_BETAS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
RESULT_NAME = "result.json"


@dataclass(frozen=True)
class Row:
    """One line of the results table: a name, the config fields it sets, whether it trains,
    and the earlier row it duplicates (same resolved config: its runs are reused)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    train: bool = True
    same_as: str | None = None


def plan_rows(rows: Sequence[str] = DEFAULT_ROWS, alphas: Sequence[float] = (),
              betas: Sequence[float] = (), base: RunConfig | None = None) -> list[Row]:
    """Rows in table order: ``rows`` (names from ``NAMED_ROWS``: Table 4's and the variant's, or
    ``untrained``), then
    ``alpha=<x>`` for each alpha and ``beta=<x>`` for each beta (both components on).

    With ``base`` given, a row whose resolved config equals an earlier row's gets
    ``same_as`` (e.g. ``alpha=0.5`` is row ``d`` when the base has alpha 0.5).
    """
    out: list[Row] = []
    for name in rows:
        if name == UNTRAINED:
            out.append(Row(UNTRAINED, dict(TABLE4_ROWS["a"]), train=False))
        elif name in NAMED_ROWS:
            out.append(Row(name, dict(NAMED_ROWS[name])))
        else:
            raise InputError(f"--rows: expected names from {[*NAMED_ROWS, UNTRAINED]}, got {name!r}")
    for key, values in (("alpha", alphas), ("beta", betas)):
        for v in values:
            v = float(v)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"--{key}s: expected values in [0, 1], got {v!r}")
            out.append(Row(f"{key}={v:g}", {**TABLE4_ROWS["d"], key: v}))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise InputError(f"rows: expected each row once, got {names}")
    if base is None:
        return out
    seen: dict[str, str] = {}
    resolved = []
    for r in out:
        key = json.dumps([r.train, resolve(base, r).to_dict()], sort_keys=True)
        resolved.append(Row(r.name, r.overrides, r.train, seen.get(key)))
        seen.setdefault(key, r.name)
    return resolved


def parse_values(text: str, flag: str, paper: Sequence[float] = ()) -> list[float]:
    """A comma list of numbers (``''`` for none), or ``paper`` for ``paper``'s values."""
    if text.strip() == "paper":
        return list(paper)
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag}: expected a comma list of numbers or 'paper', got {text!r}") from None


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: a comma list of integers."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--seeds: expected a comma list of integers, got {text!r}") from None


def resolve(base: RunConfig, row: Row) -> RunConfig:
    """The configs row ``row`` trains: ``base`` with the row's fields set."""
    return base.replace(**row.overrides)


def run_dir(out_dir: str | os.PathLike, row: Row, seed: int) -> Path:
    """Where the run of ``row`` (or of the row it duplicates) with ``seed`` lives."""
    return Path(out_dir) / "runs" / (row.same_as or row.name) / f"seed{seed}"


@dataclass(frozen=True)
class Job:
    """Everything one run needs (picklable, for worker processes)."""

    row: Row
    seed: int
    config: dict[str, Any]
    train_ann: str
    val_ann: str
    eval_anns: dict[str, str]
    video_dirs: tuple[str, ...]
    text_dir: str
    out: str
    epochs: int | None
    progress: bool
    threads: int = 0  # torch threads in this run; 0 leaves torch's default


def run_one(job: Job) -> dict[str, Any]:
    """Train (or, for the untrained row, initialize) one run, analyze it on every split of
    ``job.eval_anns`` and write ``result.json``; an existing result is returned as is."""
    import torch

    from tdfast.retrieval.retriever import Retriever
    from tdfast.atomic import atomic_write_bytes
    from tdfast.model.checkpoint import read_json
    from tdfast.experiments.spurious import spurious_analysis
    from tdfast.training import TrainData, TrainOptions, train
    from tdfast.training.run_dir import LAST

    out = Path(job.out)
    if (out / RESULT_NAME).is_file():
        return read_json(out / RESULT_NAME)
    if job.threads > 0:
        torch.set_num_threads(job.threads)
    config = RunConfig.from_dict(job.config)
    start = time.perf_counter()
    summary: dict[str, Any]
    if job.row.train:
        resume = out if (out / LAST).is_dir() else None
        result = train(config,
                       TrainData(job.train_ann, job.val_ann, job.video_dirs, job.text_dir),
                       TrainOptions(out, epochs=job.epochs, seed=job.seed, progress=job.progress,
                                    resume=resume, eval_before=False))
        summary = {"best_epoch": result.best_epoch, "epochs": result.epochs, "steps": result.steps,
                   "stopped_early": result.stopped_early, "val_best": result.best_metrics}
    else:
        summary = {"epochs": 0, "steps": 0}
        initial_checkpoint(config.model, job.seed, out)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    retriever = Retriever.from_pretrained(out, backend="eager", device="cpu")
    analyses = {split: spurious_analysis(retriever, ann, job.video_dirs, job.text_dir)
                for split, ann in job.eval_anns.items()}
    record = {"row": job.row.name, "seed": job.seed, "overrides": job.row.overrides,
              "config": config.to_dict(), "train": summary, "analysis": analyses}
    atomic_write_bytes(out / RESULT_NAME, json.dumps(record, indent=1).encode("utf-8"))
    return record


def initial_checkpoint(config: TDDETRConfig, seed: int, out: Path) -> Path:
    """Save the network the trainer would start from with ``seed`` (same seeding call)."""
    from tdfast.model.tddetr import TDDETR
    from tdfast.training.rng import seed_everything

    seed_everything(seed)
    return TDDETR(config).save_pretrained(out)


def run_ablation(base: RunConfig, rows: list[Row], seeds: Sequence[int], *, train_ann: str | os.PathLike,
                 val_ann: str | os.PathLike, video_dirs: Sequence[str | os.PathLike],
                 text_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 eval_anns: dict[str, str | os.PathLike] | None = None, epochs: int | None = None,
                 jobs: int = 1, progress: bool = False,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every (row, seed) run not already done, ``jobs`` at a time; returns all results in
    plan order (duplicate rows share their original's runs, relabelled).

    ``eval_anns``: split name -> labelled annotation file analyzed for every run
    (default ``{"val": val_ann}``). ``jobs`` > 1 runs that many worker processes with
    ``cores // jobs`` torch threads each.
    """
    if jobs < 1:
        raise InputError(f"--jobs: expected a positive integer, got {jobs!r}")
    if not seeds:
        raise InputError("--seeds: expected at least one seed, got none")
    eval_anns = {k: str(v) for k, v in (eval_anns or {"val": val_ann}).items()}
    work = [Job(r, int(s), resolve(base, r).to_dict(), str(train_ann), str(val_ann), eval_anns,
                tuple(str(d) for d in video_dirs), str(text_dir), str(run_dir(out_dir, r, s)), epochs,
                progress and jobs == 1)
            for r in rows if r.same_as is None for s in seeds]
    done: dict[tuple[str, int], dict[str, Any]] = {}

    def finish(job: Job, record: dict[str, Any]) -> None:
        done[(job.row.name, job.seed)] = record
        log(f"row {job.row.name} seed {job.seed}: {_brief(record)}")

    if jobs == 1:
        for job in work:
            finish(job, run_one(job))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, (os.cpu_count() or 1) // jobs)
        work = [replace(j, threads=threads) for j in work]
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            for job, record in zip(work, pool.map(run_one, work)):
                finish(job, record)
    return [{**done[(r.same_as or r.name, int(s))], "row": r.name, "same_as": r.same_as}
            for r in rows for s in seeds]


def _brief(record: dict[str, Any]) -> str:
    parts = [f"{record['train']['seconds']:.0f} s"]
    for split, rep in record["analysis"].items():
        parts.append(f"{split} mAP {rep['normal']['MR-full-mAP']}, R1@0.5 {rep['normal']['MR-full-R1@0.5']} "
                     f"-> GT zeroed {rep['masked']['MR-full-R1@0.5']}")
    return "; ".join(parts)
