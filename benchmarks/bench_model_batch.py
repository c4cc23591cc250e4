"""How many pairs per model call on CPU: the measurement behind ``tdfast.retrieval.retriever.default_batch_size``.

    python benchmarks/bench_model_batch.py --ckpt CKPT --out benchmarks/results/model_batch_cpu.json

One ``predict`` of B pairs (L = 75 clips, M = 32 tokens) per backend, with the Retriever's
``batch_size`` (pairs per model call) swept over ``--model-batches``: B = 32 with batch 32 is one
call, with batch 8 it is four. All variants of all backends are timed in interleaved rounds
(``tdfast.benchmarks.latency_table``, one thread), next to the GEMM peak of the same run, so each row
has its share of the peak and its time relative to one whole call of B.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from tdfast import Retriever
from tdfast.benchmarks.goals import add_roofline
from tdfast.benchmarks.latency import latency_table
from tdfast.benchmarks.machine import machine_info
from tdfast.benchmarks.matrix import make_pairs
from tdfast.benchmarks.record import make_record, write_record
from tdfast.benchmarks.roofline import flops_per_pair, gemm_peak
from tdfast.model.tddetr import TDDETR


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--backends", default="eager,compile,onnxruntime,onnxruntime-int8")
    p.add_argument("--model-batches", default="1,2,4,8,16,32")
    p.add_argument("--batch", type=int, default=32, help="pairs per predict call (default 32)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = TDDETR.from_pretrained(a.ckpt)
    L, M = model.config.max_video_len, model.config.max_query_len
    peak = gemm_peak("cpu", torch.float32)["gflops"]
    retrievers = {}
    for name in a.backends.split(","):
        base = Retriever.from_pretrained(a.ckpt, backend=name)
        for mb in (int(x) for x in a.model_batches.split(",")):
            retrievers[f"{name}/{mb}"] = r = copy.copy(base)  # shares the backend, own batch_size
            r.batch_size = mb
    videos, queries = make_pairs(model.config, a.batch, L, M, seed=L)
    rows = latency_table(retrievers, videos, queries, [a.batch], a.rounds, warmup=2,
                         progress=lambda s: print(s, file=sys.stderr, flush=True))
    peak = max(peak, gemm_peak("cpu", torch.float32)["gflops"])
    add_roofline(rows, {L: flops_per_pair(model, L, M)}, {"float32": peak})
    whole = {r["backend"].split("/")[0]: r["p50_ms"] for r in rows if r["model_batch"] == a.batch}
    out = []
    for r in rows:
        name = r["backend"].split("/")[0]
        out.append({"backend": name, "model_batch": r["model_batch"], "batch": r["batch"],
                    "p50_ms": round(r["p50_ms"], 2), "ms_per_pair": round(r["p50_ms"] / r["batch"], 3),
                    "pct_of_peak": round(r["pct_of_peak"], 1),
                    "vs_one_call": round(r["p50_ms"] / whole[name], 3) if name in whole else None,
                    "n": r["n"]})
        print(" | ".join(str(v) for v in out[-1].values()))
    if a.out:
        setup = {"ckpt": str(a.ckpt), "video_len": L, "query_len": M, "threads": 1, "rounds": a.rounds,
                 "model": model.config.to_dict()}
        write_record(make_record("model_batch", __doc__.split("\n\n")[0], machine_info("cpu"), setup, out,
                                 gemm_peak_gflops=peak), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
