"""The dynamics-shift benchmark (docs/fidelity.md, section 5): rows trained on data where
text-aligned context flanks the moment, tested where it flanks a decoy, beside the
per-clip temporal-difference learner that shows the task is solvable.

    python -m tdfast.experiments.dynamics_bench --out DIR [--qvh ../shared/qvhighlights]
        [--rows a,d,z] [--seeds 0,1,2] [--epochs 100] [--jobs 1] [--spec KEY=VALUE ...]
        [--set KEY=VALUE ...] [--record FILE]

writes the dataset (``DynamicsSpec``) under ``DIR/data``, trains and analyzes every (row,
seed) with ``tdfast.experiments.ablation`` (base: the ``tiny`` preset widened to 75 clips /
32 tokens, ``DYNAMICS_SETS``), fits the learner once per seed, and writes ``DIR/<name>.json``
/ ``.md`` (and a copy of the JSON to ``--record``): in-distribution (val) vs shifted (test)
R1@0.5 / R1@0.7 / mAP and the fraction kept, per row, mean ± std over seeds, and where the
top-1 window goes on test (on the moment, or drawn to the decoy's query-like scene).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DYNAMICS_PRESET = "tiny"
DYNAMICS_SETS = ["max_video_len=75", "max_query_len=32", "early_stop_patience=0"]
# 100: the variant z learns the dynamics later than the official rows and is not done at 40 or 60
# (docs/fidelity.md, section 5, "Training length")
DYNAMICS_EPOCHS = 100


def probe_result(data: Path, seed: int, clip_len: float) -> dict[str, Any]:
    """Fit ``DiffProbe`` on train and score its top-1 windows on val and test with the official
    evaluator: ``{"val": {metric: value}, "test": {...}}`` (``SHIFT_KEYS`` metrics)."""
    from tdfast.data.annotations import load_annotations
    from tdfast.data.features import QUERY_KEY, VIDEO_KEY, read_npz_array
    from tdfast.eval import eval_submission, load_jsonl
    from tdfast.experiments.dynamics_probe import fit_probe
    from tdfast.experiments.shortcut import SHIFT_KEYS

    def split(name: str):
        anns = load_annotations(data / f"{name}.jsonl")
        videos = [read_npz_array(data / "video_feats" / f"{a.vid}.npz", VIDEO_KEY) for a in anns]
        queries = [read_npz_array(data / "text_feats" / f"qid{a.qid}.npz", QUERY_KEY) for a in anns]
        return anns, videos, queries

    anns, videos, queries = split("train")
    probe = fit_probe(videos, queries, anns, clip_len, seed=seed)
    out = {}
    for name in ("val", "test"):
        anns, videos, queries = split(name)
        sub = [{"qid": a.qid, "query": a.query, "vid": a.vid,
                "pred_relevant_windows": [probe.predict(v, q, clip_len)]}
               for a, v, q in zip(anns, videos, queries)]
        brief = eval_submission(sub, load_jsonl(data / f"{name}.jsonl"))["brief"]
        out[name] = {"normal": {k: brief[k] for k in SHIFT_KEYS}}
    return out


def _parser() -> argparse.ArgumentParser:
    from tdfast.experiments.shortcut import add_bench_args

    p = argparse.ArgumentParser(prog="python -m tdfast.experiments.dynamics_bench",
                                description=__doc__.split("\n\n")[0])
    add_bench_args(p, "a,d,z", DYNAMICS_EPOCHS, "DynamicsSpec", "dynamics")
    p.add_argument("--qvh", default="../shared/qvhighlights", help="QVHighlights root (annotations/ inside)")
    return p


def main(argv: list[str] | None = None) -> int:
    from dataclasses import asdict

    from tdfast.atomic import atomic_write_bytes
    from tdfast.experiments.ablation import parse_seeds, plan_rows, run_ablation
    from tdfast.experiments.dynamics_data import DynamicsSpec, make_dynamics_dataset
    from tdfast.experiments.shortcut import (add_decoy_hits, decoy_markdown, shift_markdown, shift_table,
                                             spec_overrides, write_bench_record)
    from tdfast.experiments.summary import make_record
    from tdfast.training.config import RunConfig

    args = _parser().parse_args(argv)
    spec = DynamicsSpec(**spec_overrides(asdict(DynamicsSpec()), args.spec))
    out = Path(args.out)
    data = out / "data"
    if not (data / "dynamics_meta.json").is_file():
        make_dynamics_dataset(data, args.qvh, spec)
    sets = DYNAMICS_SETS + args.overrides
    base = RunConfig.from_name(DYNAMICS_PRESET).override(sets)
    rows = plan_rows([r for r in args.rows.split(",") if r], base=base)
    seeds = parse_seeds(args.seeds)
    results = run_ablation(base, rows, seeds, train_ann=data / "train.jsonl", val_ann=data / "val.jsonl",
                           video_dirs=[data / "video_feats"], text_dir=data / "text_feats", out_dir=out,
                           eval_anns={"val": data / "val.jsonl", "test": data / "test.jsonl"},
                           epochs=args.epochs, jobs=args.jobs)
    add_decoy_hits(results, rows, out, data / "test.jsonl", data / "dynamics_meta.json", [data / "video_feats"],
                   data / "text_feats")
    probes = []
    for s in seeds:
        cache = out / "probe" / f"seed{s}.json"
        if not cache.is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cache, json.dumps(probe_result(data, s, spec.clip_len)).encode("utf-8"))
        probes.append({"row": "diff-probe", "seed": s, "analysis": json.loads(cache.read_text())})
    inputs = {"dynamics_spec": asdict(spec), "preset": DYNAMICS_PRESET, "set": sets, "qvh": args.qvh,
              "command": "python -m tdfast.experiments.dynamics_bench "
                         + " ".join(sys.argv[1:] if argv is None else argv)}
    record = make_record(base.to_dict(), rows, seeds, args.epochs, inputs, results)
    record["shift"] = shift_table(results + probes)
    record["probe"] = probes
    text = shift_markdown(record["shift"]) + "\n" + decoy_markdown(results)
    write_bench_record(out, record, args.name, text, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
