"""save_pretrained over an existing checkpoint: a kill at any point leaves the old or the new one.

Kills are real SIGKILLs of a forked child (no handler runs): at each named boundary of the
commit (``TDFAST_TEST_KILL_AT``), and at random moments of a child saving in a loop.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from tdfast import TDDETR, TDDETRConfig
from tdfast.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from tdfast.commit import JOURNAL, KILL_ENV

# the new checkpoint's config differs in a shape (num_queries): new weights beside the old
# config.json do not load, which is what a non-atomic pair of renames left behind
OLD = TDDETRConfig.from_name("tiny")
NEW = TDDETRConfig.from_name("tiny", num_queries=7, hidden_dim=64)


def models() -> tuple[TDDETR, TDDETR]:
    torch.manual_seed(1)
    old = TDDETR(OLD)
    torch.manual_seed(2)
    return old, TDDETR(NEW)


def which(directory: Path, old: TDDETR, new: TDDETR) -> str:
    """'old' or 'new': the checkpoint ``directory`` loads as (it must load, and equal one)."""
    loaded = TDDETR.from_pretrained(directory)
    for name, model in (("old", old), ("new", new)):
        if loaded.config == model.config:
            state = model.state_dict()
            assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
            return name
    raise AssertionError(f"{directory} loads as neither checkpoint: {loaded.config}")


def run_child(target, env: dict[str, str] | None = None, kill_after: float | None = None) -> int:
    """Fork; the child runs ``target()`` (then exits 0); returns the child's wait status."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.environ.update(env or {})
            target()
            os._exit(0)
        except BaseException:
            import traceback

            traceback.print_exc()  # the parent's stderr: why the child did not get to its kill point
            sys.stderr.flush()
            os._exit(3)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


@pytest.mark.parametrize("point,expected", [("staged", "old"), ("journal", "new"),
                                            (f"renamed:{WEIGHTS_NAME}", "new"),
                                            (f"renamed:{CONFIG_NAME}", "new")])
def test_a_kill_at_each_boundary_leaves_the_old_or_the_new_checkpoint(tmp_path, point, expected):
    old, new = models()
    ckpt = tmp_path / "ckpt"
    old.save_pretrained(ckpt)
    (ckpt / "notes.txt").write_text("mine")
    status = run_child(lambda: new.save_pretrained(ckpt), env={KILL_ENV: point})
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert which(ckpt, old, new) == expected
    assert not (ckpt / JOURNAL).exists()  # the load finished the interrupted commit
    assert (ckpt / "notes.txt").read_text() == "mine"
    # the next save removes what the killed writer staged and leaves exactly the three files
    old.save_pretrained(ckpt)
    assert which(ckpt, old, new) == "old"
    assert sorted(p.name for p in ckpt.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME, "notes.txt"]


def test_a_save_that_fails_after_a_killed_one_keeps_the_killed_ones_commit(tmp_path, monkeypatch):
    """The next writer finishes a journal before it cleans dead writers' staged files: cleaning
    first deleted the staged config.json that the journal still had to rename."""
    import errno

    from tdfast.model import checkpoint

    old, new = models()
    ckpt = tmp_path / "ckpt"
    old.save_pretrained(ckpt)
    status = run_child(lambda: new.save_pretrained(ckpt), env={KILL_ENV: f"renamed:{WEIGHTS_NAME}"})
    assert os.WIFSIGNALED(status)

    write = checkpoint.write_new_file

    def full_disk_at_the_config(path, data):  # the weights are staged, the config fails
        if CONFIG_NAME in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(checkpoint, "write_new_file", full_disk_at_the_config)
    with pytest.raises(OSError, match="No space left"):
        old.save_pretrained(ckpt)
    monkeypatch.undo()
    assert which(ckpt, old, new) == "new"


def test_a_crash_at_any_rename_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    """Fails on the old code: weights renamed, then death before config.json was."""
    old, new = models()
    real_replace = os.replace
    for n in range(1, 6):
        ckpt = tmp_path / f"ckpt{n}"
        old.save_pretrained(ckpt)
        calls = []

        def dying_replace(src, dst, n=n, calls=calls):
            calls.append(dst)
            if len(calls) == n:
                raise SystemExit("killed")
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", dying_replace)
        try:
            new.save_pretrained(ckpt)
        except SystemExit:
            pass
        monkeypatch.setattr(os, "replace", real_replace)
        assert which(ckpt, old, new) in ("old", "new"), n


def sweep(tmp_path: Path, kills: int) -> dict[str, int]:
    """Kill a child that saves old/new in turns at random moments; every time the directory
    loads as one of them. Returns how often each was found."""
    old, new = models()
    ckpt = tmp_path / "ckpt"
    old.save_pretrained(ckpt)
    start = time.perf_counter()
    new.save_pretrained(ckpt)
    old.save_pretrained(ckpt)
    one_save = (time.perf_counter() - start) / 2

    def save_forever():
        while True:
            new.save_pretrained(ckpt)
            old.save_pretrained(ckpt)

    rng = random.Random(0)
    seen = {"old": 0, "new": 0}
    for _ in range(kills):
        run_child(save_forever, kill_after=rng.uniform(0.0, 4 * one_save) + 0.01)
        seen[which(ckpt, old, new)] += 1
    return seen


def test_random_kill_sweep_short(tmp_path):
    seen = sweep(tmp_path, kills=8)
    assert sum(seen.values()) == 8


@pytest.mark.slow
def test_random_kill_sweep_long(tmp_path):
    seen = sweep(tmp_path, kills=200)
    assert seen["old"] > 0 and seen["new"] > 0  # kills landed in both halves of the loop
