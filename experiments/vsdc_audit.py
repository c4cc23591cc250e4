"""Does VSDC break the planted context shortcut in the batches the trainer sees?

On a synthetic dataset (``tdfast.data.synthetic``) every clip that carries a context
pattern is found from its features (``ctx_clips``: normalized clip . ctx[k] above
``CTX_THRESHOLD``; planted context gives ~0.8, anything else < 0.45, see the test). For each
row of a prepared training batch (``training.prepare.prepare_batch``, the trainer's own
call) with query concept c it then counts:

- ``flank_side_ctx``: % of window sides (the clip right before a window's first clip and
  right after its last, where one exists) that carry ctx[c]: the shortcut cue. 100 % in
  the data with ``spurious=1``.
- ``rows_flanked``: % of rows with ctx[c] on at least one side of a window.
- ``rows_stray_ctx``: % of rows with a ctx[c] clip more than ``context_clips`` clips away
  from every window: the counter-example the shifted test is full of (its decoy).
- ``rows_partner_concept``: % of rows whose VSDC context video holds a moment of concept c
  (from the planted meta): its clips enter unlabelled, a false negative on the content cue.
  (The moment signature itself, ``signal=0.5``, is too weak to find clip by clip: planted
  clips score 0.13-0.33 against sig[c], others up to 0.39.)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tdfast.training.config import RunConfig

CTX_THRESHOLD = 0.45  # normalized clip . ctx[k]: planted ~0.8 (context_signal 1.5), else < 0.45


def ctx_clips(video: Tensor, ctx: Tensor) -> Tensor:
    """video [B, L, D] (rows L2-normalized or zero), ctx [K, D] unit -> [B, L, K] bool."""
    unit = video / video.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    return unit @ ctx.T > CTX_THRESHOLD


def row_stats(gt: Tensor, mask: Tensor, has_ctx: Tensor, context_clips: int) -> dict[str, int]:
    """One row: gt, mask, has_ctx (ctx[c] of the row's concept) [L] bool -> counts: window
    ``sides``, sides ``flanked`` by ctx[c], ``stray`` (1 if ctx[c] sits away from every window)."""
    n = int(mask.sum())
    gt, has_ctx = gt[:n], has_ctx[:n]
    idx = torch.nonzero(gt).flatten().tolist()
    sides = flanked = 0
    for i, j in enumerate(idx):  # window starts / ends = GT clips without a GT neighbour
        for edge, step in ((j, -1), (j, 1)):
            nb = edge + step
            if 0 <= nb < n and not gt[nb]:
                sides += 1
                flanked += int(has_ctx[nb])
    near = torch.zeros(n, dtype=torch.bool)
    for j in idx:
        near[max(j - context_clips, 0): j + context_clips + 1] = True
    return {"sides": sides, "flanked": flanked, "stray": int((has_ctx & ~near).any())}


def audit_batches(data_dir: str | Path, config: RunConfig, seed: int = 0, epochs: int = 1
                  ) -> dict[str, Any]:
    """Run the trainer's loader and ``prepare_batch`` for ``epochs`` epochs on
    ``data_dir/train.jsonl`` (a synthetic dataset) and return the percentages above,
    plus ``rows`` (rows seen)."""
    from tdfast.data.collate import make_loader
    from tdfast.data.dataset import MomentDataset
    from tdfast.training.prepare import prepare_batch
    from tdfast.training.rng import batch_generator

    data = Path(data_dir)
    meta = json.loads((data / "synthetic_meta.json").read_text())
    planted, ctx_n = meta["planted"], meta["spec"]["context_clips"]
    vec = np.load(data / "vectors.npz")
    ctx = torch.from_numpy(vec["ctx"]).float()
    ds = MomentDataset(data / "train.jsonl", [data / "video_feats"], data / "text_feats", config.model)
    concepts: dict[str, set[int]] = {}  # vid -> concepts of its moments
    for a in ds.annotations:
        concepts.setdefault(a.vid, set()).add(planted[str(a.qid)]["concept"])
    loader = make_loader(ds, config.training.batch_size, shuffle=True, seed=seed)
    gen = batch_generator(seed)
    totals = {"sides": 0, "flanked": 0, "stray": 0, "partner": 0, "rows": 0, "rows_flanked": 0}
    for _ in range(epochs):
        for raw in loader:
            batch = prepare_batch(raw, config.model, config.training, gen)
            has_ctx = ctx_clips(batch.video, ctx)  # [P, L, K]
            for p, m in enumerate(batch.meta):
                c = planted[str(m["qid"])]["concept"]
                s = row_stats(batch.gt_clip_mask[p], batch.video_mask[p], has_ctx[p, :, c], ctx_n)
                for k in ("sides", "flanked", "stray"):
                    totals[k] += s[k]
                other = m.get("vsdc_context_vid")
                totals["partner"] += int(other is not None and c in concepts.get(other, ()))
                totals["rows"] += 1
                totals["rows_flanked"] += int(s["flanked"] > 0)
    rows = max(totals["rows"], 1)
    return {"rows": totals["rows"],
            "flank_side_ctx": round(100 * totals["flanked"] / max(totals["sides"], 1), 1),
            "rows_flanked": round(100 * totals["rows_flanked"] / rows, 1),
            "rows_stray_ctx": round(100 * totals["stray"] / rows, 1),
            "rows_partner_concept": round(100 * totals["partner"] / rows, 1)}


def main(argv: list[str] | None = None) -> int:
    """``python -m tdfast.experiments.vsdc_audit --data DIR --record FILE [--set K=V ...]...``:
    the audit for the plain batches and for each ``--variant`` (space-separated ``--set``
    assignments) on the benchmark's ``tiny`` config, one epoch, written as JSON."""
    import argparse
    import sys

    from tdfast.benchmarks.machine import machine_info
    from tdfast.atomic import atomic_write_bytes
    from tdfast.experiments.shortcut import SHORTCUT_PRESET, SHORTCUT_SETS

    p = argparse.ArgumentParser(prog="python -m tdfast.experiments.vsdc_audit")
    p.add_argument("--data", required=True, help="a synthetic dataset (e.g. the benchmark's DIR/data)")
    p.add_argument("--variant", action="append", default=[], help="e.g. 'use_vsdc=true alpha=0.5'")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--record", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = RunConfig.from_name(SHORTCUT_PRESET).override(SHORTCUT_SETS)
    variants = {"use_vsdc=false": ["use_vsdc=false"], **{v: v.split() for v in args.variant}}
    results = {name: audit_batches(args.data, base.override(sets), epochs=args.epochs)
               for name, sets in variants.items()}
    for name, r in results.items():
        print(f"{name}: {r}")
    record = {"results": results, "epochs": args.epochs, "preset": SHORTCUT_PRESET, "set": SHORTCUT_SETS,
              "command": "python -m tdfast.experiments.vsdc_audit " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine_info("cpu")}
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.record), json.dumps(record, indent=1).encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
