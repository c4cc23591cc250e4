"""What a benchmark record needs about the machine: description, GEMM peak, model FLOPs."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def _git() -> dict:
    def run(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()

    try:
        return {"commit": run("git", "rev-parse", "HEAD"),
                "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def machine_info(device: str) -> dict:
    """CPU/GPU model, cores, threads, library versions, date, git commit, load average."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": _git(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "versions": {m: _version(m) for m in ("torch", "numpy", "onnxruntime", "onnx", "triton", "tensorrt")},
        "loadavg_start": os.getloadavg(),
    }
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                       "sm_count": p.multi_processor_count, "cuda": torch.version.cuda}
    return info


def gemm_peak(device: str, dtype: torch.dtype, sizes=(1024, 2048, 4096), repeats: int = 5) -> dict:
    """Best GFLOP/s of ``a @ b`` over square sizes (each: best of ``repeats`` after a warm-up).
    fp32 on CUDA runs with TF32 off, so it is the true fp32 peak."""
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    per_size = {}
    try:
        for n in sizes:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            a @ b
            sync()
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                a @ b
                sync()
                best = min(best, time.perf_counter() - start)
            per_size[n] = 2 * n**3 / best / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return {"gflops": max(per_size.values()), "per_size": {str(k): round(v, 1) for k, v in per_size.items()},
            "dtype": str(dtype).replace("torch.", "")}


def flops_per_pair(model: torch.nn.Module, video_len: int, query_len: int) -> float:
    """FLOPs of one forward pass for one pair (torch's FlopCounterMode: matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    c = model.config
    p = next(model.parameters())
    args = (torch.randn(1, video_len, c.video_dim, device=p.device, dtype=p.dtype),
            torch.ones(1, video_len, dtype=torch.bool, device=p.device),
            torch.randn(1, query_len, c.text_dim, device=p.device, dtype=p.dtype),
            torch.ones(1, query_len, dtype=torch.bool, device=p.device))
    # Grad mode on: the counter's module tracker breaks under no_grad in this torch version.
    with FlopCounterMode(display=False) as counter:
        model.eval()(*args)
    return float(counter.get_total_flops())


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list."""
    return float(np.percentile(np.asarray(sorted_values), q))
