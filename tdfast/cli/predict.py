"""``tdfast predict``: a checkpoint + annotation jsonl + features -> prediction jsonl for ``tdfast eval``."""
from __future__ import annotations

import argparse
import json
import sys
import time

from tdfast.cli.choices import TableKeys
from tdfast.defaults import TOP_K
from tdfast.errors import InputError
from tdfast.threads import add_threads_argument, apply_threads

BACKENDS = TableKeys("tdfast.retrieval.backends", "BACKENDS")
IMAGE_BACKENDS = TableKeys("tdfast.video.image_backends", "IMAGE_BACKENDS")
DTYPES = TableKeys("tdfast.devices", "DTYPES")
POSTPROCESS = TableKeys("tdfast.retrieval.postprocess", "POSTPROCESS")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict moments and saliency for every query of an annotation file",
        description="Writes the QVHighlights prediction jsonl (qid, query, vid, "
        "pred_relevant_windows [[st, ed, score], ...] in seconds, pred_saliency_scores), "
        "ready for `tdfast eval --submission`. Features are read and normalised as in training.",
    )
    p.add_argument("checkpoint", metavar="CKPT_DIR", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--ann", help="annotation jsonl (qid, query, vid, duration; labels optional)")
    p.add_argument("--video-feats", nargs="+", metavar="DIR",
                   help="video feature dir(s) with <vid>.npz; several are concatenated in this order")
    p.add_argument("--text-feats", metavar="DIR", help="query feature dir with qid<qid>.npz")
    p.add_argument("--out", help="prediction jsonl to write (atomically)")
    raw = p.add_argument_group("raw video (instead of --ann/--video-feats/--text-feats; prints jsonl)")
    raw.add_argument("--video", nargs="+", metavar="FILE", help="video file(s); every query runs on every video")
    raw.add_argument("--query", action="append", metavar="TEXT", help="a sentence (repeatable)")
    raw.add_argument("--clip-weights", metavar="FILE",
                     help="local CLIP ViT-B/32 weights (the ViT-B-32.pt that clip.load caches)")
    raw.add_argument("--clip-backend", default="eager", choices=IMAGE_BACKENDS, metavar="BACKEND",
                     help="CLIP image tower backend: %(choices)s (default eager)")
    raw.add_argument("--clip-cache", metavar="DIR",
                     help="keep the image tower's ONNX export here between runs (onnxruntime backends)")
    p.add_argument("--backend", default="eager", choices=BACKENDS, metavar="BACKEND",
                   help="Retriever backend: %(choices)s (default eager)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES, metavar="DTYPE",
                   help="fp32, fp16 or bf16 (float32, float16, bfloat16 also accepted; default fp32)")
    p.add_argument("--top-k", type=int, default=TOP_K, help=f"moments kept per query (default {TOP_K})")
    p.add_argument("--nms-iou", type=float, default=None,
                   help="temporal NMS IoU threshold (default: no NMS, as the official evaluation)")
    p.add_argument("--postprocess", default="none", choices=POSTPROCESS, metavar="NAME",
                   help="none (default: spans as predicted, 4 decimals) or official: what the "
                   "official QD-DETR / TD-DETR inference.py writes (spans clipped to [0, 150] s and "
                   "rounded to multiples of 2 s; the published numbers were computed on such files)")
    p.add_argument("--model-batch", "--batch-size", dest="model_batch", type=int, default=None,
                   help="most pairs per model call (the Retriever's batch_size; default: sized to the "
                        "CPU cache, 8 for the qvhighlights preset; 32 on CUDA; --batch-size: old spelling)")
    p.add_argument("--sliding-window", action="store_true",
                   help="process videos longer than max_video_len clips in overlapping windows "
                   "(default: truncate them to max_video_len, as training does)")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tdfast.retrieval.retriever import Retriever
    from tdfast.retrieval.files import predict_jsonl

    from tdfast.cli.paths import check_out_file

    if args.video:
        return run_video(args)
    missing = [f"--{n.replace('_', '-')}" for n in ("ann", "video_feats", "text_feats", "out")
               if not getattr(args, n)]
    if missing:
        raise InputError(f"predict: {', '.join(missing)} required (or --video FILE --query TEXT "
                         f"--clip-weights FILE for raw videos)")
    check_out_file("--out", args.out)  # before the model loads (an export can take minutes)
    apply_threads(args.threads)
    start = time.perf_counter()
    retriever = Retriever.from_pretrained(args.checkpoint, backend=args.backend, device=args.device,
                                          dtype=args.dtype, batch_size=args.model_batch)
    summary = predict_jsonl(retriever, args.ann, args.video_feats, args.text_feats, args.out,
                            top_k=args.top_k, nms_iou=args.nms_iou, sliding_window=args.sliding_window,
                            postprocess=args.postprocess)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["backend"] = args.backend
    print(json.dumps(summary), file=sys.stderr)
    return 0


def run_video(args: argparse.Namespace) -> int:
    """Raw video: one jsonl line per (video, query) on stdout (qid = its index; the
    QVHighlights prediction format, spans in seconds, one saliency score per clip)."""
    from tdfast.retrieval.retriever import Retriever
    from tdfast.video import ClipEncoder

    if not args.query or not args.clip_weights:
        raise InputError("predict --video: --query TEXT (at least one) and --clip-weights FILE are required")
    apply_threads(args.threads)
    encoder = ClipEncoder(args.clip_weights, clip_backend=args.clip_backend, cache_dir=args.clip_cache)
    retriever = Retriever.from_pretrained(args.checkpoint, backend=args.backend, device=args.device,
                                          dtype=args.dtype, batch_size=args.model_batch)
    pairs = [(v, q) for v in args.video for q in args.query]
    preds = retriever.predict_video_files([v for v, _ in pairs], [q for _, q in pairs], encoder,
                                          top_k=args.top_k, nms_iou=args.nms_iou,
                                          sliding_window=args.sliding_window)
    for qid, ((video, query), p) in enumerate(zip(pairs, preds)):
        print(json.dumps(p.to_submission(qid, query, video)))
    return 0
