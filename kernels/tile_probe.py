"""Find, once per Triton version and GPU arch, the largest 16-bit tiles the rows kernel compiles
without spilling registers, and cache the verdict.

A new Triton can generate heavier code for the same tiles (3.9 compiles 64 rows on sm_90 in
237 registers; 3.8 needs more than 255 and spills 1.8 KB a thread), so a table fitted on one
version cannot promise anything about the next. ``launch_config.MEASURED_FIT16`` holds the
versions measured with the AOT tool; for any other version ``ensure_fit16`` compiles the rows
kernel ahead of time (no GPU needed: Triton's bundled ptxas) under each budget of
``launch_config.FIT16_CANDIDATES``, largest first, and keeps the first whose every
configuration compiles with no spill, within shared memory and (sm_90) with asynchronous wgmma.
The verdict and the ptxas reports behind it go to ``tile_cache`` (``~/.cache/tdfast``).

Called by the fused backend before its first 16-bit launch on a GPU (``kernels/fuse.py``) and by
``python -m tdfast.kernels.aot``; a launch before any probe (or under the CPU interpreter) uses
the safest budget. Only bf16 is compiled: fp16 tiles generate the same code up to the element
type (the committed ``--full`` records agree register for register).
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Callable

import torch

from tdfast.kernels.compile_aot import DIM, HEADS, SHARED_LIMIT, compile_jobs, launch_jobs, layer_weights
from tdfast.kernels.launch_config import (FIT16_CANDIDATES, SAFEST_FIT16, Fit16, default_config,
                                          installed_triton, known_fit16)
from tdfast.kernels.tile_cache import cache_path, store_fit16

PROBE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
PROBE_LENGTHS = ((16, 75, 150), (32, 64))  # L, M: every row tile and both key tiles are reached


def rows_jobs(fit: Fit16, arch: int) -> list[tuple[str, str, tuple]]:
    """(config name, dedup key, compile job) of every bf16 rows-kernel configuration the launcher
    picks on sm_<arch> under ``fit`` (with the dynamics branch, the heavier kernel), largest
    row tile first: the one most likely to spill fails the probe soonest."""
    weights = layer_weights(torch.bfloat16, True)
    seen: dict[str, tuple[int, str, tuple]] = {}
    for batch, video_len, text_len in itertools.product(PROBE_BATCHES, *PROBE_LENGTHS):
        cfg = default_config(torch.bfloat16, batch, video_len, text_len, DIM, HEADS, False, arch, fit=fit)
        key, job = launch_jobs(weights, batch, video_len, text_len, cfg, False, arch)["rows"]
        seen.setdefault(key, (cfg.block_l, f"{cfg.name} M={text_len}", job))
    ordered = sorted(seen.items(), key=lambda item: -item[1][0])
    return [(name, key, job) for key, (_, name, job) in ordered]


def is_clean(report: dict, arch: int) -> bool:
    """Compiled, no spill, within the arch's shared memory, and wgmma left asynchronous."""
    return ("error" not in report and report["spill_bytes"] == 0
            and report["shared_bytes"] <= SHARED_LIMIT.get(arch, min(SHARED_LIMIT.values()))
            and not report["wgmma_serialized"])


def probe_fit16(arch: int, workers: int | None = None,
                log: Callable[[str], None] = lambda s: None) -> tuple[int, list[dict]]:
    """(index into FIT16_CANDIDATES of the largest clean budget, evidence) for the installed Triton
    on sm_<arch>; evidence lists every compiled configuration's ptxas report. Compiles in
    rounds of ``workers`` jobs and abandons a budget at its first unclean configuration. The last
    candidate is returned even if it spills (nothing smaller exists; its evidence says so)."""
    evidence = []
    for index, fit in enumerate(FIT16_CANDIDATES):
        jobs = rows_jobs(fit, arch)
        step = max(1, workers or 2)
        clean = True
        for start in range(0, len(jobs), step):
            chunk = jobs[start:start + step]
            for (name, _, _), report in zip(chunk, compile_jobs([job for _, _, job in chunk], workers)):
                row = {"candidate": index, "name": name, "clean": is_clean(report, arch),
                       **{k: report.get(k) for k in ("registers", "spill_bytes", "shared_bytes",
                                                     "wgmma_serialized", "error")}}
                evidence.append(row)
                log(f"  sm_{arch} budget {index} rows:{name}: {row['registers']} registers, "
                    f"{row['spill_bytes']} B spilled" + ("" if row["clean"] else "  -> not clean"))
                clean = clean and row["clean"]
            if not clean:
                break
        if clean:
            return index, evidence
    return len(FIT16_CANDIDATES) - 1, evidence


def ensure_fit16(arch: int, log: Callable[[str], None] | None = None) -> Fit16:
    """The 16-bit tile budget the launcher will use on sm_<arch> with the installed Triton,
    probing (and caching) it first if this version was never measured or probed for this arch."""
    version = installed_triton()
    if version is None:
        return SAFEST_FIT16
    known = known_fit16(version, arch)
    if known is not None:
        return FIT16_CANDIDATES[known]
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    say(f"tdfast: no measured 16-bit kernel tiles for Triton {version} on sm_{arch}; compiling the "
        f"candidates ahead of time to find the largest that does not spill (once; about a minute; "
        f"cached in {cache_path()})")
    index, evidence = probe_fit16(arch, log=say)
    store_fit16(version, arch, index, evidence)
    say(f"tdfast: Triton {version} sm_{arch}: 16-bit rows tiles up to "
        f"{FIT16_CANDIDATES[index].block_ls[-1]} rows")
    return FIT16_CANDIDATES[index]
