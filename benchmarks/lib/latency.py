"""``latency_table``: Retriever.predict latency per backend and batch size, side by side.

What one row measures: the wall-clock of ``Retriever.predict(videos[:B], queries[:B],
top_k)`` on host inputs (validation, bucketing, padding, the backend call, copy back,
postprocess: what a user's call costs), and inside it the backend call alone
(``model_*``, synchronised on CUDA). Warm-up calls (the first of which pays for
compilation / CUDA-graph capture, reported as ``first_call_s``) are excluded; the
timed calls are interleaved across backends round by round.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tdfast.benchmarks.timing import (PeakMemory, TimedRunner, interleaved_rounds, summarize_ms,
                                 synchronizer)

COLUMNS = [  # (header, row key, format)
    ("backend", "backend", "{}"), ("dtype", "dtype", "{}"), ("L", "video_len", "{}"),
    ("B", "batch", "{}"), ("p50 ms", "p50_ms", "{:.3f}"), ("p90 ms", "p90_ms", "{:.3f}"),
    ("p99 ms", "p99_ms", "{:.3f}"), ("model p50 ms", "model_p50_ms", "{:.3f}"),
    ("pairs/s", "pairs_per_s", "{:.1f}"), ("peak MiB", "peak_mem_mb", "{:.0f}"),
    ("first call s", "first_call_s", "{:.2f}"), ("n", "n", "{}"),
]


def _take(items: Sequence[Any], n: int) -> list[Any]:
    """The first ``n`` items, cycling when there are fewer."""
    if not items:
        raise ValueError("latency_table: expected at least one (video, query) pair, got none")
    return [items[i % len(items)] for i in range(n)]


def latency_table(retriever_by_backend: Mapping[str, Any], videos: Sequence[Any],
                  queries: Sequence[Any], batch_sizes: Sequence[int], repeats: int | Mapping[int, int],
                  warmup: int = 3, top_k: int = 5, budget_s: float | None = None,
                  progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Time ``predict`` for every backend at every batch size.

    ``retriever_by_backend``: name -> ``tdfast.Retriever`` (all on one device).
    ``videos`` / ``queries``: pairs (``videos[i]`` [L_i, video_dim], ``queries[i]``
    [M_i, text_dim]); batch B uses the first B pairs (cycled if there are fewer).
    ``repeats``: timed rounds per batch size (an int, or {B: rounds}); ``warmup``: calls
    per backend and batch size before timing (>= 1). ``budget_s``: a limit on each batch
    size's timed rounds (all backends together; fewer rounds than ``repeats`` when reached).
    ``progress``: called with one line per batch size as it finishes.

    Returns one dict per (backend, B): ``backend``, ``dtype``, ``device``, ``batch``,
    ``model_batch`` (most pairs per backend call: the Retriever's ``batch_size``),
    ``video_len`` / ``query_len`` (longest pair), ``n`` (timed calls), ``p50_ms``,
    ``p90_ms``, ``p99_ms``, ``min_ms``, ``mean_ms`` (predict, ms), ``model_p50_ms``,
    ``model_p90_ms``, ``model_p99_ms`` (backend call, ms), ``pairs_per_s`` (B / p50),
    ``peak_mem_mb`` + ``mem_kind`` (see ``PeakMemory``), ``first_call_s`` and
    ``warmup_s`` (seconds of the first and the other warm-up calls).
    """
    if not retriever_by_backend:
        raise ValueError("latency_table: expected at least one retriever, got none")
    if warmup < 1:
        raise ValueError(f"latency_table: warmup must be >= 1 (the first call compiles), got {warmup}")
    first = next(iter(retriever_by_backend.values()))
    sync = synchronizer(first.device)
    memory = PeakMemory(first.device)
    rows = []
    wrapped = {name: TimedRunner(r.runner, sync) for name, r in retriever_by_backend.items()}
    originals = {name: r.runner for name, r in retriever_by_backend.items()}
    try:
        for name, r in retriever_by_backend.items():
            r.runner = wrapped[name]
        for b in batch_sizes:
            rounds = repeats[b] if isinstance(repeats, Mapping) else repeats
            done = _time_batch(retriever_by_backend, wrapped, _take(videos, b), _take(queries, b), rounds,
                               warmup, top_k, budget_s, sync, memory)
            rows += done
            if progress is not None:
                progress(f"  B={b} L={done[0]['video_len']}: " + ", ".join(
                    f"{r['backend']} p50 {r['p50_ms']:.3g} ms (n={r['n']})" for r in done))
    finally:
        for name, r in retriever_by_backend.items():
            r.runner = originals[name]
    return rows


def _time_batch(retriever_by_backend: Mapping[str, Any], wrapped: Mapping[str, TimedRunner], v: list, q: list,
                rounds: int, warmup: int, top_k: int, budget_s: float | None, sync: Callable[[], None],
                memory: PeakMemory) -> list[dict[str, Any]]:
    """One batch of pairs (v, q) through every backend: warm-up, then interleaved timed rounds
    -> one row per backend (keys as in ``latency_table``)."""
    warm = {}  # name -> (first call s, other warm-up calls s)
    for name, r in retriever_by_backend.items():
        w, _ = interleaved_rounds({name: lambda r=r: r.predict(v, q, top_k=top_k)}, warmup, sync)
        warm[name] = (w[name][0], sum(w[name][1:]))
    model_s: dict[str, list[float]] = {name: [] for name in retriever_by_backend}

    def call(name: str, r: Any) -> None:
        wrapped[name].seconds.clear()
        r.predict(v, q, top_k=top_k)
        model_s[name].append(sum(wrapped[name].seconds))

    calls = {name: (lambda n=name, r=r: call(n, r)) for name, r in retriever_by_backend.items()}
    seconds, peak = interleaved_rounds(calls, rounds, sync, memory, budget_s)
    rows = []
    for name, r in retriever_by_backend.items():
        s, m = summarize_ms(seconds[name]), summarize_ms(model_s[name])
        rows.append({
            "backend": name, "dtype": str(r.dtype).removeprefix("torch."), "device": str(r.device),
            "batch": len(v), "model_batch": min(len(v), r.batch_size),
            "video_len": max(len(x) for x in v), "query_len": max(len(x) for x in q),
            **s, "model_p50_ms": m["p50_ms"], "model_p90_ms": m["p90_ms"],
            "model_p99_ms": m["p99_ms"], "pairs_per_s": len(v) / (s["p50_ms"] / 1e3),
            "peak_mem_mb": peak[name], "mem_kind": memory.kind,
            "first_call_s": warm[name][0], "warmup_s": warm[name][1]})
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of ``latency_table`` (or a record's ``rows``) as an aligned text table; a row
    with ``skipped`` (a backend that could not run) shows its reason instead of numbers."""
    header = [h for h, _, _ in COLUMNS]
    lines = []
    for row in rows:
        if row.get("skipped"):
            lines.append([str(row.get("backend", "?")), str(row.get("dtype", "")),
                          f"skipped: {row['skipped']}"])
            continue
        lines.append([fmt.format(row[key]) if row.get(key) is not None else "-"
                      for _, key, fmt in COLUMNS])
    widths = [max([len(header[i])] + [len(ln[i]) for ln in lines if len(ln) == len(header) or i < 2])
              for i in range(len(header))]  # a skipped row's reason spans the numeric columns
    out = ["  ".join(h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for ln in lines:
        if len(ln) != len(header):  # skipped: backend and dtype columns, then the reason
            out.append("  ".join([ln[0].ljust(widths[0]), ln[1].ljust(widths[1]), ln[2]]))
        else:
            out.append("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(ln, widths))))
    return "\n".join(s.rstrip() for s in out)
