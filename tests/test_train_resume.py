"""Kill mid-run + --resume == uninterrupted run (same seed): weights, optimizer steps, log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.training import RunConfig, TrainData, TrainOptions, train
from tdfast.training.run_dir import LAST, load_train_state
from train_support import finish, start


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), seed=3, num_train=24, num_val=8, num_test=0,
                                  max_clips=16)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: threading overhead dominates; also fixes the op order
    yield
    torch.set_num_threads(n)


SAVE_EVERY = 3  # steps; with 4 steps an epoch most checkpoints fall mid-epoch


def run(data, out, **kw):
    config = RunConfig.from_name("tiny", batch_size=8, max_video_len=24)
    return train(config,
                 TrainData(data.train, data.val, data.video_dirs, data.text_dir, cache_size=256),
                 TrainOptions(out, epochs=3, seed=11, progress=False, save_every_steps=SAVE_EVERY,
                              eval_before=False, **kw))


def train_losses(run_dir):
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in lines if r["kind"] == "train"], lines


def assert_same_losses(a, b, tol=1e-6):
    """The same steps in the same order, and each step's loss within ``tol``: element by element
    (``pytest.approx`` refuses lists of pairs since pytest 9)."""
    assert [s for s, _ in a] == [s for s, _ in b]
    worst = max(abs(la - lb) for (_, la), (_, lb) in zip(a, b))
    assert worst <= tol, f"largest step-loss difference {worst:.3g} > {tol}"


def test_crash_and_resume_matches_uninterrupted(data, tmp_path):
    full = run(data, tmp_path / "full")
    steps_per_epoch = full.steps // 3
    crash_at = steps_per_epoch + 3  # mid epoch 2, one step after a mid-epoch checkpoint

    def crash(step, _):
        if step == crash_at:
            raise Crash

    with pytest.raises(Crash):
        run(data, tmp_path / "cut", on_step=crash)
    saved = load_train_state(tmp_path / "cut" / "last")["progress"]
    assert saved["step"] == (crash_at // SAVE_EVERY) * SAVE_EVERY  # lost only the steps since then
    assert (saved["epoch"], saved["batch"]) == (1, saved["step"] - steps_per_epoch)  # resumes mid-epoch
    resumed = run(data, tmp_path / "cut", resume=tmp_path / "cut")

    a = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "last" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    best_a = load_file(str(tmp_path / "full" / "model.safetensors"))
    best_b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert max((best_a[k] - best_b[k]).abs().max().item() for k in best_a) <= 1e-6
    assert (resumed.steps, resumed.best_epoch, resumed.best_metrics) == (full.steps, full.best_epoch,
                                                                        full.best_metrics)
    losses_a, log_a = train_losses(tmp_path / "full")
    losses_b, log_b = train_losses(tmp_path / "cut")
    assert [s for s, _ in losses_b] == list(range(1, full.steps + 1))  # no step lost or doubled
    assert_same_losses(losses_a, losses_b)
    assert [r for r in log_a if r["kind"] != "train"] == [r for r in log_b if r["kind"] != "train"]
    state = torch.load(tmp_path / "cut" / "last" / "train_state.pt", weights_only=True)
    assert state["optimizer"]["state"][0]["step"].item() == full.steps


def test_resume_refuses_another_config(data, tmp_path):
    from tdfast.errors import InputError

    config = RunConfig.from_name("tiny", batch_size=8, max_video_len=24)
    train(config,
          TrainData(data.train, None, data.video_dirs, data.text_dir, cache_size=256),
          TrainOptions(tmp_path / "r", epochs=1, seed=0, progress=False))
    other = RunConfig.from_name("tiny", batch_size=8, max_video_len=24, lr=5e-4)
    with pytest.raises(InputError, match=r"another config.*'lr': \(0\.001, 0\.0005\)"):
        train(other,
              TrainData(data.train, None, data.video_dirs, data.text_dir),
              TrainOptions(tmp_path / "r", epochs=2, progress=False, resume=tmp_path / "r"))


def cli_train(data, out, *extra) -> subprocess.Popen:
    """``tdfast train`` in a child process with the settings of ``run`` (one thread)."""
    cmd = [sys.executable, "-m", "tdfast", "train", "--train", str(data.train), "--val", str(data.val),
           "--video-feats", *map(str, data.video_dirs), "--text-feats", str(data.text_dir), "--out", str(out),
           "--epochs", "3", "--seed", "11", "--save-every-steps", str(SAVE_EVERY), "--cache-size", "256",
           "--no-progress", *extra]
    return start(cmd)


def max_weight_diff(a, b) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def test_sigkill_and_cli_resume_matches_uninterrupted(data, tmp_path):
    """A real kill -9 of ``tdfast train`` (no clean-up code runs, possibly mid-checkpoint), then
    ``tdfast train --resume``: the same weights and step losses as a run never stopped."""
    full = run(data, tmp_path / "full")
    cut = tmp_path / "cut"
    proc = cli_train(data, cut, "--preset", "tiny", "--set", "batch_size=8", "--set", "max_video_len=24")
    state = cut / LAST / "train_state.pt"
    deadline = time.monotonic() + 300
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # as soon as the first checkpoint exists
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    saved = load_train_state(cut / LAST)["progress"]["step"]
    assert SAVE_EVERY <= saved < full.steps  # killed mid-run, after at least one checkpoint
    finish(cli_train(data, cut, "--resume", str(cut)))
    assert max_weight_diff(tmp_path / "full" / LAST, cut / LAST) <= 1e-6
    assert max_weight_diff(tmp_path / "full", cut) <= 1e-6  # the kept best weights too
    losses_a, _ = train_losses(tmp_path / "full")
    losses_b, _ = train_losses(cut)
    assert [s for s, _ in losses_b] == list(range(1, full.steps + 1))  # no step lost or doubled
    assert_same_losses(losses_a, losses_b)


def test_resume_after_a_kill_mid_swap_and_mid_log_append(data, tmp_path):
    """``last/`` is swapped in by two renames; a kill between them leaves only
    ``.last.tdfast-old-<pid>/`` (and maybe a half-written last log line): resuming repairs both."""
    full = run(data, tmp_path / "full")

    def crash(step, _):
        if step == SAVE_EVERY + 1:
            raise Crash

    cut = tmp_path / "cut"
    with pytest.raises(Crash):
        run(data, cut, on_step=crash)
    dead = dead_pid()
    os.replace(cut / LAST, cut / f".{LAST}.tdfast-old-{dead}")
    with (cut / "log.jsonl").open("a") as f:
        f.write('{"kind": "train", "epoch": 1, "st')  # a kill during the append
    with pytest.warns(UserWarning, match=r"log\.jsonl:\d+: dropped a half-written last line"):
        resumed = run(data, cut, resume=cut)
    assert resumed.steps == full.steps and sorted(p.name for p in cut.iterdir() if p.name.startswith(".")) == []
    assert max_weight_diff(tmp_path / "full" / LAST, cut / LAST) <= 1e-6
    assert_same_losses(train_losses(tmp_path / "full")[0], train_losses(cut)[0])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def fake_run(path, log="{}\n"):
    """A run directory as far as --resume / --out checks look: last/train_state.pt and a log."""
    (path / LAST).mkdir(parents=True)
    (path / LAST / "train_state.pt").write_bytes(b"x")
    (path / "log.jsonl").write_text(log)
    return path


def test_resume_into_another_finished_run_is_refused(data, tmp_path, capsys):
    """``--resume A --out B`` with B a finished run replaced B's last/ and appended A's log to B's."""
    from tdfast.cli import main
    from tdfast.errors import InputError

    a, b = fake_run(tmp_path / "A"), fake_run(tmp_path / "B", log='{"kind": "epoch"}\n')
    config = RunConfig.from_name("tiny", batch_size=8, max_video_len=24)
    with pytest.raises(InputError, match=r"--out '.*B'.*--resume '.*A'"):
        train(config,
              TrainData(data.train, None, data.video_dirs, data.text_dir),
              TrainOptions(b, epochs=1, progress=False, resume=a))
    code = main(["train", "--train", str(data.train), "--video-feats", *map(str, data.video_dirs),
                 "--text-feats", str(data.text_dir), "--out", str(b), "--resume", str(a), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("tdfast train: error: ") and "\n" not in err
    assert str(a) in err and str(b) in err
    assert (b / "log.jsonl").read_text() == '{"kind": "epoch"}\n' and (b / LAST / "train_state.pt").read_bytes() == b"x"


def test_out_that_is_a_file_fails_before_any_work(data, tmp_path):
    from tdfast.errors import InputError

    (tmp_path / "f").write_text("mine")
    config = RunConfig.from_name("tiny", batch_size=8, max_video_len=24)
    with pytest.raises(InputError, match=r"--out '.*f'.*a file"):
        train(config,
              TrainData(data.train, None, data.video_dirs, data.text_dir),
              TrainOptions(tmp_path / "f", epochs=1, progress=False))
    assert (tmp_path / "f").read_text() == "mine"


def test_truncated_or_malicious_train_state_is_an_input_error(tmp_path):
    from tdfast.errors import InputError

    ckpt = tmp_path / "last"
    ckpt.mkdir()
    torch.save({"progress": {"step": 3}, "w": torch.zeros(1000)}, ckpt / "train_state.pt")
    good = (ckpt / "train_state.pt").read_bytes()
    (ckpt / "train_state.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match=r"train_state\.pt: unreadable train state, probably truncated"):
        load_train_state(ckpt)
    torch.save({"progress": os.system}, ckpt / "train_state.pt")  # unpickling would import os.system
    with pytest.raises(InputError, match=r"train_state\.pt: refused as unsafe") as e:
        load_train_state(ckpt)
    assert "weights_only=False" not in str(e.value)
