"""What the official submission post-processing changes in the metrics of a trained checkpoint.

    tdfast demo --out tdfast-demo            # a trained tiny checkpoint + its synthetic data
    python benchmarks/bench_postprocess.py --ckpt tdfast-demo/checkpoint --data tdfast-demo/data \
        --out benchmarks/results/postprocess_official_demo.json

Predicts the val split twice with ``predict_jsonl`` (eager, top 10): ``postprocess="none"``
(tdfast's spans, 4 decimals) and ``"official"`` (the official inference.py's
PostProcessorDETR: spans clipped to [0, 150] s and rounded to multiples of 2 s, float16
saliency), scores both with ``tdfast eval`` (the official QVHighlights metrics) and records
both ``brief`` blocks and their difference.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def main(argv=None) -> None:
    from tdfast import Retriever
    from tdfast.benchmarks.machine import machine_info
    from tdfast.benchmarks.record import make_record, write_record
    from tdfast.eval import eval_submission, load_jsonl
    from tdfast.retrieval.files import predict_jsonl

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True, help="folder with val.jsonl, video_feats/, text_feats/")
    ap.add_argument("--out", default="benchmarks/results/postprocess_official_demo.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = Path(args.data)
    retriever = Retriever.from_pretrained(args.ckpt)
    gt = load_jsonl(data / "val.jsonl")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("none", "official"):
            out = Path(tmp) / f"{name}.jsonl"
            predict_jsonl(retriever, data / "val.jsonl", [data / "video_feats"], data / "text_feats", out,
                          top_k=10, postprocess=name)
            rows.append({"postprocess": name, "queries": len(gt),
                         "brief": eval_submission(load_jsonl(out), gt)["brief"]})
    diff = {k: round(rows[1]["brief"][k] - rows[0]["brief"][k], 2)
            for k, v in rows[0]["brief"].items() if v is not None}
    for r in rows:
        print(r["postprocess"], {k: r["brief"][k] for k in ("MR-full-mAP", "MR-full-R1@0.5", "HL-min-VeryGood-mAP")})
    print("official - none:", diff)
    setup = {"ckpt": args.ckpt, "data": args.data, "backend": "eager", "top_k": 10,
             "command": " ".join([Path(sys.executable).name, *sys.argv])}
    record = make_record("postprocess", __doc__.split("\n")[0], machine_info(), setup, rows,
                         official_minus_none=diff)
    write_record(record, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
