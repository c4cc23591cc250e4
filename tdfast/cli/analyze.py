"""``tdfast analyze spurious``: the paper's Table 2 protocol (GT clips zeroed) for one checkpoint."""
from __future__ import annotations

import argparse

from tdfast.cli.predict import BACKENDS


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="analyses of a trained checkpoint (spurious correlation)")
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    s = sub.add_parser(
        "spurious", help="evaluate with the ground-truth clips zeroed, next to the normal evaluation",
        description="Paper Table 2: every query is predicted on its video as is and with the features of "
                    "its ground-truth clips set to zero (attention mask unchanged, so the duration is "
                    "too). Reports R1@0.3/0.5/0.7, mIoU, mAP, highlight mAP/HIT@1 and the gIoU loss of "
                    "the top-1 window, for both. Lower scores with GT zeroed = less reliance on context.")
    s.add_argument("checkpoint", metavar="CKPT_DIR", help="checkpoint directory")
    s.add_argument("--ann", required=True, help="labelled annotation jsonl (e.g. QVHighlights val)")
    s.add_argument("--video-feats", required=True, nargs="+", metavar="DIR", help="video feature dir(s)")
    s.add_argument("--text-feats", required=True, metavar="DIR", help="query feature dir")
    s.add_argument("--out", help="write the report JSON here")
    s.add_argument("--backend", default="eager", choices=BACKENDS, metavar="BACKEND",
                   help="Retriever backend: %(choices)s (default eager)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tdfast.retrieval.retriever import Retriever
    from tdfast.eval import save_json
    from tdfast.experiments.spurious import format_report, spurious_analysis

    retriever = Retriever.from_pretrained(args.checkpoint, backend=args.backend, device=args.device)
    report = spurious_analysis(retriever, args.ann, args.video_feats, args.text_feats)
    report = {"checkpoint": str(args.checkpoint), "backend": args.backend, **report}
    print(format_report(report))
    if args.out:
        save_json(report, args.out)
    return 0
