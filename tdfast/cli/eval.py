"""``tdfast eval``: score a predictions jsonl against annotations, official QVHighlights layout."""
from __future__ import annotations

import argparse
import sys

from tdfast.presets import DEFAULT_PROTOCOL, PROTOCOLS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score predictions (official QVHighlights metrics, or Charades-STA/TACoS)",
        description="Prints the metrics JSON (indent 4, as the official standalone_eval); "
        "with --out the whole JSON goes to that file and only its 'brief' part is printed.",
    )
    p.add_argument("--submission", required=True, help="predictions jsonl (qid, pred_relevant_windows, "
                   "pred_saliency_scores)")
    p.add_argument("--gt", required=True, help="annotations jsonl (qid, relevant_windows, ...)")
    p.add_argument("--out", help="write the metrics JSON here (then only the brief metrics are printed)")
    p.add_argument("--mode", choices=sorted(PROTOCOLS), default=DEFAULT_PROTOCOL,
                   help="qvhighlights: mAP/R1 by length + highlight metrics; "
                   "charades: R1/R5@{0.3,0.5,0.7} and mIoU (also for TACoS)")
    p.add_argument("--allow-partial", action="store_true",
                   help="score only the qids present in both files (default: they must match)")
    p.add_argument("--verbose", action="store_true", help="progress and timings on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tdfast.eval import dumps, eval_charades, eval_submission, load_jsonl, save_json

    from tdfast.cli.paths import check_out_file

    check_out_file("--out", args.out)
    submission = load_jsonl(args.submission)
    ground_truth = load_jsonl(args.gt)
    match_number = not args.allow_partial
    if args.mode == "charades":
        metrics = eval_charades(submission, ground_truth, match_number=match_number)
    else:
        metrics = eval_submission(submission, ground_truth, verbose=args.verbose, match_number=match_number)
    if args.out:
        save_json(metrics, args.out)
        print(dumps({"brief": metrics["brief"]}))  # the ~150-line rest is in the file
        print(f"all metrics: {args.out}", file=sys.stderr)
    else:
        print(dumps(metrics))
    return 0
