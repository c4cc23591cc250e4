"""What the two-file commit costs: ``save_pretrained`` vs one atomic rename per file.

    python benchmarks/bench_save.py [--preset qvhighlights] [--rounds 20] [--threads 1]
        [--out benchmarks/results/save_cpu.json]

What is timed: writing one checkpoint (config.json + model.safetensors of the preset's
network, untrained weights; the bytes are the same either way) over an existing one, in
a directory on this machine's disk, by

- ``commit``: ``model.save_pretrained(dir)`` -- both files staged and fsynced, the journal
  written and fsynced, both renamed, the directory fsynced, the journal removed, under the
  directory's flock (``tdfast.commit``; a kill anywhere leaves the old or the new pair);
- ``rename per file``: what saving did before, each file staged, fsynced and renamed on its
  own (``tdfast.atomic.atomic_write_bytes``), weights then config (a kill between the two
  renames left new weights beside the old config).

Both serialise the weights in the call. The two alternate round by round so load changes
hit both; the record keeps the medians and their ratio.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.atomic import atomic_write_bytes
from tdfast.benchmarks import machine_info, make_record, summarize_ms, write_record
from tdfast.benchmarks.timing import interleaved_rounds
from tdfast.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME


def rename_per_file(model: TDDETR, directory: Path) -> None:
    """The previous protocol: each file atomically on its own, weights first."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))
    atomic_write_bytes(directory / CONFIG_NAME, model.config.to_json().encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="qvhighlights")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir under the repo's disk)")
    p.add_argument("--out", default="benchmarks/results/save_cpu.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TDDETR(TDDETRConfig.from_name(args.preset)).eval()
    with tempfile.TemporaryDirectory(dir=args.dir or Path(args.out).resolve().parent) as root:
        commit_dir, plain_dir = Path(root) / "commit", Path(root) / "plain"
        calls = {"commit": lambda: model.save_pretrained(commit_dir),
                 "rename per file": lambda: rename_per_file(model, plain_dir)}
        for fn in calls.values():
            fn()  # warm-up; every timed call then replaces an existing checkpoint
        seconds, _ = interleaved_rounds(calls, args.rounds, lambda: None)
        size = sum(f.stat().st_size for f in commit_dir.iterdir())
        fs = os.statvfs(root)
    rows = [{"protocol": name, "bytes": size, **{k: round(v, 2) for k, v in summarize_ms(s).items()}}
            for name, s in seconds.items()]
    ratio = rows[0]["p50_ms"] / rows[1]["p50_ms"]
    for r in rows:
        print(r)
    print(f"commit / rename per file (median): {ratio:.3f}")
    setup = {**vars(args), "model": f"{args.preset} preset, untrained weights",
             "filesystem_block_size": fs.f_bsize}
    record = make_record("save", "one checkpoint save over an existing one: save_pretrained's two-file commit "
                         "vs one atomic rename per file, median of interleaved rounds", machine_info("cpu"),
                         setup, rows, commit_over_rename_per_file=round(ratio, 3))
    write_record(record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
