"""How the int8 variant was chosen: the quantization scheme, and which modules stay fp32.

    python benchmarks/bench_int8_choice.py --ckpt CKPT --variants schemes --out benchmarks/results/int8_schemes_<isa>.json
    python benchmarks/bench_int8_choice.py --ckpt CKPT --variants keep --out benchmarks/results/int8_choice_cpu.json

For a checkpoint (and the synthetic val pairs ``tdfast bench --int8`` uses, or ``--data``):
every variant's mean deviation from fp32 ONNX Runtime on the val pairs (max
foreground-probability change per pair, saliency, spans), its top-1 agreement, how far a
pair moves between alone and inside a call of 16 (``batch_change``: largest change of
foreground probability or saliency), and its p50 latency at B = 1 and B = 32 (interleaved
rounds, one ONNX Runtime thread). The record's ``machine.isa`` says which int8 kernels ran
(run it under ``qemu-x86_64 -cpu Haswell`` for AVX2: accuracy only, its times are emulated).

- ``schemes`` (``INT8_KEEP_FP32`` kept fp32 in each): per-tensor dynamic
  (``quantize_dynamic``, tdfast's scheme before the row-wise one), the same with
  ``reduce_range`` (7-bit weights: ONNX Runtime's remedy for int16 saturation), and
  row-wise scales (``tdfast.export.int8_rows``) with 7-bit activations, 7-bit weights
  (tdfast), or 8 bits for both (exact only with VNNI).
- ``keep``: the row-wise scheme on all linear layers, all but one module group (the group
  kept fp32), ``tdfast``'s choice (``INT8_KEEP_FP32``), and static QDQ (calibrated on 32
  train pairs) of the same layers.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch

from tdfast.retrieval.batching import pad_items
from tdfast.benchmarks.int8 import dataset_at, val_pairs
from tdfast.benchmarks.machine import machine_info
from tdfast.benchmarks.matrix import make_pairs, synthetic_dataset
from tdfast.benchmarks.record import make_record, write_record
from tdfast.benchmarks.timing import interleaved_rounds
from tdfast.model.checkpoint import load_config
from tdfast.export import ensure_export
from tdfast.export.ort import make_session
from tdfast.export.int8_rows import ACT_LEVELS, WEIGHT_LEVELS, rowwise_matmuls
from tdfast.export.quantize import INT8_HEADS, INT8_KEEP_FP32, nodes_of_modules
from tdfast.export.verify import foreground_prob

GROUPS = {"input_proj": ("video_proj", "text_proj"), "td_layers": ("td_layers",),
          "encoder": ("encoder_layers",), "decoder": ("decoder",),
          "heads": INT8_HEADS}


def padded(videos: list[np.ndarray], queries: list[np.ndarray], L: int, M: int) -> dict[str, np.ndarray]:
    """An ONNX feed of the pairs, padded to L clips and M tokens as the Retriever pads them."""
    cpu = torch.device("cpu")
    video, video_mask = pad_items([torch.from_numpy(v) for v in videos], L, len(videos), torch.float32, cpu, False)
    query, query_mask = pad_items([torch.from_numpy(q) for q in queries], M, len(queries), torch.float32, cpu, False)
    return {"video": video.numpy(), "video_mask": video_mask.numpy(), "query": query.numpy(),
            "query_mask": query_mask.numpy()}


def make_variants(src: Path, work: Path, calib: list[dict[str, np.ndarray]], what: str) -> dict[str, Path]:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    proto = onnx.load(str(src))
    keep_nodes = nodes_of_modules(proto, INT8_KEEP_FP32)
    common = {"per_channel": True, "weight_type": QuantType.QInt8, "op_types_to_quantize": ["MatMul", "Gemm"]}
    out: dict[str, Path] = {}

    def rows(name: str, mods: tuple[str, ...], act: int = ACT_LEVELS, weight: int = WEIGHT_LEVELS) -> None:
        out[name] = work / f"{len(out)}.onnx"
        p = onnx.load(str(src))
        rowwise_matmuls(p, set(nodes_of_modules(p, mods)), act_levels=act, weight_levels=weight)
        onnx.save(p, str(out[name]))

    if what == "schemes":
        for name, extra in (("per-tensor dynamic (before)", {}), ("per-tensor dynamic, reduce_range", {"reduce_range": True})):
            out[name] = work / f"{len(out)}.onnx"
            quantize_dynamic(str(src), str(out[name]), nodes_to_exclude=keep_nodes, **common, **extra)
        rows("rows a7/w8", INT8_KEEP_FP32, act=63, weight=127)
        rows("rows a8/w7 (tdfast)", INT8_KEEP_FP32)
        rows("rows a8/w8 (exact with VNNI only)", INT8_KEEP_FP32, act=127, weight=127)
        return out
    keep = {"all int8": ()} | {f"{g} fp32": mods for g, mods in GROUPS.items()}
    keep["decoder + heads fp32"] = GROUPS["decoder"] + INT8_HEADS
    keep["tdfast (decoder query path + heads fp32)"] = INT8_KEEP_FP32
    for name, mods in keep.items():
        rows(name, mods)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    out["tdfast, static QDQ"] = work / "static.onnx"
    quantize_static(str(src), str(out["tdfast, static QDQ"]), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, nodes_to_exclude=keep_nodes, **common)
    return out


def batch_change(session, names: list[str], feed: dict[str, np.ndarray], lengths: list[tuple[int, int]]) -> float:
    """Largest change of foreground probability or real-clip saliency of a pair between ``feed``
    (a padded call) and the pair alone, unpadded (``lengths``: its clips and tokens)."""
    both = dict(zip(names, session.run(None, feed)))
    worst = 0.0
    for i, (lv, lq) in enumerate(lengths):
        alone = {k: v[i:i + 1, :lv] if k.startswith("video") else v[i:i + 1, :lq] for k, v in feed.items()}
        one = dict(zip(names, session.run(None, alone)))
        worst = max(worst, float(np.abs(foreground_prob(one["pred_logits"]) - foreground_prob(both["pred_logits"][i:i + 1])).max()),
                    float(np.abs(one["saliency_scores"] - both["saliency_scores"][i:i + 1, :lv]).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--data", type=Path, help="dataset dir in the QVHighlights formats (default: the bench's "
                   "synthetic val set, in a temp dir)")
    p.add_argument("--variants", choices=("schemes", "keep"), default="schemes")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_* warn on the root logger
    config = load_config(a.ckpt)
    with tempfile.TemporaryDirectory(prefix="tdfast-int8-") as tmp:
        ds = dataset_at(a.data) if a.data else synthetic_dataset(config, Path(tmp) / "data", 200, 60)
        videos, queries = val_pairs(ds, config)
        L, M = config.max_video_len, config.max_query_len
        train_v, train_q = make_pairs(config, 32, L, M, seed=1)
        calib = [padded(train_v[i:i + 8], train_q[i:i + 8], L, M) for i in range(0, 32, 8)]
        src = Path(ensure_export(a.ckpt, "onnx"))
        paths = {"fp32": src, **make_variants(src, Path(tmp), calib, a.variants)}
        sessions = {n: make_session(p, "cpu", threads=1) for n, p in paths.items()}
        names = [o.name for o in sessions["fp32"].get_outputs()]
        feeds = [padded(videos[i:i + 16], queries[i:i + 16], L, M) for i in range(0, len(videos), 16)]
        outs = {n: {k: np.concatenate([o[names.index(k)] for o in (s.run(None, f) for f in feeds)])
                    for k in names} for n, s in sessions.items()}
        lengths = [(len(v), len(q)) for v, q in zip(videos[:16], queries[:16])]
        moved = {n: batch_change(s, names, feeds[0], lengths) for n, s in sessions.items()}
        timing = {b: padded(*make_pairs(config, b, L, M), L, M) for b in (1, 32)}
        ms: dict[str, dict[int, list[float]]] = defaultdict(dict)
        for b, feed in timing.items():
            rounds = a.rounds if b == 1 else max(a.rounds // 3, 2)
            calls = {n: (lambda s=s: s.run(None, feed)) for n, s in sessions.items()}
            seconds, _ = interleaved_rounds(calls, rounds, lambda: None)
            for n, t in seconds.items():
                ms[n][b] = [1e3 * x for x in t]
    ref = outs["fp32"]
    pa = foreground_prob(ref["pred_logits"])
    rows = []
    for n, o in outs.items():
        pb = foreground_prob(o["pred_logits"])
        rows.append({"variant": n, "top1_agreement": round(float((pb.argmax(-1) == pa.argmax(-1)).mean()), 4),
                     "fg_prob_delta": float(np.abs(pb - pa).max(-1).mean()),
                     "saliency_delta": float(np.abs(o["saliency_scores"] - ref["saliency_scores"]).mean()),
                     "span_delta": float(np.abs(o["pred_spans"] - ref["pred_spans"]).mean()),
                     "batch_change": moved[n],
                     **{f"p50_ms_B{b}": round(float(np.median(ms[n][b])), 3) for b in timing}})
        print(" | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in rows[-1].values()))
    top2 = np.sort(pa, -1)[:, -2:]
    if a.out:
        setup = {"ckpt": str(a.ckpt), "data": str(a.data or "synthetic"), "variants": a.variants,
                 "val_pairs": len(videos), "threads": 1, "rounds": a.rounds,
                 "fp32_top1_margin_median": float(np.median(top2[:, 1] - top2[:, 0])), "groups": GROUPS}
        write_record(make_record("int8", __doc__.split("\n\n")[0], machine_info("cpu"), setup, rows), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
