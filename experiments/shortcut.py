"""The synthetic shortcut benchmark (docs/fidelity.md): context flanks the moment of the
query's concept in training, and flanks a decoy at test time.

    python -m tdfast.experiments.shortcut --out DIR [--seeds 0,1,2] [--rows a,b,c,d,untrained]
        [--alphas ...] [--betas ...] [--epochs 100] [--jobs 2] [--set KEY=VALUE ...] [--record FILE]

writes the dataset (``SHORTCUT_SPEC``) under ``DIR/data``, runs the ablation
(``tdfast.experiments.ablation``, base preset ``tiny`` + ``SHORTCUT_SETS``) under ``DIR``
with val (drawn like train) and test (shifted) analyzed, adds per run how often the
top-1 window lands on the test decoy, and writes ``DIR/ablation.json`` / ``.md`` (and a
copy of the JSON to ``--record``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Train: every moment of concept c is flanked by ctx[c] (a perfect shortcut), and the
# moment's own signature is weaker than that context, so the shortcut is the easier cue.
# Val: drawn like train (selection happens on data like the training data). Test: the
# moment is flanked by another concept's context and ctx[c] flanks a decoy segment.
SHORTCUT_SPEC: dict[str, Any] = dict(seed=0, num_train=200, num_val=60, num_test=60, spurious=1.0,
                                     test_spurious=0.0, test_decoy=1.0, val_like_train=True,
                                     signal=0.5, context_signal=1.5)
SHORTCUT_PRESET = "tiny"
SHORTCUT_SETS = ["early_stop_patience=0"]
SHORTCUT_EPOCHS = 100
DECOY_IOU = 0.5  # a top-1 window "on" the GT: IoU >= this


def decoy_hits(checkpoint: str | Path, ann_path: str | Path, meta_path: str | Path,
               video_dirs, text_dir) -> dict[str, Any]:
    """Where the top-1 window goes on a split with planted decoys, in percent of the queries
    that have one (``queries`` counts them; the others are left out):

    - ``top1_on_gt``: IoU >= ``DECOY_IOU`` with a GT window;
    - ``top1_near_decoy``: otherwise, overlapping the decoy zone (the decoy segment with its
      ``context_clips`` on each side) with a larger IoU than the GT zone (each GT window with
      its context clips), i.e. drawn to where the query's training-time context now is.
    """
    from tdfast.retrieval.retriever import Retriever
    from tdfast.data.annotations import load_annotations
    from tdfast.data.features import FeatureStore
    from tdfast.experiments.spurious import predict_split
    from tdfast.spans import pairwise_iou

    meta = json.loads(Path(meta_path).read_text())
    planted, ctx = meta["planted"], meta["spec"]["context_clips"]
    retriever = Retriever.from_pretrained(checkpoint)
    clip_len = retriever.config.clip_len
    anns = [a for a in load_annotations(ann_path) if planted[str(a.qid)].get("decoy_clips")]
    if not anns:
        return {"queries": 0, "top1_on_gt": None, "top1_near_decoy": None}
    store = FeatureStore(video_dirs, text_dir, retriever.config, cache_size=64)
    records, _ = predict_split(retriever, anns, store, zero_gt=False, top_k=1)
    on_gt, near_decoy = [], []
    for a, rec in zip(anns, records):
        top1 = np.asarray(rec["pred_relevant_windows"][:1], dtype=np.float64)[:, :2]  # [1, 2] s
        gt = np.asarray(a.windows, dtype=np.float64)  # [G, 2] s
        st, ed = planted[str(a.qid)]["decoy_clips"]
        decoy_zone = np.asarray([[st - ctx, ed + ctx]], dtype=np.float64) * clip_len
        gt_zone = gt + np.asarray([-ctx, ctx]) * clip_len
        hit = float(pairwise_iou(top1, gt).max()) >= DECOY_IOU
        to_decoy = float(pairwise_iou(top1, decoy_zone).max())
        on_gt.append(hit)
        near_decoy.append(not hit and to_decoy > 0 and to_decoy > float(pairwise_iou(top1, gt_zone).max()))
    return {"queries": len(anns), "top1_on_gt": round(100 * float(np.mean(on_gt)), 2),
            "top1_near_decoy": round(100 * float(np.mean(near_decoy)), 2)}


def add_decoy_hits(results: list[dict[str, Any]], rows: list[Any], out: Path, test_ann: Path, meta: Path,
                   video_dirs, text_dir) -> None:
    """Set ``r["decoy"]`` (``decoy_hits`` on ``test_ann``) on every result, cached per run as
    ``decoy.json`` in its run dir."""
    from tdfast.atomic import atomic_write_bytes
    from tdfast.experiments.ablation import run_dir

    for r in results:
        run = run_dir(out, next(x for x in rows if x.name == r["row"]), r["seed"])
        cache = run / "decoy.json"
        if not cache.is_file():
            atomic_write_bytes(cache, json.dumps(decoy_hits(run, test_ann, meta, video_dirs, text_dir)).encode("utf-8"))
        r["decoy"] = json.loads(cache.read_text())


def decoy_markdown(results: list[dict[str, Any]]) -> str:
    """Markdown table: per row, mean ± std over seeds of the ``decoy_hits`` rates on test."""
    from tdfast.experiments.summary import mean_std

    rows: dict[str, list[dict]] = {}
    for r in results:
        rows.setdefault(r["row"], []).append(r["decoy"])
    lines = [f"**test (queries with a decoy): top-1 window on the GT (IoU >= {DECOY_IOU}) or drawn to the "
             "decoy zone**\n", "| row | seeds | top-1 on GT % | top-1 near decoy % |", "|---|---|---|---|"]
    for name, ds in rows.items():
        cells = []
        for key in ("top1_on_gt", "top1_near_decoy"):
            s = mean_std([d[key] for d in ds])
            cells.append(f"{s['mean']:.2f}" if s["n"] == 1 else f"{s['mean']:.2f} ± {s['std']:.2f}")
        lines.append(f"| {name} | {len(ds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SHIFT_KEYS = ("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP")


def shift_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: in-distribution (val) and shifted (test) score and the fraction kept
    (test / val, per seed, in percent) of each ``SHIFT_KEYS`` metric, mean ± std over seeds."""
    from tdfast.experiments.summary import mean_std

    rows: dict[str, list[dict]] = {}
    for r in results:
        rows.setdefault(r["row"], []).append(r)
    table = []
    for name, runs in rows.items():
        entry: dict[str, Any] = {"row": name, "seeds": [r["seed"] for r in runs]}
        for key in SHIFT_KEYS:
            val = [r["analysis"]["val"]["normal"][key] for r in runs]
            test = [r["analysis"]["test"]["normal"][key] for r in runs]
            kept = [100.0 * t / v if v else 0.0 for v, t in zip(val, test)]
            entry[key] = {"in_dist": mean_std(val), "shifted": mean_std(test), "kept": mean_std(kept)}
        table.append(entry)
    return table


def shift_markdown(table: list[dict[str, Any]]) -> str:
    """Markdown: per row and ``SHIFT_KEYS`` metric, in-dist / shifted / kept %, mean ± std."""
    head = " | ".join(f"{k.removeprefix('MR-full-')} in-dist | shifted | kept %" for k in SHIFT_KEYS)
    lines = ["**in-distribution (val) vs shifted (test), kept = test / val per seed**\n",
             f"| row | seeds | {head} |", "|---|---|" + "---|---|---|" * len(SHIFT_KEYS)]
    for e in table:
        cells = [f"{e[k][part]['mean']:.1f} ± {e[k][part]['std']:.1f}"
                 for k in SHIFT_KEYS for part in ("in_dist", "shifted", "kept")]
        lines.append(f"| {e['row']} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_bench_args(p: argparse.ArgumentParser, rows: str, epochs: int, spec_name: str, name: str) -> None:
    """The options every synthetic benchmark command shares (run dir, rows, seeds, overrides, record)."""
    p.add_argument("--out", required=True, help="benchmark directory (created or continued)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rows", default=rows, help="rows of tdfast.experiments.ablation.NAMED_ROWS")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--spec", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a {spec_name} field of the dataset (number), e.g. context=2.5")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base config field after the benchmark's own (repeatable)")
    p.add_argument("--name", default=name, help=f"file name of DIR/<name>.json and .md (default {name})")
    p.add_argument("--record", help="also copy DIR/<name>.json here (e.g. benchmarks/results/fidelity/...)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tdfast.experiments.shortcut", description=__doc__.split("\n\n")[0])
    add_bench_args(p, "a,b,c,d,untrained", SHORTCUT_EPOCHS, "SHORTCUT_SPEC", "ablation")
    p.add_argument("--alphas", default="", help="comma list or 'paper'")
    p.add_argument("--betas", default="", help="comma list or 'paper'")
    return p


def write_bench_record(out: Path, record: dict[str, Any], name: str, text: str, copy_to: str | None) -> None:
    """``out/<name>.json`` and ``out/<name>.md`` (``text``), atomically; print ``text``; copy the
    JSON to ``copy_to`` (a committed record) when given."""
    from tdfast.atomic import atomic_write_bytes
    from tdfast.experiments.summary import write_record

    json_path, md_path = write_record(out, record, name)
    atomic_write_bytes(md_path, text.encode("utf-8"))
    print(text)
    if copy_to:
        Path(copy_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(json_path, copy_to)


def spec_overrides(defaults: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """``defaults`` with the ``--spec KEY=VALUE`` overrides (numbers keep the field's type)."""
    from tdfast.errors import InputError

    spec = dict(defaults)
    for item in items:
        key, _, value = item.partition("=")
        if key not in spec:
            raise InputError(f"--spec: expected KEY=VALUE with KEY in {sorted(spec)}, got {item!r}")
        spec[key] = type(spec[key])(float(value)) if isinstance(spec[key], (int, float)) else value
    return spec


def main(argv: list[str] | None = None) -> int:
    from tdfast.data.synthetic import make_synthetic_dataset
    from tdfast.experiments.ablation import (PAPER_ALPHAS, PAPER_BETAS, parse_seeds, parse_values, plan_rows,
                                          run_ablation)
    from tdfast.experiments.summary import make_record, markdown
    from tdfast.training.config import RunConfig

    args = _parser().parse_args(argv)

    out = Path(args.out)
    data = out / "data"
    spec = spec_overrides(SHORTCUT_SPEC, args.spec)
    if not (data / "synthetic_meta.json").is_file():
        make_synthetic_dataset(data, **spec)
    ds = {"train": data / "train.jsonl", "val": data / "val.jsonl", "test": data / "test.jsonl"}
    video_dirs, text_dir = [data / "video_feats"], data / "text_feats"
    sets = SHORTCUT_SETS + args.overrides
    base = RunConfig.from_name(SHORTCUT_PRESET).override(sets)
    rows = plan_rows([r for r in args.rows.split(",") if r], parse_values(args.alphas, "--alphas", PAPER_ALPHAS),
                     parse_values(args.betas, "--betas", PAPER_BETAS), base=base)
    seeds = parse_seeds(args.seeds)
    results = run_ablation(base, rows, seeds, train_ann=ds["train"], val_ann=ds["val"], video_dirs=video_dirs,
                           text_dir=text_dir, out_dir=out, eval_anns={"val": ds["val"], "test": ds["test"]},
                           epochs=args.epochs, jobs=args.jobs)
    add_decoy_hits(results, rows, out, ds["test"], data / "synthetic_meta.json", video_dirs, text_dir)
    inputs = {"synthetic_spec": spec, "preset": SHORTCUT_PRESET, "set": sets,
              "command": "python -m tdfast.experiments.shortcut " + " ".join(sys.argv[1:] if argv is None else argv)}
    record = make_record(base.to_dict(), rows, seeds, args.epochs, inputs, results)
    record["shift"] = shift_table(results)
    text = shift_markdown(record["shift"]) + "\n" + markdown(record["table"]) + "\n" + decoy_markdown(results)
    write_bench_record(out, record, args.name, text, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
