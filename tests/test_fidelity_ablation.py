"""Ablation runner: the paper's rows and sweeps with the right config each, the untrained
control at the trainer's initialization, resuming without retraining, mean ± std by hand."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tdfast.cli import main as cli_main
from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.errors import InputError
from tdfast.experiments import ablation
from tdfast.experiments.ablation import PAPER_ALPHAS, Row, parse_seeds, parse_values, plan_rows, run_ablation
from tdfast.experiments.summary import markdown, mean_std, summarize
from tdfast.training import RunConfig
from tdfast.model.tddetr import TDDETR
from tdfast.training.rng import seed_everything

from fidelity_support import one_thread  # noqa: F401  (autouse fixture)

SWITCHES = ("use_vsdc", "use_tdem", "alpha", "beta")


def test_plan_rows_paper_rows_and_sweeps():
    base = RunConfig.from_name("tiny")
    rows = plan_rows(["a", "b", "c", "d", "untrained"], [0.1, 0.7], [1.0], base=base)
    assert [r.name for r in rows] == ["a", "b", "c", "d", "untrained", "alpha=0.1", "alpha=0.7", "beta=1"]
    got = {r.name: {k: ablation.resolve(base, r).to_dict()[k] for k in SWITCHES} for r in rows}
    assert got == {
        "a": {"use_vsdc": False, "use_tdem": False, "alpha": 0.7, "beta": 0.7},
        "b": {"use_vsdc": True, "use_tdem": False, "alpha": 0.7, "beta": 0.7},
        "c": {"use_vsdc": False, "use_tdem": True, "alpha": 0.7, "beta": 0.7},
        "d": {"use_vsdc": True, "use_tdem": True, "alpha": 0.7, "beta": 0.7},
        "untrained": {"use_vsdc": False, "use_tdem": False, "alpha": 0.7, "beta": 0.7},
        "alpha=0.1": {"use_vsdc": True, "use_tdem": True, "alpha": 0.1, "beta": 0.7},
        "alpha=0.7": {"use_vsdc": True, "use_tdem": True, "alpha": 0.7, "beta": 0.7},
        "beta=1": {"use_vsdc": True, "use_tdem": True, "alpha": 0.7, "beta": 1.0},
    }
    same = {r.name: r.same_as for r in rows}
    # alpha=0.7 is row d's config (the official default); the untrained control differs from row a (it doesn't train)
    assert same == {"a": None, "b": None, "c": None, "d": None, "untrained": None, "alpha=0.1": None,
                    "alpha=0.7": "d", "beta=1": None}
    assert [r.train for r in rows].count(False) == 1
    assert PAPER_ALPHAS == (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


@pytest.mark.parametrize("rows, alphas, match", [
    (["e"], [], r"--rows: expected names from \['a', 'b', 'c', 'd', 'v', 'v-net', 'v-vsdc', 'v-magnitude', 'v-null', 'w', 'w-half', 'w-vsdc', 'x', 'x-half', 'x-dm4', 'x-b03', 'x-then-half', 'x-nodrop', 'y', 'z-lock', 'z', 'z-quarter', 'z-f25', 'z-m0', 'untrained'\], got 'e'"),
    (["a"], [1.5], r"--alphas: expected values in \[0, 1\], got 1.5"),
    (["a", "a"], [], r"rows: expected each row once, got \['a', 'a'\]"),
])
def test_plan_rows_errors(rows, alphas, match):
    with pytest.raises(InputError, match=match):
        plan_rows(rows, alphas)


def test_ablate_help_names_every_row():
    """``tdfast ablate --help`` lists the variant's rows by hand (deriving them would import torch
    into the CLI's start-up): it must name exactly ``VARIANT_ROWS``, in their order."""
    import re

    from tdfast.cli import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions if a.choices and "ablate" in a.choices)
    text = " ".join(next(a.help for a in sub.choices["ablate"]._actions if a.dest == "rows").split())
    listed = re.search(r"variant's rows (.*?) \(docs/fidelity", text).group(1)
    assert listed.split(", ") == list(ablation.VARIANT_ROWS)


def test_value_lists():
    assert parse_values("paper", "--alphas", PAPER_ALPHAS) == [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    assert parse_values(" 0.2, 1 ,", "--betas") == [0.2, 1.0] and parse_values("", "--betas") == []
    assert parse_seeds("0, 2018") == [0, 2018]
    with pytest.raises(InputError, match=r"--betas: expected a comma list of numbers or 'paper', got '0.1,x'"):
        parse_values("0.1,x", "--betas")
    with pytest.raises(InputError, match=r"--seeds: expected a comma list of integers, got '0,1.5'"):
        parse_seeds("0,1.5")


def test_mean_std_and_summary_by_hand():
    assert mean_std([1.0, 2.0, 4.0]) == {"mean": 2.3333, "std": 1.5275, "n": 3, "values": [1.0, 2.0, 4.0]}
    assert mean_std([5.0])["std"] == 0.0

    def result(seed, r1):
        metrics = {"MR-full-R1@0.5": r1, "HL-min-VeryGood-mAP": None}
        return {"row": "a", "seed": seed, "overrides": {"use_vsdc": False, "use_tdem": False},
                "train": {"seconds": 10.0 * (seed + 1), "epochs": 3},
                "analysis": {"val": {"normal": metrics, "masked": {**metrics, "MR-full-R1@0.5": r1 / 2}}}}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("tdfast.experiments.summary.TABLE2_KEYS", ("MR-full-R1@0.5", "HL-min-VeryGood-mAP"))
        table = summarize([result(0, 60.0), result(1, 70.0)])
    (row,) = table
    assert row["seeds"] == [0, 1] and row["train_seconds"] == 15.0
    assert row["metrics"]["val"]["normal"] == {"MR-full-R1@0.5": mean_std([60.0, 70.0])}
    assert row["metrics"]["val"]["masked"]["MR-full-R1@0.5"]["mean"] == 32.5
    assert "| a (VSDC off, TDEM off) | 2 | 65.00 ± 7.07 |" in markdown(table)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    ds = make_synthetic_dataset(root / "data", num_train=4, num_val=2, num_test=2, max_clips=16, seed=1)
    return root, ds


def test_runner_trains_every_row_with_its_config_and_resumes(tiny_data, monkeypatch, capsys):
    root, ds = tiny_data
    out = root / "out"
    args = ["ablate", "--train", str(ds.train), "--val", str(ds.val), "--test", str(ds.test),
            "--video-feats", str(ds.video_dirs[0]), "--text-feats", str(ds.text_dir), "--out", str(out),
            "--preset", "tiny", "--set", "batch_size=4", "--epochs", "1", "--alphas", "0.7",
            "--betas", "1.0", "--no-progress"]
    assert cli_main(args) == 0
    record = json.loads((out / "ablation.json").read_text())
    names = ["a", "b", "c", "d", "untrained", "alpha=0.7", "beta=1"]
    assert [r["row"] for r in record["table"]] == names
    expected = {"a": (False, False, 0.7, 0.7), "b": (True, False, 0.7, 0.7), "c": (False, True, 0.7, 0.7),
                "d": (True, True, 0.7, 0.7), "untrained": (False, False, 0.7, 0.7),
                "beta=1": (True, True, 0.7, 1.0)}
    for name, switches in expected.items():
        run = out / "runs" / name / "seed0"
        config = json.loads((run / "result.json").read_text())["config"]  # network + training
        assert tuple(config[k] for k in SWITCHES) == switches, name
        assert config["batch_size"] == 4
        network = json.loads((run / "config.json").read_text())  # the checkpoint: the network only
        assert (network["use_tdem"], network["beta"]) == switches[1::2] and "use_vsdc" not in network
    assert not (out / "runs" / "alpha=0.7").exists()  # row d's run is reused
    by_row = {r["row"]: r for r in record["results"]}
    assert by_row["alpha=0.7"]["analysis"] == by_row["d"]["analysis"] and by_row["alpha=0.7"]["same_as"] == "d"
    assert by_row["untrained"]["train"]["steps"] == 0 and by_row["a"]["train"]["steps"] == 1
    assert set(by_row["a"]["analysis"]) == {"val", "test"}
    assert record["machine"]["cores"] >= 1 and "cpu_model" in record["machine"]
    # the untrained control is exactly the network the trainer starts from with seed 0
    seed_everything(0)
    init = TDDETR(RunConfig.from_dict(by_row["untrained"]["config"]).model).state_dict()
    saved = load_file(str(out / "runs" / "untrained" / "seed0" / "model.safetensors"))
    assert all(torch.equal(init[k], saved[k]) for k in init) and set(init) == set(saved)
    capsys.readouterr()

    # resume: every result exists, so nothing trains again and the table is the same
    def no_training(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr("tdfast.training.api.train", no_training)
    monkeypatch.setattr(ablation, "initial_checkpoint", no_training)
    assert cli_main(args) == 0
    assert json.loads((out / "ablation.json").read_text())["table"] == record["table"]
    assert "| d (VSDC on, TDEM on) | 1 |" in capsys.readouterr().out


def test_runner_argument_errors(tiny_data):
    root, ds = tiny_data
    kw = dict(train_ann=ds.train, val_ann=ds.val, video_dirs=ds.video_dirs, text_dir=ds.text_dir,
              out_dir=root / "bad")
    with pytest.raises(InputError, match="--jobs: expected a positive integer, got 0"):
        run_ablation(RunConfig.from_name("tiny"), [Row("a")], [0], jobs=0, **kw)
    with pytest.raises(InputError, match="--seeds: expected at least one seed, got none"):
        run_ablation(RunConfig.from_name("tiny"), [Row("a")], [], **kw)
