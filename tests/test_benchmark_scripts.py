"""Every script under benchmarks/ still starts (``--help``), its shell drivers parse, and the
training benchmark runs one real step (it once called ``Trainer`` with a renamed argument,
and nothing noticed). Timings are never asserted."""
from __future__ import annotations

import contextlib
import io
import re
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


def _driver_calls() -> list[tuple[str, str]]:
    """(target, rest of the logical line) for every ``benchmarks/X.py`` and ``-m tdfast bench``
    that ``run_gpu.sh`` runs; ``rest`` stops at a redirection or a ``||`` / ``&&``."""
    text = (BENCHMARKS / "run_gpu.sh").read_text().replace("\\\n", " ")
    calls = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(benchmarks/\w+\.py|-m tdfast bench)(.*)", line):
            calls.append((m.group(1), re.split(r"\|\||&&|>|\|", m.group(2))[0]))
    return calls


def test_gpu_driver_calls_scripts_flags_and_stages_that_exist():
    """``run_gpu.sh`` has never run on a GPU since the redesign: at least every script it calls
    exists, every flag it passes is in that script's ``--help``, every ``gpu_session.py`` stage
    it names is one, and the pytest step finds test files."""
    gpu_session = runpy.run_path(str(BENCHMARKS / "gpu_session.py"), run_name="not_main")
    calls = _driver_calls()
    assert {t for t, _ in calls} == {"benchmarks/gpu_session.py", "benchmarks/bench_kernels.py",
                                     "benchmarks/bench_train.py", "-m tdfast bench"}
    helps: dict[str, str] = {}
    for target, rest in calls:
        if target not in helps:
            if target.startswith("-m"):
                from tdfast.cli import main
                out = io.StringIO()
                with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
                    main(["bench", "--help"])
                helps[target] = out.getvalue()
            else:
                code, helps[target] = run_script(BENCHMARKS.parents[0] / target, ["--help"])
                assert code == 0, helps[target]
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest))
        known = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", helps[target]))
        assert flags and flags <= known, (target, flags - known)
        if target.endswith("gpu_session.py"):
            words = re.sub(r'\$\(\(.*?\)\)|"[^"]*"', " ", rest).split()
            stages = [w for w in words if not w.startswith("-") and not w.isdigit()]
            assert stages and set(stages) <= set(gpu_session["ESTIMATE_S"]), stages
    text = (BENCHMARKS / "run_gpu.sh").read_text()
    (pattern,) = re.findall(r"pytest .*?(tests/\S+)", text)
    assert len(list(BENCHMARKS.parent.glob(pattern))) >= 5, pattern
