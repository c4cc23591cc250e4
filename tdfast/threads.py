"""CPU threads for the commands that compute (``--threads`` of train, predict, bench, demo).

The default is ``$OMP_NUM_THREADS`` when set (torchrun sets it per process), else the number
of *physical* cores this process may run on: a hyper-thread sibling shares its core's
matrix units, so it adds little to GEMMs and costs synchronisation. When fewer is faster
(shared machines, tiny models) is in docs/benchmarks.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from tdfast.errors import InputError


def physical_cores() -> int:
    """Distinct physical cores among the CPUs in this process's affinity mask (Linux), else
    the logical CPU count."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return max(len(cpus), 1)
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "processor" in fields and int(fields["processor"]) in cpus:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return max(len(cores), 1) if cores else max(len(cpus), 1)


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else physical_cores()


THREADS_HELP = ("CPU threads for PyTorch and ONNX Runtime (default: $OMP_NUM_THREADS if set, else the "
                "number of physical cores, {n} here; fewer can be faster on a shared machine: "
                "docs/benchmarks.md)")


def add_threads_argument(parser, help: str | None = None) -> None:
    """``--threads N`` with the default spelled out in --help (``help`` replaces the text)."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help=help or THREADS_HELP.format(n=default_threads()))


def apply_threads(threads: int | None, default: int | None = None) -> int:
    """Set PyTorch's intra-op threads (``threads``, or the default); InputError naming
    ``--threads`` unless it is a positive integer. Returns the count set."""
    import torch

    n = threads if threads is not None else (default if default is not None else default_threads())
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"--threads: expected a positive integer, got {threads!r}")
    torch.set_num_threads(n)
    return n
