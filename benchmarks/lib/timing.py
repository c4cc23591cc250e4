"""Timing: host clock around synchronised calls, interleaved rounds, percentiles, peak memory.

Rules every tdfast benchmark follows: warm-up calls are run and discarded before the
clock starts; on CUDA the device is synchronised before the clock is read (the call
really finished); candidates are interleaved round by round (round r calls every
candidate once), so a noisy neighbour or a clock-frequency change slows them alike.
"""
from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated between the
    closest ranks (numpy's default): [1, 2, 3, 4] -> p50 = 2.5, p90 = 3.7."""
    if not values:
        raise ValueError("percentile: expected at least one value, got none")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    """Seconds of repeated calls -> ``n``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``min_ms``,
    ``mean_ms`` (milliseconds)."""
    ms = [s * 1e3 for s in seconds]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "min_ms": min(ms), "mean_ms": statistics.fmean(ms)}


def synchronizer(device: torch.device | str) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class PeakMemory:
    """Peak memory of the calls between ``reset()`` and ``read_mb()``, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the caching pool).
    CPU: the process's peak resident set (VmHWM), reset through /proc/self/clear_refs
    (Linux >= 4.0); it includes everything the process holds (weights, other backends'
    sessions), so compare backends by their differences. Without clear_refs the
    never-reset ``ru_maxrss`` is reported and ``kind`` says so.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "cpu_peak_rss" if self._clear_rss() else "cpu_peak_rss_since_start"

    @staticmethod
    def _clear_rss() -> bool:
        try:
            CLEAR_REFS.write_text("5")  # 5: reset the peak RSS to the current RSS
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.kind == "cuda_max_allocated":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind == "cpu_peak_rss":
            self._clear_rss()

    def read_mb(self) -> float:
        if self.kind == "cuda_max_allocated":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.kind == "cpu_peak_rss":
            for line in STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def interleaved_rounds(calls: Mapping[str, Callable[[], object]], rounds: int,
                       sync: Callable[[], None], memory: PeakMemory | None = None,
                       budget_s: float | None = None
                       ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Call each of ``calls`` once per round for ``rounds`` rounds (warm-up is the
    caller's job), or fewer: no round starts once ``budget_s`` seconds have passed (at
    least one round runs). Returns per name the seconds of each call (host clock,
    ``sync()`` before reading it) and the peak memory (MiB) over its calls ({} without
    ``memory``)."""
    if rounds < 1:
        raise ValueError(f"rounds: expected >= 1, got {rounds}")
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    peak: dict[str, float] = {}
    began = time.perf_counter()
    for k in range(rounds):
        if k and budget_s is not None and time.perf_counter() - began >= budget_s:
            break
        for name, fn in calls.items():
            if memory is not None:
                memory.reset()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            seconds[name].append(time.perf_counter() - start)
            if memory is not None:
                peak[name] = max(peak.get(name, 0.0), memory.read_mb())
    return seconds, peak


class TimedRunner:
    """Wraps a backend runner (``tdfast.retrieval.backends.Runner``) and records the seconds of each
    call, synchronised on CUDA: the backend's share of a ``Retriever.predict``."""

    def __init__(self, runner, sync: Callable[[], None]) -> None:
        self.runner, self.sync, self.seconds = runner, sync, []
        self.name, self.static_shapes = runner.name, runner.static_shapes
        self.input_dtype, self.max_batch = runner.input_dtype, getattr(runner, "max_batch", None)

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.runner(*args)
        self.sync()
        self.seconds.append(time.perf_counter() - start)
        return out


def warm_up(fn: Callable[[], object], seconds: float = 0.5, calls: int = 3) -> None:
    """Call ``fn`` at least ``calls`` times and for at least ``seconds`` (the first calls in a
    process pay for thread-pool start-up, oneDNN primitive creation, autotuning)."""
    t_end, n = time.perf_counter() + seconds, 0
    while n < calls or time.perf_counter() < t_end:
        fn()
        n += 1


def gpu_timers(fn: Callable[[], object], graphs: bool = True) -> dict[str, float | str]:
    """CUDA: Triton's ``do_bench`` median in us (L2 flushed per call) and, with ``graphs``,
    ``do_bench_cudagraph``'s (``graph_error`` instead where ``fn`` cannot be captured)."""
    import triton.testing

    out: dict[str, float | str] = {
        "us": triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3}
    if graphs:
        try:
            out["graph_us"] = triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3
        except Exception as e:  # a call that cannot be captured still has its plain number
            out["graph_error"] = f"{type(e).__name__}: {e}"[:300]
    return out


def rounds_for(call_s: float, budget_s: float, lo: int = 5, hi: int = 200) -> int:
    """Rounds that fit ``budget_s`` when one round takes ``call_s`` seconds, clamped to
    [lo, hi] (p99 needs many calls where they are cheap; a few suffice where they are long)."""
    if call_s <= 0 or not math.isfinite(call_s):
        return hi
    return int(min(hi, max(lo, budget_s // call_s)))
