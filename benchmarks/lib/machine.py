"""What a benchmark record says about the machine it ran on, and waiting for it to be quiet.

One place for: device / CPU / GPU names, core counts, library versions, git commit,
date and load average. Every benchmark (``tdfast bench``, benchmarks/*.py, the
trainer's throughput benchmark) calls ``machine_info`` so the records compare.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
VERSIONED = ("torch", "triton", "onnxruntime", "onnx", "numpy", "tensorrt")
SIMD_FLAGS = ("avx", "amx", "fma")  # /proc/cpuinfo flag prefixes that decide GEMM speed


def _cpuinfo(key: str) -> str | None:
    """First value of ``key`` in /proc/cpuinfo (None off Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    flags = (_cpuinfo("flags") or "").split()
    return sorted(f for f in set(flags) if f.startswith(SIMD_FLAGS))


def runtime_isa() -> dict:
    """The x86 SIMD features this process sees (CPUID, read by numpy at import), which pick
    ONNX Runtime's and PyTorch's kernels; under ``qemu-x86_64 -cpu Haswell`` they are the
    emulated CPU's while /proc/cpuinfo still shows the host's. ``int8_kernels``: the family of
    ONNX Runtime's u8 x s8 GEMM kernels ("avx512-vnni", "avx512", "avx2", "other"; numpy does
    not report AVX-VNNI without AVX-512, so such a CPU reads "avx2");
    ``emulated``: the host has AVX-512 but this process does not see it."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as found
    seen = sorted(k for k, on in found.items() if on and k.startswith(("AVX", "FMA", "AMX")))
    kernels = ("avx512-vnni" if "AVX512VNNI" in seen else "avx512" if "AVX512BW" in seen
               else "avx2" if "AVX2" in seen else "other")
    return {"features": seen, "int8_kernels": kernels,
            "emulated": "avx512f" in cpu_flags() and "AVX512F" not in seen}


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask; a container's share)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages, rounded to 0.01."""
    return [round(x, 2) for x in os.getloadavg()]


def git_state(repo: Path = REPO) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the code runs from."""
    def run(*cmd: str) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=repo, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": run("git", "rev-parse", "HEAD"),
                "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that decide speed (None: not installed)."""
    out = {}
    for name in VERSIONED:
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def gpu_info(device: str | torch.device) -> dict | None:
    """Name, memory, SM count and CUDA version of ``device``; None for a CPU device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    p = torch.cuda.get_device_properties(device)
    return {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
            "sm_count": p.multi_processor_count, "cuda": torch.version.cuda}


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Everything a record needs to say where it was measured.

    Keys: ``device`` (the benchmarked device's name: GPU name or CPU model), ``device_type``
    ("cpu"/"cuda"), ``cpu_model``, ``cpu_flags`` (the host's), ``isa`` (what this process sees:
    ``runtime_isa``), ``cpu_count``, ``cores`` (usable),
    ``torch_threads``, ``gpu`` (dict or None), ``versions`` (torch, triton, onnxruntime, ...),
    ``python``, ``platform``, ``git`` (commit, dirty), ``date`` (UTC ISO-8601),
    ``loadavg`` ([1, 5, 15] minutes, at the call).
    """
    gpu = gpu_info(device)
    return {
        "device": gpu["name"] if gpu else cpu_model(),
        "device_type": torch.device(device).type,
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "isa": runtime_isa(),
        "cpu_count": os.cpu_count(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "versions": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_state(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": load_average(),
    }


def wait_for_quiet(max_load: float, timeout_s: float, log: Callable[[str], None] = print,
                   poll_s: float = 15.0) -> float:
    """Wait up to ``timeout_s`` seconds until the 1-minute load average is below ``max_load``;
    returns the load seen last. On a shared box other jobs' threads stall ours at every
    intra-op barrier, so timings taken under load mostly measure the neighbours."""
    start = time.perf_counter()
    load = os.getloadavg()[0]
    while load >= max_load and time.perf_counter() - start < timeout_s:
        log(f"load {load:.2f} >= {max_load}: waiting for a quieter machine")
        time.sleep(poll_s)
        load = os.getloadavg()[0]
    return round(load, 2)
