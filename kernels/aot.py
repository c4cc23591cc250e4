"""Ahead-of-time compilation of the fused TD kernels for a GPU that is not here.

    python -m tdfast.kernels.aot --arch 90 [--arch 80] [--full] --json OUT

compiles, with Triton's AOT path (``triton.compile(ASTSource(...), target=GPUTarget(...))``,
no GPU or driver needed), both kernels of one TD layer at qvhighlights widths (D = 256,
8 heads) and writes per kernel and configuration what ptxas reports (a fixed schema, read by
outside checks):

    {"triton": version, "configs": [{"arch", "name", "dtype", "L", "M", "compiled", "error",
                                     "registers", "spill_bytes", "shared_bytes",
                                     "wgmma_serialized"}]}

* default: the launcher's default configuration on that arch with the installed Triton
  (``default_config(..., arch)``; the 16-bit tiles differ per Triton version: measured, or
  probed first for a version never measured, ``tile_probe``)
  for B in {1, 32, 256} (deduplicated) per dtype (float32, tf32, float16, bfloat16),
  L in {75, 150}, M = 32;
* ``--full``: every configuration the launcher can choose on that arch (each tile set
  ``default_config`` returns over B = 1 .. 4096, L in {75, 150, 16}, M in {16, 32, 64}), with
  and without the dynamics branch.

registers / spill bytes / wgmma serialization come from running the bundled ptxas with ``-v``
on the PTX Triton produced (the C7512 note says wgmma was serialized); shared bytes are the
dynamic shared memory Triton allocates plus ptxas's static ``smem`` (``compile_aot``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch

from tdfast.kernels.compile_aot import DIM, HEADS, SHARED_LIMIT, compile_jobs, launch_jobs, layer_weights
from tdfast.kernels.launch_config import LaunchConfig, default_config, next_pow2
from tdfast.kernels.tile_probe import ensure_fit16

__all__ = ["DTYPES", "SHARED_LIMIT", "main", "plan", "planned_rows", "run"]

DTYPES = {"float32": (torch.float32, False), "tf32": (torch.float32, True),
          "float16": (torch.float16, False), "bfloat16": (torch.bfloat16, False)}
DEFAULT_BATCHES = (1, 32, 256)
FULL_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def plan(arch: int, full: bool, dtypes: list[str], video_lens: list[int], text_lens: list[int],
         triton_version: str | None = None):
    """(dtype name, L, M, use_tdem, batch, config) to compile for sm_<arch>, without duplicates,
    with the tiles the launcher picks under Triton ``triton_version`` (default: the installed one).

    Default: the launcher's choice on sm_<arch> for B in DEFAULT_BATCHES at each (L, M).
    ``--full``: every choice it makes there over B = 1 .. 4096, L in {75, 150, 16} and M in {32, 16, 64} (its choices
    depend only on B * L, B * M and the M tile), each listed once under the first (L, M) that
    selects it, with and without TDEM.
    """
    out, seen = [], set()
    for name in dtypes:
        dtype, tf32 = DTYPES[name]
        if full:
            grid = itertools.product((75, 150, 16), (32, 16, 64), FULL_BATCHES, (True, False))
        else:
            grid = itertools.product(video_lens, text_lens, DEFAULT_BATCHES, (True,))
        for video_len, text_len, batch, use_tdem in grid:
            cfg = default_config(dtype, batch, video_len, text_len, DIM, HEADS, tf32, arch, triton_version)
            key = (name, cfg.name, cfg.kv_name, max(16, next_pow2(text_len)), use_tdem) if full \
                else (name, video_len, text_len, cfg.name, cfg.kv_name)
            if key not in seen:
                seen.add(key)
                out.append((name, video_len, text_len, use_tdem, batch, cfg))
    return out


def labels(cfg: LaunchConfig, use_tdem: bool) -> dict[str, str]:
    """The record's ``name`` of each kernel of one launch: ``{"text_kv": "text_kv:<tiles>",
    "rows": "rows:<tiles>"}``, with ``:no_tdem`` appended without the dynamics branch."""
    tail = "" if use_tdem else ":no_tdem"
    return {"text_kv": f"text_kv:{cfg.kv_name}{tail}", "rows": f"rows:{cfg.name}{tail}"}


def planned_rows(arch: int, full: bool, dtypes: list[str] | None = None,
                 video_lens: list[int] | None = None, text_lens: list[int] | None = None,
                 triton_version: str | None = None) -> list[dict]:
    """The identity (arch, name, dtype, L, M) of every row ``run`` records for sm_<arch> under
    Triton ``triton_version`` (default: the installed one), in order, without compiling: what
    a record made with that version for this arch must hold to be current."""
    rows, listed = [], set()
    for name, video_len, text_len, use_tdem, _, cfg in plan(arch, full, dtypes or list(DTYPES),
                                                             video_lens or [75, 150], text_lens or [32],
                                                             triton_version):
        for label in labels(cfg, use_tdem).values():
            if (label, name, video_len, text_len) not in listed:
                listed.add((label, name, video_len, text_len))
                rows.append({"arch": arch, "name": label, "dtype": name, "L": video_len, "M": text_len})
    return rows


def run(archs: list[int], full: bool, dtypes: list[str], video_lens: list[int], text_lens: list[int],
        jobs: int | None = None, log=print) -> dict:
    """Compile everything ``plan`` lists for each arch; returns the record (schema above).

    Identical compilations (same kernel, constexprs and argument hints: e.g. the text kernel
    under two row tiles, or L = 75 and 150) run once; ``jobs`` worker processes (default:
    the CPU count) compile in parallel.
    """
    import triton

    if any(DTYPES[name][0] in (torch.float16, torch.bfloat16) for name in dtypes):
        for arch in archs:  # an unmeasured Triton's 16-bit tiles are probed first, as the launcher would
            ensure_fit16(arch, log)
    rows, unique, listed = [], {}, set()
    weights = {}
    for arch in archs:
        for name, video_len, text_len, use_tdem, batch, cfg in plan(arch, full, dtypes, video_lens,
                                                                    text_lens):
            dtype, tf32 = DTYPES[name]
            w = weights.setdefault((dtype, use_tdem), layer_weights(dtype, use_tdem))
            for kind, (key, job) in launch_jobs(w, batch, video_len, text_len, cfg, tf32, arch).items():
                unique.setdefault(key, job)
                label = labels(cfg, use_tdem)[kind]
                if (arch, label, name, video_len, text_len) in listed:
                    continue  # the same kernel under another pairing of the two kernels' tiles
                listed.add((arch, label, name, video_len, text_len))
                rows.append(({"arch": arch, "name": label, "dtype": name, "L": video_len,
                              "M": text_len}, key))
    reports = dict(zip(unique, compile_jobs(list(unique.values()), jobs)))
    configs = []
    for row, key in rows:
        rep = reports[key]
        ok = "error" not in rep
        row.update(compiled=ok, error=rep.get("error"),
                   **{k: rep[k] if ok else None
                      for k in ("registers", "spill_bytes", "shared_bytes", "wgmma_serialized")})
        configs.append(row)
        log(json.dumps({k: v for k, v in row.items() if v is not None}))
    return {"triton": triton.__version__, "configs": configs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tdfast.kernels.aot", description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, action="append", help="SM version, e.g. 90 or 80 (repeatable)")
    p.add_argument("--full", action="store_true", help="every configuration the launcher can choose")
    p.add_argument("--json", type=Path, required=True, help="write the record here")
    p.add_argument("--dtype", action="append", choices=sorted(DTYPES),
                   help="restrict to these dtypes (repeatable; default all four)")
    p.add_argument("--video-len", type=int, action="append", help="L (repeatable; default 75 and 150)")
    p.add_argument("--text-len", type=int, action="append", help="M (repeatable; default 32)")
    p.add_argument("--jobs", type=int, help="parallel compiler processes (default: CPU count)")
    args = p.parse_args(argv)
    record = run(args.arch or [90], args.full, args.dtype or list(DTYPES), args.video_len or [75, 150],
                 args.text_len or [32], args.jobs, log=lambda s: print(s, file=sys.stderr, flush=True))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    bad = [c for c in record["configs"] if not c["compiled"]]
    print(f"wrote {args.json}: {len(record['configs'])} kernels compiled for sm_{args.arch or [90]}, "
          f"{len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
