"""``tdfast bench`` end to end on the tiny preset: a valid record, skip reasons, the plot, FLOPs."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from torch import nn

from tdfast.benchmarks.matrix import CPU_TRITON
from tdfast.benchmarks.record import read_record
from tdfast.benchmarks.roofline import flops_per_pair
from tdfast.cli import main
from tdfast.export.tensorrt import INSTALL_HINT as TRT_INSTALL_HINT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One ``tdfast bench`` process: (exit code, output dir, stdout, stderr)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "tdfast", "bench", "--preset", "tiny", "--device", "cpu",
                           "--backends", "eager,tensorrt,triton", "--batch-sizes", "1,3", "--video-lens", "8,40",
                           "--query-len", "4", "--repeats", "2", "--warmup", "1", "--gemm-sizes", "64",
                           "--threads", "1", "--out", str(out / "r.json"), "--plot", str(out / "p.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.returncode, out, proc.stdout, proc.stderr


def test_bench_writes_a_valid_record(bench_run):
    rc, out, _, _ = bench_run
    assert rc == 0
    record = read_record(out / "r.json")  # raises unless the schema holds
    measured = [r for r in record["rows"] if "skipped" not in r]
    assert sorted((r["backend"], r["video_len"], r["batch"]) for r in measured) == [
        ("eager", 8, 1), ("eager", 8, 3), ("eager", 40, 1), ("eager", 40, 3)]
    for r in measured:
        assert r["n"] == 2 and r["query_len"] == 4 and r["dtype"] == "float32"
        assert r["pairs_per_s"] == pytest.approx(r["batch"] / (r["p50_ms"] / 1e3))
        gflop = record["flops_per_pair"][str(r["video_len"])] * r["batch"] / 1e9
        assert r["pct_of_peak"] == pytest.approx(100 * gflop / (r["p50_ms"] / 1e3)
                                                 / record["gemm_peak"]["float32"]["gflops"])
    skipped = {r["backend"]: r["skipped"] for r in record["rows"] if "skipped" in r}
    no_trt = "" if importlib.util.find_spec("tensorrt") else f"; also: {TRT_INSTALL_HINT}"
    assert skipped == {"tensorrt": f"tensorrt backend: needs a CUDA GPU, got device=cpu{no_trt}",
                       "triton": CPU_TRITON}
    # 40 clips > the tiny preset's max_video_len=32: the benchmarked model's limit was raised, and said so
    assert record["setup"]["model"] == "tiny preset, random init (seed 0); max_video_len raised to 40"
    assert record["machine"]["device_type"] == "cpu" and record["setup"]["video_lens"] == [8, 40]


def test_bench_plot_is_a_png_of_the_expected_size(bench_run):
    _, out, _, _ = bench_run
    import matplotlib.image

    from tdfast.benchmarks.plot import main as plot_main

    assert plot_main([str(out / "r.json")]) == 0  # later, from the saved record: r.png
    assert plot_main([str(out / "missing.json")]) == 2  # a clear error, not a traceback
    for png in ("p.png", "r.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
        assert matplotlib.image.imread(out / png).shape == (450, 700, 4)  # 7 x 4.5 in at 100 dpi, RGBA


@pytest.mark.parametrize("argv, flag, seen", [
    (["--batch-sizes", "0,8"], "--batch-sizes", "'0,8'"),
    (["--batch", "0,8"], "--batch-sizes", "'0,8'"),  # the old spelling still parses
    (["--video-lens", "x"], "--video-lens", "'x'"),
    (["--backends", "eager,fast"], "--backends", "'eager,fast'"),
    (["--dtypes", "int4"], "--dtypes", "'int4'"),
    (["--preset", "tiny", "--query-len", "17", "--gemm-sizes", "32", "--backends", "eager"],
     "--query-len", "max_query_len=16, got 17"),
])
def test_bad_arguments_name_the_flag(argv, flag, seen, capsys, tmp_path):
    # One line naming the flag and the value seen (the wording may change), and no record.
    assert main(["bench", "--device", "cpu", "--out", str(tmp_path / "r.json"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tdfast bench: error: {flag}:") and seen in err and "\n" not in err
    assert not (tmp_path / "r.json").exists()


class _OneMatmul(nn.Module):
    """FLOPs by hand: video [1, L, 6] @ W [6, 5] -> 2 * L * 6 * 5; query [1, M, 3] @ U [3, 7] -> 2 * M * 3 * 7."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("C", (), {"video_dim": 6, "text_dim": 3})()
        self.w, self.u = nn.Parameter(torch.ones(6, 5)), nn.Parameter(torch.ones(3, 7))

    def forward(self, video, video_mask, query, query_mask):
        return (video @ self.w).sum() + (query @ self.u).sum()


def test_flops_per_pair_counts_the_matmuls():
    assert flops_per_pair(_OneMatmul(), 10, 4) == 2 * 10 * 6 * 5 + 2 * 4 * 3 * 7


def test_bench_prints_its_table_once_and_a_progress_line_per_cell(bench_run):
    """The table was printed per video length on stderr and again whole on stdout."""
    _, _, out, err = bench_run
    header = "first call s"  # a column of the table
    assert out.count(header) == 1 and err.count(header) == 0
    cells = [line for line in err.splitlines() if line.startswith("  B=")]
    assert [line.split(":")[0].strip() for line in cells] == ["B=1 L=8", "B=3 L=8", "B=1 L=40", "B=3 L=40"]
    assert all("eager p50" in line and "(n=2)" in line for line in cells)


def test_budget_is_a_limit_on_each_cells_timed_rounds():
    """--budget-s only sized the round count from a FLOP estimate; a backend slower than the
    estimate ran all its rounds whatever the budget."""
    import time

    from tdfast.benchmarks.timing import interleaved_rounds

    calls = {"slow": lambda: time.sleep(0.05), "fast": lambda: None}
    start = time.perf_counter()
    seconds, _ = interleaved_rounds(calls, 200, lambda: None, budget_s=0.3)
    took = time.perf_counter() - start
    assert 5 <= len(seconds["slow"]) <= 8 and len(seconds["fast"]) == len(seconds["slow"])
    assert took < 0.3 + 0.1
    seconds, _ = interleaved_rounds(calls, 3, lambda: None, budget_s=0.0)
    assert len(seconds["slow"]) == 1  # at least one round, so every cell has a number
