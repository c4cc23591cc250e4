"""Every script under benchmarks/ still starts (``--help``), its shell drivers parse, and the
training benchmark runs one real step (it once called ``Trainer`` with a renamed argument,
and nothing noticed). Timings are never asserted."""
from __future__ import annotations

import contextlib
import io
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*.py"))
SHELL = sorted(BENCHMARKS.glob("*.sh"))


def run_script(path: Path, argv: list[str]) -> tuple[int, str]:
    """Run ``path`` as ``__main__`` with ``argv`` in this process -> (exit code, stdout)."""
    out = io.StringIO()
    old = sys.argv
    sys.argv = [path.name, *argv]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(path), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    return code, out.getvalue()


def test_there_are_scripts_to_check():
    assert {"bench_train.py", "bench_kernels.py", "gpu_session.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_help(script):
    code, out = run_script(script, ["--help"])
    assert code == 0, out
    assert out.startswith(f"usage: {script.name}"), out[:200]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("script", SHELL, ids=[p.name for p in SHELL])
def test_shell_driver_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bench_train_runs_a_step(tmp_path):
    from tdfast.benchmarks import read_record

    out = tmp_path / "train.json"
    code, text = run_script(BENCHMARKS / "bench_train.py",
                            ["--device", "cpu", "--presets", "tiny", "--steps", "1", "--warmup", "0",
                             "--threads", "1", "--max-load", "1000", "--out", str(out)])
    assert code == 0, text
    record = read_record(out)  # validated
    (row,) = record["rows"]
    assert (record["kind"], row["preset"], row["n"], row["batch_size"]) == ("train", "tiny", 1, 16)
    assert row["steps_per_s"] > 0 and row["samples_per_s"] == pytest.approx(16 * row["steps_per_s"], rel=0.01)
