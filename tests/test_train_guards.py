"""One writer per run directory, writable --out checked before training, full disks in one line,
and a run that stopped before its first checkpoint started again without hand deletion."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tdfast import TDDETR
from tdfast.model.checkpoint import WEIGHTS_NAME
from tdfast.cli import main
from tdfast.commit import KILL_ENV
from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.training import run_dir

from limits_support import one_line_error, run_tdfast
from test_checkpoint_commit import run_child
from train_support import start


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), seed=5, num_train=16, num_val=4, num_test=0, max_clips=16)


def argv(data, out, *extra) -> list[str]:
    return ["train", "--preset", "tiny", "--train", str(data.train), "--val", str(data.val), "--video-feats",
            *map(str, data.video_dirs), "--text-feats", str(data.text_dir), "--out", str(out), "--no-progress",
            "--threads", "1", "--set", "batch_size=8", "--epochs", "1", *extra]


def records(run: Path) -> list[tuple]:
    return [(r["kind"], r.get("step"), r.get("epoch")) for r in run_dir.read_log(run / run_dir.LOG_NAME)]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("tdfast train: error: ") and "\n" not in err, err
    return err


def test_a_second_writer_of_a_run_directory_is_refused_in_one_line(data, tmp_path, capsys):
    out = tmp_path / "run"
    with run_dir.claim(out, fresh=True):  # a live run holds it
        assert main(argv(data, out)) == 2
        assert "another tdfast train is writing to this run directory" in one_line(capsys)
        assert main(argv(data, out, "--resume", str(out))) == 2
        one_line(capsys)
    assert records(out) == []  # the held run's (empty) log, untouched


def test_a_killed_writer_leaves_no_stale_lock(data, tmp_path):
    out = tmp_path / "run"

    def claim_and_die():
        with run_dir.claim(out, fresh=True):
            os.kill(os.getpid(), signal.SIGKILL)

    status = run_child(claim_and_die)
    assert os.WIFSIGNALED(status) and (out / run_dir.LOG_NAME).is_file()
    torch.set_num_threads(1)
    assert main(argv(data, out)) == 0
    assert TDDETR.from_pretrained(out).config.hidden_dim == 32
    assert not (out / run_dir.LOCK_NAME).exists()


@pytest.mark.slow
def test_two_runs_started_at_once_into_one_directory(data, tmp_path):
    """Both ran to exit 0 and doubled every log record before."""
    import sys

    out = tmp_path / "run"
    procs = [start([sys.executable, "-m", "tdfast", *argv(data, out, "--epochs", "2")]) for _ in range(2)]
    outcomes = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        outcomes.append((p.returncode, stderr))
    assert sorted(rc for rc, _ in outcomes) == [0, 2], outcomes
    err = next(e for rc, e in outcomes if rc == 2).strip()
    assert err.startswith("tdfast train: error: --out") and "\n" not in err
    kept = records(out)
    assert len(kept) == len(set(kept))  # no record twice


def test_a_run_that_stopped_before_its_first_checkpoint_is_started_again(data, tmp_path, capsys):
    """A log without last/ (a disk that filled at the first save) was refused both ways before."""
    out = tmp_path / "run"
    out.mkdir()
    (out / run_dir.LOG_NAME).write_text(json.dumps({"kind": "val", "epoch": 0, "step": 0}) + "\n")
    assert main(argv(data, out, "--resume", str(out))) == 2
    assert "without --resume to start it again" in one_line(capsys)
    torch.set_num_threads(1)
    assert main(argv(data, out)) == 0
    kept = records(out)
    assert kept[0] == ("val", 0, 0) and kept.count(("val", 0, 0)) == 1  # the old record is gone
    assert [r for r in kept if r[0] == "epoch"] == [("epoch", kept[-1][1], 1)]
    assert (out / "last" / "train_state.pt").is_file()


def test_an_out_that_cannot_be_created_fails_before_training(data, tmp_path, capsys, monkeypatch):
    from tdfast.training import trainer

    monkeypatch.setattr(trainer.Trainer, "__init__", lambda *a, **k: pytest.fail("training started"))
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert main(argv(data, blocker / "run")) == 2
    assert str(blocker / "run") in one_line(capsys) and blocker.read_text() == "mine"


def test_read_only_parent_and_file_size_limit_are_one_line_and_leave_nothing_half_made(data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    proc = run_tdfast(argv(data, ro / "run"), unprivileged=True)
    one_line_error(proc, "train", str(ro / "run"), "Permission denied")
    # the first save of the weights (~50 KB) hits the limit: one line naming the file, and the
    # same command then runs (the run never reached a checkpoint)
    out = tmp_path / "small"
    proc = run_tdfast(argv(data, out), fsize_bytes=20 * 1024)
    one_line_error(proc, "train", str(out / WEIGHTS_NAME), "File too large")
    torch.set_num_threads(1)
    assert main(argv(data, out)) == 0


@pytest.mark.parametrize("point", ["staged", "journal", f"renamed:{WEIGHTS_NAME}"])
def test_a_train_killed_at_each_boundary_of_its_first_save_leaves_a_usable_directory(data, tmp_path, point):
    out = tmp_path / "run"
    torch.set_num_threads(1)
    proc = train_process(argv(data, out), env={KILL_ENV: point})
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    if point != "staged":  # after the commit point the best weights are whole
        assert TDDETR.from_pretrained(out).config.hidden_dim == 32
    assert main(argv(data, out)) == 0  # no last/ yet: the same command starts it again
    assert TDDETR.from_pretrained(out).config.hidden_dim == 32


def train_process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m tdfast ARGS`` in a fresh interpreter. Not a fork of this process: once a test
    has run a backward pass here, autograd's worker threads make backward in a forked child
    fail ("Unable to handle autograd's threading in combination with fork")."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "tdfast", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def train_kill_sweep(data, tmp_path: Path, kills: int) -> None:
    """Kill ``tdfast train`` (checkpointing every step) at random moments; each time the run
    directory's best weights load if present, and the run continues (--resume) or starts again
    (no checkpoint yet) to exit 0."""
    import random

    rng = random.Random(1)
    torch.set_num_threads(1)
    for i in range(kills):
        out = tmp_path / f"run{i}"
        cmd = argv(data, out, "--epochs", "2", "--save-every-steps", "1")
        proc = train_process(cmd)
        deadline = time.monotonic() + 120
        while not (out / "log.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the interpreter's start-up is not what the sweep kills
        time.sleep(rng.uniform(0.05, 2.5))
        proc.kill()
        proc.wait(timeout=60)
        if proc.returncode != -signal.SIGKILL:  # finished before the kill: it must have succeeded
            assert proc.returncode == 0, proc.stderr.read()
            continue
        if (out / WEIGHTS_NAME).exists() or (out / ".tdfast-commit.json").exists():
            assert TDDETR.from_pretrained(out).config.hidden_dim == 32
        # resuming takes the checkpoint's config: no --set
        again = [a for a in cmd if a not in ("--set", "batch_size=8")] + ["--resume", str(out)] \
            if (out / "last").exists() else cmd
        assert main(again) == 0, i
        assert TDDETR.from_pretrained(out).config.hidden_dim == 32


def test_train_kill_sweep_short(data, tmp_path):
    train_kill_sweep(data, tmp_path, kills=2)


@pytest.mark.slow
def test_train_kill_sweep_long(data, tmp_path):
    train_kill_sweep(data, tmp_path, kills=20)


def test_sizes_that_ran_on_for_minutes_are_refused_before_any_work(data, tmp_path, capsys):
    for item in ("num_queries=1000000000", "num_encoder_layers=100000000"):
        assert main(argv(data, tmp_path / "run", "--set", item)) == 2
        assert item.split("=")[0] in one_line(capsys)
    assert not (tmp_path / "run").exists()
