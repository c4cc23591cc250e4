"""Which layers the int8 variant keeps fp32: each candidate's val loss, how much a last-bit change moves it, and its speed.

    python benchmarks/bench_int8_keep.py --ckpt CKPT --out benchmarks/results/int8_keep_<ckpt>_<isa>.json

Why: on the bench's trained checkpoint the MR-full-mAP loss of int8 was 0.42 natively and
0.52 under emulated AVX2, with the same integer sums on both. The fp32 parts of the graph
round differently per instruction set, and a last-bit change that moves an activation across
a quantization step moves the loss. This measures that directly, on one machine.

For each candidate (the row-wise scheme of ``tdfast.export.int8_rows`` with a keep list, or a
graph variant) on the synthetic val set of ``tdfast bench --int8`` (or ``--data``):

- ``losses``: fp32 minus int8 val MR-full-mAP (points), first on the val features as they
  are, then on ``--draws`` copies perturbed in their last bits (every video and query feature
  times ``1 + k * 2**-23``, ``k`` drawn from {-1, 0, 1}: 1 to 2 units in its last place; one more
  draw at ``2**-22``); fp32 is
  scored on the same perturbed features. ``loss_mean`` / ``loss_max`` over them;
- ``top1_agreement`` on the unperturbed features;
- ``speedup_b32``: p50 of fp32 ONNX Runtime over p50 of the candidate, one call of 32 pairs of
  full length (random features), ``--rounds`` interleaved rounds, one thread.

Candidates: ``before`` (the keep list before this measurement: decoder query path and heads),
``+ ca_k_pos`` (also the decoder's projections of the clip positions), ``+ ca_k_*`` (positions and
contents of the cross-attention keys), ``+ ca_k_*, ca_v`` (all of the decoder's projections of the
video memory), and ``before, power-of-two row scale`` (the activation scale rounded up to a
power of two, so a last-bit change of a row's maximum cannot change the scale).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from tdfast import Retriever
from tdfast.benchmarks.int8 import dataset_at, int8_agreement, val_metrics, val_pairs
from tdfast.benchmarks.machine import machine_info
from tdfast.benchmarks.matrix import synthetic_dataset
from tdfast.benchmarks.record import make_record, write_record
from tdfast.benchmarks.timing import interleaved_rounds
from tdfast.data import FeatureStore, load_annotations
from tdfast.eval import load_jsonl
from tdfast.export import OrtRunner, ensure_export
from tdfast.export.int8_rows import rowwise_matmuls
from tdfast.export.ort import make_session
from tdfast.export.quantize import INT8_DECODER_QUERY_PATH, INT8_HEADS, nodes_of_modules
from tdfast.model.checkpoint import load_config
from tdfast.retrieval.backends import ArrayRunner

BEFORE = INT8_DECODER_QUERY_PATH + INT8_HEADS
CANDIDATES = {"before": BEFORE, "+ ca_k_pos": BEFORE + ("decoder.layers.*.ca_k_pos",),
              "+ ca_k_*": BEFORE + ("decoder.layers.*.ca_k_*",),
              "+ ca_k_*, ca_v": BEFORE + ("decoder.layers.*.ca_k_*", "decoder.layers.*.ca_v"),
              "before, power-of-two row scale": BEFORE}
ULP = 2.0 ** -23  # float32's relative last bit (machine epsilon)


def power_of_two_scales(proto) -> int:
    """Round every row scale ``amax / 127`` of a rewritten graph up to a power of two:
    ``2 ** ceil(log2(s))``, so q = x / s is exact and a last-bit change of the row maximum moves
    no scale unless it crosses a power of two. Returns how many scales were changed."""
    from onnx import helper, numpy_helper

    nodes, changed = [], 0
    for n in proto.graph.node:
        if n.op_type == "Mul" and n.output[0].endswith("/int8/scale"):
            y, raw = n.output[0], n.output[0] + "_raw"
            nodes += [helper.make_node("Mul", list(n.input), [raw]),
                      helper.make_node("Log", [raw], [y + "_ln"]),
                      helper.make_node("Mul", [y + "_ln", "pow2/inv_ln2"], [y + "_log2"]),
                      helper.make_node("Ceil", [y + "_log2"], [y + "_exp"]),
                      helper.make_node("Pow", ["pow2/two", y + "_exp"], [y])]
            changed += 1
        else:
            nodes.append(n)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend([numpy_helper.from_array(np.array(1 / np.log(2), np.float32), "pow2/inv_ln2"),
                                    numpy_helper.from_array(np.array(2.0, np.float32), "pow2/two")])
    return changed


def candidate(src: Path, keep: tuple[str, ...], pow2: bool, out: Path) -> tuple[Path, int]:
    """The int8 graph of ``src`` keeping ``keep`` fp32 (at ``out``) and how many MatMuls it quantizes."""
    proto = onnx.load(str(src))
    n = rowwise_matmuls(proto, set(nodes_of_modules(proto, keep)))
    if pow2:
        power_of_two_scales(proto)
    onnx.save(proto, str(out))
    return out, n


def perturbed(run, scale: float, seed: int):
    """``run`` on inputs times ``1 + scale * k``, k in {-1, 0, 1} per element (none for scale 0)."""
    if not scale:
        return run

    def f(video, video_mask, query, query_mask):
        rng = np.random.default_rng(seed)
        video, query = (np.asarray(x, np.float32) for x in (video, query))
        video = video * (1 + scale * rng.integers(-1, 2, video.shape)).astype(np.float32)
        query = query * (1 + scale * rng.integers(-1, 2, query.shape)).astype(np.float32)
        return run(video, video_mask, query, query_mask)
    return f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--data", type=Path, help="dataset dir (default: the bench's synthetic val set, in a temp dir)")
    p.add_argument("--draws", type=int, default=4, help="last-bit perturbed copies of the val set (default 4)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(a.ckpt)
    draws = [(0.0, 0)] + [(ULP, s + 1) for s in range(a.draws - 1)] + [(2 * ULP, a.draws)]
    start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="tdfast-int8-keep-") as tmp:
        ds = dataset_at(a.data) if a.data else synthetic_dataset(config, Path(tmp) / "data", 200, 60)
        anns, gt = load_annotations(ds.val), load_jsonl(ds.val)
        store = FeatureStore(ds.video_dirs, ds.text_dir, config, cache_size=len(anns))
        videos, queries = val_pairs(ds, config)
        src = Path(ensure_export(a.ckpt, "onnx"))

        def retriever(path: Path, scale: float = 0.0, seed: int = 0) -> Retriever:
            r = Retriever.from_pretrained(a.ckpt, backend="onnxruntime", batch_size=32)
            r.runner = ArrayRunner("onnxruntime", perturbed(OrtRunner(path, threads=1, check=False), scale, seed),
                                   static_shapes=False)
            return r

        def mr_map(path: Path, scale: float, seed: int) -> float:
            return val_metrics(retriever(path, scale, seed), anns, store, gt, config.num_queries)["MR-full-mAP"]

        fp32 = {d: mr_map(src, *d) for d in draws}
        rng = np.random.default_rng(0)
        L, M = config.max_video_len, config.max_query_len
        feed = {"video": rng.standard_normal((32, L, config.video_dim)).astype(np.float32),
                "video_mask": np.ones((32, L), bool),
                "query": rng.standard_normal((32, M, config.text_dim)).astype(np.float32),
                "query_mask": np.ones((32, M), bool)}
        sessions = {"fp32": make_session(src, "cpu", threads=1)}
        for i, (name, keep) in enumerate(CANDIDATES.items()):
            path, n = candidate(src, keep, "power-of-two" in name, Path(tmp) / f"{i}.onnx")
            losses = [round(fp32[d] - mr_map(path, *d), 4) for d in draws]
            agree = int8_agreement(retriever(src), retriever(path), videos, queries)
            rows.append({"candidate": name, "keep_fp32": list(keep), "quantized_matmuls": n, "losses": losses,
                         "loss_mean": round(float(np.mean(losses)), 4), "loss_max": max(losses),
                         "top1_agreement": agree["top1_agreement"]})
            sessions[name] = make_session(path, "cpu", threads=1)
            print(rows[-1], flush=True)
        for s in sessions.values():
            s.run(None, feed)  # warm-up
        seconds, _ = interleaved_rounds({k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()},
                                        a.rounds, sync=lambda: None)
    p50 = {k: float(np.median(v)) for k, v in seconds.items()}
    for row in rows:
        row["p50_ms_b32"] = round(1e3 * p50[row["candidate"]], 1)
        row["speedup_b32"] = round(p50["fp32"] / p50[row["candidate"]], 3)
    setup = {"ckpt": str(a.ckpt), "data": str(a.data) if a.data else "synthetic val set of tdfast bench --int8",
             "val_pairs": len(videos), "draws": [{"scale": s, "seed": k} for s, k in draws],
             "fp32_MR-full-mAP": [fp32[d] for d in draws], "fp32_p50_ms_b32": round(1e3 * p50["fp32"], 1),
             "threads": 1, "rounds": a.rounds, "seconds": round(time.perf_counter() - start, 1),
             "command": " ".join(["python", "benchmarks/bench_int8_keep.py", *(argv or sys.argv[1:])])}
    write_record(make_record("int8", __doc__.split("\n\n")[0], machine_info("cpu"), setup, rows), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
