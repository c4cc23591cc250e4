"""tdfast demo end to end: a quick run in the default suite, the full run (it must learn) marked slow."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from tdfast import InputError, Retriever
from tdfast.cli import main
from tdfast.data.annotations import load_annotations
from tdfast.data.features import FeatureStore
from tdfast.demo import MARKER, DemoOptions, run_demo

from conftest import assert_names


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    lines: list[str] = []
    result = run_demo(DemoOptions.quick(out_dir=out, progress=False), log=lines.append)
    return out, result, lines


def test_summary_file_is_the_returned_result(quick_run):
    out, result, _ = quick_run
    assert json.loads((out / "demo_summary.json").read_text()) == json.loads(json.dumps(asdict(result)))


def test_val_metrics_of_the_saved_checkpoint_equal_the_trainers_validation(quick_run):
    # The trainer scored its best epoch in memory; the demo reloaded the saved checkpoint from
    # disk and scored it again: the checkpoint holds exactly the model that was selected.
    _, result, _ = quick_run
    assert result.val_metrics == result.metrics_after
    assert result.metrics_before != result.metrics_after  # training moved the model


def test_onnxruntime_backend_agrees_with_eager(quick_run):
    _, result, _ = quick_run
    ort = result.parity["onnxruntime"]
    assert ort["top1_agree"] == ort["pairs"] > 0
    for key in ("max_abs_spans", "max_abs_scores", "max_abs_saliency"):
        assert ort[key] <= 1e-4 * 60  # spans are seconds: 1e-4 of a normalized span times <= 60 s


def test_examples_are_the_checkpoints_predictions(quick_run):
    out, result, _ = quick_run
    data = out / "data"
    tests = load_annotations(data / "test.jsonl")[:3]
    r = Retriever.from_pretrained(out / "checkpoint")
    store = FeatureStore([data / "video_feats"], data / "text_feats", r.config)
    preds = r.predict([store.video(a.vid) for a in tests], [store.query(a.qid) for a in tests], top_k=3)
    for example, a, p in zip(result.examples, tests, preds):
        assert example["query"] == a.query and example["gt"] == [list(w) for w in a.windows]
        got = np.asarray(example["top3"])
        np.testing.assert_allclose(got[:, :2], p.spans, atol=0.051)  # rounded to 0.1 s
        np.testing.assert_allclose(got[:, 2], p.scores, atol=5.1e-4)


def test_rerun_replaces_its_own_dir_but_never_a_users(quick_run, tmp_path):
    out, _, lines = quick_run
    assert (out / MARKER).is_file()
    assert any(line.startswith("[5/5] latency") for line in lines)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(InputError) as e:
        run_demo(DemoOptions.quick(out_dir=foreign, progress=False), log=lambda s: None)
    assert_names(e.value, f"--out {str(foreign)!r}")
    assert (foreign / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("field, value, flag, seen", [
    ("epochs", 0, "--epochs", "got 0"),
    ("num_train", -3, "--num-train", "-3"),
    ("backends", (), "--backends", "none"),
    ("batch_sizes", (1, 0), "--batch-sizes", "[1, 0]"),
])
def test_bad_options_raise_input_error(tmp_path, field, value, flag, seen):
    with pytest.raises(InputError) as e:
        run_demo(DemoOptions.quick(out_dir=tmp_path / "x", **{field: value}), log=lambda s: None)
    assert_names(e.value, flag, seen)
    assert not (tmp_path / "x").exists()


def test_cli_reports_bad_option_as_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tdfast demo: error: --epochs:") and "got 0" in err and "\n" not in err


@pytest.mark.slow
def test_full_demo_learns(tmp_path):
    """The default demo (what the README runs) must show real learning, not noise."""
    result = run_demo(DemoOptions(out_dir=tmp_path / "run", progress=False), log=lambda s: None)
    before, after = result.metrics_before, result.metrics_after
    assert after["HL-min-VeryGood-Hit1"] >= before["HL-min-VeryGood-Hit1"] + 30
    assert after["MR-full-R1@0.5"] >= before["MR-full-R1@0.5"] + 15


def test_quick_run_says_its_model_did_not_learn(quick_run):
    # Its metrics and moments are an untrained model's; the output must not pass them off as a result.
    from tdfast.demo import SMOKE_NOTE

    _, _, lines = quick_run
    table = next(i for i, ln in enumerate(lines) if ln.startswith("metric (val)"))
    assert lines[table + 2] == SMOKE_NOTE and "do not teach the model" in SMOKE_NOTE
    assert SMOKE_NOTE not in lines[:table]
    assert not DemoOptions().smoke  # the full demo trains and says nothing of the kind
