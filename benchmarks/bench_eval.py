"""Evaluator speed on QVHighlights val (1550 queries, QD-DETR video predictions).

What is measured: ``eval_submission`` on already-loaded records (validation,
moment retrieval over 4 length ranges x 10 IoU thresholds, highlight AP /
Hit1 at 3 levels), and separately ``load_jsonl`` of both files. Wall clock,
one process, one thread of numpy work.

    python -m pytest benchmarks/bench_eval.py --benchmark-only   # pytest-benchmark
    python benchmarks/bench_eval.py [--repeats 20]               # plain median / min
Needs ../shared/qvhighlights (skips / exits otherwise).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tdfast.benchmarks import machine_info, summarize_ms
from tdfast.benchmarks.timing import interleaved_rounds, synchronizer
from tdfast.eval import eval_submission, load_jsonl

QVH = Path(__file__).resolve().parents[2] / "shared" / "qvhighlights"
GT = QVH / "annotations" / "highlight_val_release.jsonl"
PREDS = QVH / "peer_preds" / "QD-DETR" / "video_checkpoint" / "best_hl_val_preds.jsonl"
needs_data = pytest.mark.skipif(not GT.is_file(), reason="../shared/qvhighlights not present")


@needs_data
def test_bench_eval_submission(benchmark):
    submission, ground_truth = load_jsonl(PREDS), load_jsonl(GT)
    brief = benchmark(eval_submission, submission, ground_truth)["brief"]
    assert brief["MR-full-mAP"] == 41.24  # the official number on this file


@needs_data
def test_bench_load_jsonl(benchmark):
    benchmark(lambda: (load_jsonl(PREDS), load_jsonl(GT)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not GT.is_file():
        raise SystemExit(f"{GT} not found")
    sync = synchronizer("cpu")
    loaded, _ = interleaved_rounds({"load": lambda: (load_jsonl(PREDS), load_jsonl(GT))}, 1, sync)
    submission, ground_truth = load_jsonl(PREDS), load_jsonl(GT)
    eval_submission(submission, ground_truth)  # warm-up
    seconds, _ = interleaved_rounds({"eval": lambda: eval_submission(submission, ground_truth)},
                                    args.repeats, sync)
    t = summarize_ms(seconds["eval"])
    m = machine_info("cpu")
    print(f"machine: {m['cpu_model']}, {m['cores']} cores, python {m['python']}, load {m['loadavg']}")
    print(f"load_jsonl (both files, once): {1000 * loaded['load'][0]:.0f} ms")
    print(f"eval_submission, {len(submission)} queries, {args.repeats} runs: "
          f"p50 {t['p50_ms']:.0f} ms, p90 {t['p90_ms']:.0f} ms, min {t['min_ms']:.0f} ms")


if __name__ == "__main__":
    main()
