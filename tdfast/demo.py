"""``tdfast demo``: the whole life of a model on an embedded synthetic dataset, in one to two and a half minutes on 2 CPU cores.

Steps (each prints what it did): make a synthetic dataset in the QVHighlights formats
(``tdfast.data.synthetic``), train the tiny preset on it and score the model before and
after (``tdfast eval`` metrics on val), export the checkpoint to ONNX (verified against
eager on unseen shapes), retrieve moments for a batch of test queries with the
Retriever on every backend asked for (checking they agree with eager), score the
val predictions written by ``predict_jsonl``, and time ``Retriever.predict`` per
backend and batch size. Everything lands in one directory, summarised in
``demo_summary.json``.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tdfast.errors import BackendUnavailableError, InputError

MARKER = ".tdfast-demo"  # marks a directory this command made, so a re-run may replace it
# What the demo trains: the tiny preset with more steps per epoch (small batches, a higher
# learning rate), enough for the decoder to start localising moments within ~10 epochs.
TRAIN_OVERRIDES = ("batch_size=8", "lr=3e-3")
SHOWN_METRICS = ("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP", "HL-min-VeryGood-mAP",
                 "HL-min-VeryGood-Hit1")


@dataclass
class DemoOptions:
    """Knobs of the demo. ``quick`` shrinks everything for tests and smoke runs."""

    out_dir: Path = Path("tdfast-demo")
    epochs: int = 10
    num_train: int = 400
    num_val: int = 60
    seed: int = 0
    backends: tuple[str, ...] = ("eager", "onnxruntime")
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    repeats: int = 20
    progress: bool = True
    threads: int = 1  # PyTorch / ONNX Runtime CPU threads (see run_demo)

    @classmethod
    def quick(cls, **overrides: Any) -> "DemoOptions":
        return cls(**{"epochs": 2, "num_train": 48, "num_val": 16, "batch_sizes": (1, 4),
                      "repeats": 3, **overrides})

    def validate(self) -> None:
        for name in ("epochs", "num_train", "num_val", "repeats", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"--{name.replace('_', '-')}: expected a positive integer, got {value!r}")
        if not self.backends:
            raise InputError("--backends: expected at least one backend, got none")
        if not self.batch_sizes or any(b <= 0 for b in self.batch_sizes):
            raise InputError(f"--batch-sizes: expected positive batch sizes, got {list(self.batch_sizes)}")


@dataclass
class DemoResult:
    """What ``run_demo`` measured; also written as ``demo_summary.json``."""

    out_dir: str
    data: dict[str, Any]
    metrics_before: dict[str, float | None]
    metrics_after: dict[str, float | None]
    onnx: str
    parity: dict[str, dict[str, Any]]  # backend -> max abs diffs vs eager, top-1 agreement, or skip reason
    examples: list[dict[str, Any]]
    val_predictions: str
    val_metrics: dict[str, float | None]
    latency: list[dict[str, Any]] = field(default_factory=list)


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir``; replace it only if an earlier demo made it (never a user's dir)."""
    if out_dir.exists():
        if not (out_dir / MARKER).is_file():
            raise InputError(f"--out {str(out_dir)!r}: exists and was not made by tdfast demo; "
                             "pass a new directory")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / MARKER).write_text("made by tdfast demo; safe to delete\n")


def shown(metrics: dict | None) -> dict[str, float | None]:
    return {k: (metrics or {}).get(k) for k in SHOWN_METRICS}


def metrics_table(before: dict, after: dict) -> str:
    lines = [f"{'metric (val)':<22}{'untrained':>11}{'trained':>10}"]
    for k in SHOWN_METRICS:
        b, a = before.get(k), after.get(k)
        lines.append(f"{k:<22}{'-' if b is None else f'{b:.2f}':>11}{'-' if a is None else f'{a:.2f}':>10}")
    return "\n".join(lines)


def compare_backends(ckpt: Path, backends: tuple[str, ...], videos: list, queries: list,
                     log: Callable[[str], None]) -> tuple[dict, dict]:
    """Build a Retriever per backend and compare its predictions on one batch with eager's.

    Returns (retrievers that could run, parity per backend). Spans, scores and saliency
    are compared at top_k = num_queries, so the ranking of every moment counts.
    """
    from tdfast.retrieval.retriever import Retriever

    ref = Retriever.from_pretrained(ckpt, backend="eager")
    top_k = ref.config.num_queries
    expected = ref.predict(videos, queries, top_k=top_k)
    retrievers: dict[str, Any] = {"eager": ref} if "eager" in backends else {}
    parity: dict[str, dict[str, Any]] = {}
    for name in backends:
        if name == "eager":
            continue
        try:
            r = Retriever.from_pretrained(ckpt, backend=name)
            got = r.predict(videos, queries, top_k=top_k)
        except BackendUnavailableError as e:
            parity[name] = {"skipped": str(e)}
            log(f"  {name:<12} skipped: {e}")
            continue
        diff = {k: max(float(np.abs(getattr(g, k) - getattr(x, k)).max()) for g, x in zip(got, expected))
                for k in ("spans", "scores", "saliency")}
        same_top1 = sum(bool(np.allclose(g.spans[0], x.spans[0], atol=1e-3)) for g, x in zip(got, expected))
        parity[name] = {**{f"max_abs_{k}": v for k, v in diff.items()}, "top1_agree": same_top1,
                        "pairs": len(expected)}
        retrievers[name] = r
        log(f"  {name:<12} vs eager: max |diff| spans {diff['spans']:.2e} s, scores {diff['scores']:.2e}, "
            f"saliency {diff['saliency']:.2e}; same top-1 on {same_top1}/{len(expected)}")
    return retrievers, parity


def run_demo(options: DemoOptions, log: Callable[[str], None] = print) -> DemoResult:
    """Run every step; see the module docstring. Returns (and writes) the summary.

    PyTorch runs on ``options.threads`` threads (default 1): the tiny model's ops are too
    small to split, and on a busy 2-core machine two spinning threads made training and
    eager latency 10-100x slower (measured). The thread count is restored afterwards.
    """
    import torch

    options.validate()  # --threads 0 must be an InputError, not torch's RuntimeError
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        return _run_steps(options, log)
    finally:
        torch.set_num_threads(threads)


def _run_steps(options: DemoOptions, log: Callable[[str], None]) -> DemoResult:
    from tdfast.benchmarks import format_table, latency_table
    from tdfast.atomic import atomic_write_bytes
    from tdfast.data.annotations import load_annotations
    from tdfast.data.features import FeatureStore
    from tdfast.data.synthetic import make_synthetic_dataset
    from tdfast.export import ensure_export
    from tdfast.training import RunConfig, TrainData, TrainOptions, train

    options.validate()
    out = Path(options.out_dir)
    prepare_out_dir(out)

    log(f"[1/5] synthetic dataset -> {out / 'data'}")
    ds = make_synthetic_dataset(out / "data", seed=options.seed, num_train=options.num_train,
                                num_val=options.num_val, num_test=options.num_val, noise=0.3)
    counts = {split: len(load_annotations(path)) for split, path in
              (("train", ds.train), ("val", ds.val), ("test", ds.test))}
    log(f"  queries: {counts}; each query names a concept planted in a window of its video")

    log(f"[2/5] train the tiny preset for {options.epochs} epochs (--set {' '.join(TRAIN_OVERRIDES)})")
    run = RunConfig.from_name("tiny").override(list(TRAIN_OVERRIDES))
    ckpt = out / "checkpoint"
    result = train(run,
                   TrainData(ds.train, ds.val, ds.video_dirs, ds.text_dir),
                   TrainOptions(ckpt, epochs=options.epochs, seed=options.seed, progress=options.progress,
                                eval_before=True))
    before, after = shown(result.initial_metrics), shown(result.best_metrics)
    log(metrics_table(before, after))
    log(f"  best epoch {result.best_epoch} of {result.epochs}; checkpoint {ckpt}")

    log("[3/5] export to ONNX (verified against eager on shapes it was not traced with)")
    onnx_path = ensure_export(ckpt, "onnx", log=lambda s: log("  " + s.replace("\n", "\n  ")))
    log(f"  {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")

    log(f"[4/5] retrieve a batch of test queries with backends {', '.join(options.backends)}")
    tests = load_annotations(ds.test)
    store = FeatureStore(ds.video_dirs, ds.text_dir, run.model)
    videos = [store.video(a.vid) for a in tests]
    queries = [store.query(a.qid) for a in tests]
    retrievers, parity = compare_backends(ckpt, options.backends, videos, queries, log)
    first = next(iter(retrievers.values()))
    examples = retrieval_examples(first, tests[:3], videos[:3], queries[:3], log)
    val_preds, val_metrics = score_val(first, ds, out / "val_preds.jsonl", log)

    log(f"[5/5] latency of Retriever.predict (ms, {options.repeats} repeats, warm-up excluded, "
        "1 PyTorch thread)")
    rows = latency_table(retrievers, videos, queries, options.batch_sizes, options.repeats)
    log(format_table(rows))

    summary = DemoResult(out_dir=str(out), data=counts, metrics_before=before, metrics_after=after,
                         onnx=str(onnx_path), parity=parity, examples=examples,
                         val_predictions=str(val_preds), val_metrics=val_metrics, latency=rows)
    atomic_write_bytes(out / "demo_summary.json", json.dumps(asdict(summary), indent=2).encode("utf-8"))
    log(f"summary: {out / 'demo_summary.json'}")
    return summary


def retrieval_examples(retriever, anns, videos, queries, log: Callable[[str], None]) -> list[dict]:
    """The top-3 moments of a few test queries next to their ground truth (logged and returned)."""
    examples = []
    for a, p in zip(anns, retriever.predict(videos, queries, top_k=3)):
        examples.append({"query": a.query, "vid": a.vid, "gt": [list(w) for w in a.windows or ()],
                         "top3": [[round(float(s), 1), round(float(e), 1), round(float(c), 3)]
                                  for (s, e), c in zip(p.spans, p.scores)]})
        log(f"  {a.query!r} in {a.vid}: ground truth {examples[-1]['gt']} s; "
            f"top-3 [start, end, score] {examples[-1]['top3']}")
    return examples


def score_val(retriever, ds, out: Path, log: Callable[[str], None]) -> tuple[Path, dict]:
    """``tdfast predict`` + ``tdfast eval`` of the val split, as a user would run them."""
    from tdfast.eval import eval_submission, load_jsonl
    from tdfast.retrieval.files import predict_jsonl

    predict_jsonl(retriever, ds.val, ds.video_dirs, ds.text_dir, out, top_k=10)
    metrics = shown(eval_submission(load_jsonl(out), load_jsonl(ds.val))["brief"])
    log(f"  {out}: tdfast eval gives MR-full-mAP {metrics['MR-full-mAP']}, "
        f"HL-min-VeryGood-Hit1 {metrics['HL-min-VeryGood-Hit1']}")
    return out, metrics
