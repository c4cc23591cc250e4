"""Training throughput: optimizer steps per second of the reference trainer, per preset.

    python benchmarks/bench_train.py [--device cpu|cuda] [--presets tiny,qvhighlights]
        [--steps 10] [--threads 1,2] [--out benchmarks/results/train_<device>.json]

What one step is: ``Trainer.train_step`` on one global batch of the preset's ``batch_size``
as ``tdfast train`` runs it (VSDC doubles the rows, the negative-pair pass, Hungarian
matching of every decoder layer, all losses, backward, grad clip, AdamW), plus
fetching the batch from the DataLoader (features cached in memory after the warm-up).
Data: a synthetic dataset written with the preset's feature dims and QVHighlights-like
lengths (videos 60-75 clips for qvhighlights, queries 8-20 tokens). ``--warmup`` steps
are dropped, then ``--steps`` steps are timed one by one (CUDA synchronised);
steps/s = 1 / median step time. On CUDA each preset runs in fp32 and with bf16
autocast; on CPU with each ``--threads`` count (torch intra-op threads: on a shared
2-core machine 2 threads can be slower than 1, since every op waits for the slower
thread). One process; the machine (CPU, cores, load before and after, git commit)
is in the record.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from tdfast.benchmarks import machine_info, make_record, summarize_ms, wait_for_quiet, write_record
from tdfast.benchmarks.timing import interleaved_rounds, synchronizer
from tdfast.data.dataset import MomentDataset
from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.training.config import RunConfig
from tdfast.training.distributed import DistContext
from tdfast.training.trainer import TrainOptions, Trainer, TrainSets

# Synthetic data per preset: clip counts and query tokens like the real sets (QVH: 150-s videos of
# 2-s clips, ~11-token queries); tiny keeps the demo's sizes.
DATA = {
    "tiny": dict(min_clips=10, max_clips=32, min_fillers=2, max_fillers=6),
    "qvhighlights": dict(min_clips=60, max_clips=75, min_fillers=7, max_fillers=19),
    "charades": dict(min_clips=20, max_clips=40, min_fillers=5, max_fillers=12),
}


def bench_preset(name: str, device: str, precision: str, steps: int, warmup: int, root: Path) -> dict:
    """Time ``steps`` training steps of preset ``name`` (torch's current thread count) -> one row."""
    run = RunConfig.from_name(name)
    config, training = run.model, run.training
    num_train = training.batch_size * (steps + warmup)  # one epoch, no batch seen twice
    ds = make_synthetic_dataset(root / name, seed=0, num_train=num_train, num_val=0, num_test=0,
                                video_dims=(config.video_dim,), text_dim=config.text_dim,
                                clip_len=config.clip_len, max_queries_per_video=1, **DATA[name])
    data = MomentDataset(ds.train, ds.video_dirs, ds.text_dir, config, cache_size=2 * num_train)
    options = TrainOptions(root / f"{name}-run", seed=0, autocast=precision, progress=False)
    trainer = Trainer(run, TrainSets(data), options, DistContext(device=torch.device(device)))
    trainer.net.train()
    batches = iter(trainer.loader)
    for _ in range(warmup):
        trainer.train_step(next(batches))
    seconds, _ = interleaved_rounds({"step": lambda: trainer.train_step(next(batches))}, steps,
                                    synchronizer(device))
    ms = summarize_ms(seconds["step"])
    steps_per_s = 1e3 / ms["p50_ms"]
    row = {"preset": name, "device": device, "precision": precision, "threads": torch.get_num_threads(),
           "batch_size": training.batch_size,
           "steps_per_s": round(steps_per_s, 3), "samples_per_s": round(steps_per_s * training.batch_size, 1),
           "step_p50_ms": round(ms["p50_ms"], 1), "step_p90_ms": round(ms["p90_ms"], 1),
           "step_min_ms": round(ms["min_ms"], 1), "n": ms["n"], "warmup": warmup,
           "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 3),
           "use_vsdc": training.use_vsdc, "use_negative_pair": training.use_negative_pair}
    if device == "cuda":
        row["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        torch.cuda.reset_peak_memory_stats()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default="tiny,qvhighlights", help="comma-separated preset names")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per preset and precision")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated torch intra-op thread counts to run each CPU case with")
    ap.add_argument("--max-load", type=float, default=1.0,
                    help="wait (up to 10 min) for the 1-minute load average to drop below this first")
    ap.add_argument("--out", type=Path, help="record path (default benchmarks/results/train_<device>.json)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA GPU is visible to torch (use --device cpu)")
    out = args.out or Path(__file__).parent / "results" / f"train_{args.device}.json"
    presets = [p for p in args.presets.split(",") if p]
    precisions = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    threads = [int(t) for t in args.threads.split(",") if t] if args.device == "cpu" else [torch.get_num_threads()]
    wait_for_quiet(args.max_load, timeout_s=600)
    machine = machine_info(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            for precision in precisions:
                for n in threads:
                    torch.set_num_threads(n)
                    rows.append(bench_preset(name, args.device, precision, args.steps, args.warmup, Path(tmp)))
                    print(rows[-1], flush=True)
    machine["loadavg_end"] = machine_info(args.device)["loadavg"]
    setup = {"steps": args.steps, "warmup": args.warmup, "presets": presets, "precisions": precisions,
             "threads": threads,
             "data": {p: DATA[p] for p in presets}, "processes": 1,
             "command": "python benchmarks/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_record(make_record("train", "optimizer steps/s of Trainer.train_step (VSDC, negative pairs, matching, "
                             "losses, backward, AdamW) plus batch fetch, median of timed steps, per preset",
                             machine, setup, rows), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
