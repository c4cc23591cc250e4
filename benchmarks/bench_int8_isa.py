"""The int8 goals on the instruction set this process sees: accuracy and batch invariance.

    python benchmarks/bench_int8_isa.py --ckpt CKPT [--data DIR] --out benchmarks/results/int8_<ckpt>_<isa>.json
    qemu-x86_64 -cpu Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm \\
        $(which python) benchmarks/bench_int8_isa.py --ckpt CKPT [--data DIR] --against NATIVE.npz --out ...

For a checkpoint and a val set (``--data``: a dataset dir in the QVHighlights formats, e.g. a
demo's ``data/``; default: the synthetic val set of ``tdfast bench --int8``), with the
``onnxruntime`` (fp32) and ``onnxruntime-int8`` Retrievers:

- top-1 agreement and the val-metric change of int8 against fp32 (``tdfast.benchmarks.int8``);
- batch invariance: each of the first 32 val pairs alone against the same pair inside one
  call of those 32 (mixed lengths): same top-1, largest change of scores and saliency;
- ``--per-tensor FILE``: the same measurement of the int8 graph tdfast made before the
  row-wise scheme (``quantize_dynamic``: one activation scale per call, 8-bit, same keep
  list), made at FILE if absent: the "before" numbers;
- ``--against``: the largest difference of this run's int8 raw outputs from another run's
  (``--save``), e.g. native AVX-512 VNNI against AVX2 under qemu.

The record's ``machine.isa`` says which kernels ONNX Runtime ran and whether they were
emulated. Exports are made (and cached in the checkpoint) by a native run first: under qemu
the export itself would take an hour; ``--pairs N`` (the first N val queries) sizes an
emulated run of a large model. Speed is ``tdfast bench --int8`` (native only).
"""
from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace
import tempfile
import time
from pathlib import Path

import numpy as np

from tdfast import Retriever
from tdfast.benchmarks.int8 import dataset_at, int8_agreement, int8_metric_change, val_pairs
from tdfast.benchmarks.machine import machine_info
from tdfast.benchmarks.matrix import synthetic_dataset
from tdfast.benchmarks.record import make_record, write_record
from tdfast.errors import InputError
from tdfast.export import OrtRunner, read_metadata
from tdfast.export.verify import foreground_prob
from tdfast.model.checkpoint import load_config
from tdfast.retrieval.backends import ArrayRunner

GOALS = {"top1_agreement": (">=", 0.95), "MR-full-mAP_loss": ("<=", 0.5), "alone_vs_32_max_change": ("<=", 1e-3),
         "alone_vs_32_top1_same": (">=", 1.0)}


PER_TENSOR = "per-tensor-dynamic (quantize_dynamic, before issue 24)"


def per_tensor_graph(ckpt: Path, path: Path) -> Path:
    """The int8 graph of tdfast before the row-wise scheme, at ``path`` (made if absent):
    ``quantize_dynamic`` (u8 activations, one scale per call; per-channel s8 weights), the
    same layers kept fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tdfast.export import ensure_export
    from tdfast.export.quantize import INT8_KEEP_FP32, nodes_of_modules

    if not path.is_file():
        src = ensure_export(ckpt, "onnx")
        keep = nodes_of_modules(onnx.load(str(src), load_external_data=False), INT8_KEEP_FP32)
        quantize_dynamic(str(src), str(path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=keep)
    return path


def batch_invariance(r: Retriever, videos: list[np.ndarray], queries: list[np.ndarray], n: int = 32) -> dict:
    """Pairs alone vs the same pairs in one call of ``n`` (``r.batch_size`` >= n)."""
    videos, queries = videos[:n], queries[:n]
    together, raw = r.predict(videos, queries, top_k=5), r.raw_outputs(videos, queries)
    same, change = 0, 0.0
    for i in range(len(videos)):
        alone = r.predict([videos[i]], [queries[i]], top_k=5)[0]
        alone_raw = r.raw_outputs([videos[i]], [queries[i]])[0]
        same += int(foreground_prob(alone_raw["pred_logits"]).argmax() == foreground_prob(raw[i]["pred_logits"]).argmax())
        change = max(change, float(np.abs(alone.scores - together[i].scores).max()),
                     float(np.abs(alone.saliency - together[i].saliency).max()))
    return {"alone_vs_32_pairs": len(videos), "alone_vs_32_top1_same": round(same / len(videos), 4),
            "alone_vs_32_max_change": change}


def first_pairs(dataset, n: int, work: Path) -> SimpleNamespace:
    """``dataset`` with only the first ``n`` queries of its val file (the rest of it as is)."""
    from tdfast.atomic import atomic_write_bytes

    if n < 1:
        raise InputError(f"--pairs: expected a positive integer, got {n}")
    lines = [x for x in Path(dataset.val).read_text().splitlines() if x.strip()][:n]
    val = work / "val_first.jsonl"
    atomic_write_bytes(val, ("\n".join(lines) + "\n").encode())
    return SimpleNamespace(val=val, video_dirs=dataset.video_dirs, text_dir=dataset.text_dir)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--data", type=Path, help="dataset dir (default: the bench's synthetic val set, in a temp dir)")
    p.add_argument("--save", type=Path, help="write this run's raw int8 outputs here (.npz)")
    p.add_argument("--against", type=Path, help="compare with another run's --save file")
    p.add_argument("--per-tensor", type=Path, metavar="FILE",
                   help="measure the earlier per-tensor dynamic int8 graph at FILE (made there if absent)")
    p.add_argument("--pairs", type=int, help="only the first N val queries (default all): an emulated run's size")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    config = load_config(a.ckpt)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tdfast-int8-isa-") as tmp:
        ds = dataset_at(a.data) if a.data else synthetic_dataset(config, Path(tmp) / "data", 200, 60)
        if a.pairs is not None:
            ds = first_pairs(ds, a.pairs, Path(tmp))
        fp32 = Retriever.from_pretrained(a.ckpt, backend="onnxruntime")
        int8 = Retriever.from_pretrained(a.ckpt, backend="onnxruntime-int8", batch_size=32)
        meta = read_metadata(a.ckpt / "model.int8.onnx")
        scheme, keep = meta["int8_scheme"], meta["int8_keep_fp32"].split(",")
        if a.per_tensor:
            int8.runner = ArrayRunner("onnxruntime-int8", OrtRunner(per_tensor_graph(a.ckpt, a.per_tensor), threads=1,
                                                                     check=False), static_shapes=False)
            scheme = PER_TENSOR
        videos, queries = val_pairs(ds, config)
        row = {"backend": "onnxruntime-int8", "int8_scheme": scheme, "int8_keep_fp32": keep,
               **int8_agreement(fp32, int8, videos, queries), **int8_metric_change(fp32, int8, ds, config),
               **batch_invariance(int8, videos, queries)}
        raw = int8.raw_outputs(videos, queries)
    arrays = {f"{i}/{k}": v for i, x in enumerate(raw) for k, v in x.items()}
    if a.save:
        np.savez(a.save, **arrays)
    if a.against:
        other = dict(np.load(a.against))
        row["max_abs_vs_other_run"] = {k: max(float(np.abs(arrays[n] - other[n]).max()) for n in arrays
                                              if n.endswith("/" + k)) for k in raw[0]}
        row["other_run"] = a.against.name
    goals = [{"goal": name, "value": row[name], "op": op, "target": target,
              "met": bool(row[name] >= target if op == ">=" else row[name] <= target)}
             for name, (op, target) in GOALS.items()]
    machine = machine_info("cpu")
    setup = {"ckpt": str(a.ckpt), "data": str(a.data) if a.data else "synthetic val set of tdfast bench --int8",
             "val_pairs": len(videos), "threads": 1, "seconds": round(time.perf_counter() - start, 1),
             "command": " ".join(["python", "benchmarks/bench_int8_isa.py", *(argv or sys.argv[1:])])}
    write_record(make_record("int8", __doc__.split("\n\n")[0], machine, setup, [row], goals=goals), a.out)
    isa = machine["isa"]
    print(f"{isa['int8_kernels']}{' (emulated)' if isa['emulated'] else ''}: " + ", ".join(
        f"{g['goal']} {g['value']:.4g} ({'met' if g['met'] else 'MISSED'})" for g in goals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
