"""Evaluator input errors, jsonl I/O and the ``tdfast eval`` command."""
from __future__ import annotations

import json
import re

import pytest

from eval_support import gt, pred
from tdfast.cli import main
from tdfast.errors import InputError
from tdfast.eval import dumps, eval_charades, eval_submission, load_jsonl

GTS = [gt(q, [[0, 10]], 20, [1, 2], [[4, 3, 2], [1, 1, 1]]) for q in range(3)]


def preds(windows=([0, 10, 0.9],), saliency=(0.1, 0.9) + (0.0,) * 8, qids=range(3)):
    return [pred(q, windows, saliency) for q in qids]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_qid_mismatch_lists_missing_and_extra():
    sub = preds(qids=[0, 1, 7, 8])
    with pytest.raises(InputError, match=r"(?s)\[2\].*\[7, 8\].*--allow-partial"):  # missing, extra, the way out
        eval_submission(sub, GTS)
    partial = eval_submission(sub, GTS, match_number=False)
    assert partial == eval_submission(preds(qids=[0, 1]), GTS[:2])


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s[1].update(pred_relevant_windows=[]), r"submission\[1\]: pred_relevant_windows: expected a non-empty"),
    (lambda s: s[2].update(pred_relevant_windows=[[5, 3, 0.9]]),
     r"submission\[2\]: pred_relevant_windows\[0\]: expected end >= start, got \[5\.0, 3\.0\]"),
    (lambda s: s[0].update(pred_relevant_windows=[[0, 10]]), r"submission\[0\]: pred_relevant_windows: .*\[start, end, score\]"),
    (lambda s: s[0].update(pred_saliency_scores=[0.1, float("nan")]), r"submission\[0\]: pred_saliency_scores: .*NaN"),
    (lambda s: s[0].update(pred_saliency_scores=[]), r"submission\[0\]: pred_saliency_scores: expected a non-empty"),
    (lambda s: s[1].update(qid=0), r"submission\[1\]: duplicate qid 0 \(first at submission\[0\]\)"),
    (lambda s: s[1].pop("pred_saliency_scores"), r"submission\[1\]: missing field 'pred_saliency_scores'"),
])
def test_malformed_submission(mutate, message):
    sub = preds()
    mutate(sub)
    with pytest.raises(InputError, match=message):
        eval_submission(sub, GTS)


@pytest.mark.parametrize("mutate, message", [
    (lambda g: g[1].update(relevant_windows=[[4, 4]]),
     r"ground_truth\[1\]: relevant_windows\[0\]: expected end > start, got \[4\.0, 4\.0\]"),
    (lambda g: g[0].update(relevant_clip_ids=[1, 10]),
     r"ground_truth\[0\]: relevant_clip_ids must lie in \[0, 10\) for duration 20, got 1\.\.10"),
    (lambda g: g[0].update(saliency_scores=[[4, 3], [1, 1]]), r"ground_truth\[0\]: saliency_scores: expected"),
    (lambda g: g[2].update(duration=1), r"ground_truth\[2\]: duration must be a number >= clip length 2"),
])
def test_malformed_ground_truth(mutate, message):
    gts = json.loads(json.dumps(GTS))
    mutate(gts)
    with pytest.raises(InputError, match=message):
        eval_submission(preds(), gts)


def test_zero_length_gt_window_is_allowed_in_charades_mode_only():
    gts = [gt(0, [[4, 4]])]
    assert eval_charades([pred(0, [[4, 4, 1.0]])], gts)["brief"]["MR-full-mIoU"] == 0.0
    with pytest.raises(InputError, match="expected end > start"):
        eval_submission([pred(0, [[4, 4, 1.0]])], gts)


def test_load_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"qid": 1}\n\n{"qid": 2\n')
    with pytest.raises(InputError, match=re.escape(f"{path}:3: expected one JSON object per line")):
        load_jsonl(path)
    path.write_text('{"qid": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match=re.escape(f"{path}:2: expected a JSON object per line, got list")):
        load_jsonl(path)


def test_load_jsonl_rejects_non_utf8_naming_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"qid": 1}\n{"qid": 2, "query": "\xff"}\n')
    with pytest.raises(InputError, match=re.escape(f"{path}:2: expected UTF-8 text, got byte 0xff")):
        load_jsonl(path)


def test_field_errors_name_file_and_line_for_loaded_records(tmp_path):
    sub = preds()
    sub[2]["pred_relevant_windows"] = [[0, 10, "high"]]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in sub[:2]) + "\n\n" + json.dumps(sub[2]) + "\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:4: pred_relevant_windows: expected numbers")):
        eval_submission(load_jsonl(path), GTS)


def test_only_present_tasks_are_scored():
    mr_only = eval_submission([pred(q, [[0, 10, 0.9]]) for q in range(3)], GTS)
    assert list(mr_only) == ["brief", "full", "long", "middle", "short"]
    hl_only = eval_submission([pred(q, saliency=[0.1, 0.9]) for q in range(3)], GTS)
    assert list(hl_only) == ["brief", "HL-min-Fair", "HL-min-Good", "HL-min-VeryGood"]
    # Clip 1 (scores 4, 3, 2) ranked first: a hit at every level; AP 1 for each annotator with a
    # positive clip, 0 for the others (Good: annotator 2; VeryGood: annotators 1 and 2).
    assert hl_only["brief"] == {"HL-min-Fair-mAP": 100.0, "HL-min-Fair-Hit1": 100.0, "HL-min-Good-mAP": 66.67,
                                "HL-min-Good-Hit1": 100.0, "HL-min-VeryGood-mAP": 33.33,
                                "HL-min-VeryGood-Hit1": 100.0}
    with pytest.raises(InputError, match=r"submission\[0\]: expected 'pred_relevant_windows' and/or"):
        eval_submission([{"qid": q} for q in range(3)], GTS)


def test_cli_prints_and_writes_the_same_json_as_the_function(tmp_path, capsys):
    sub_path, gt_path = write_jsonl(tmp_path / "p.jsonl", preds()), write_jsonl(tmp_path / "g.jsonl", GTS)
    out_path = tmp_path / "out" / "metrics.json"
    assert main(["eval", "--submission", str(sub_path), "--gt", str(gt_path), "--out", str(out_path)]) == 0
    expected = dumps(eval_submission(preds(), GTS))
    assert capsys.readouterr().out == expected + "\n"
    assert out_path.read_text() == expected
    assert json.loads(expected)["brief"]["MR-full-mAP"] == 100.0


def test_cli_charades_mode_and_errors(tmp_path, capsys):
    sub_path, gt_path = write_jsonl(tmp_path / "p.jsonl", preds(qids=[0, 1])), write_jsonl(tmp_path / "g.jsonl", GTS)
    assert main(["eval", "--submission", str(sub_path), "--gt", str(gt_path), "--mode", "charades"]) == 2
    assert "tdfast eval: error: qids in submission and ground_truth must match" in capsys.readouterr().err
    argv = ["eval", "--submission", str(sub_path), "--gt", str(gt_path), "--mode", "charades", "--allow-partial"]
    assert main(argv) == 0
    assert capsys.readouterr().out == dumps(eval_charades(preds(qids=[0, 1]), GTS[:2])) + "\n"
    assert main(["eval", "--submission", str(tmp_path / "missing.jsonl"), "--gt", str(gt_path)]) == 2
    assert f"tdfast eval: error: jsonl: file {str(tmp_path / 'missing.jsonl')!r} not found" in capsys.readouterr().err


@pytest.mark.parametrize("duration", [1e15, 1e300])
def test_absurd_gt_duration_is_an_error_naming_file_and_line(tmp_path, capsys, duration):
    """A GT duration of 1e15 s made the highlight eval allocate a 10.7 PiB clip table."""
    bad = [dict(g) for g in GTS]
    bad[1]["duration"] = duration
    sub_path, gt_path = write_jsonl(tmp_path / "p.jsonl", preds()), write_jsonl(tmp_path / "g.jsonl", bad)
    assert main(["eval", "--submission", str(sub_path), "--gt", str(gt_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tdfast eval: error: {gt_path}:2: duration {duration!r} s") and "\n" not in err
    assert "at most 10000 clips" in err


def test_line_separators_inside_a_string_split_no_line(tmp_path, capsys):
    """U+2028, U+0085 and U+001C are legal unescaped inside a JSON string; the annotation
    loader and the evaluator read the file alike (they once split lines differently, so
    ``tdfast eval --gt`` and ``train --val`` rejected a file training loaded)."""
    from tdfast.data.annotations import load_annotations

    odd = "a man\u2028talks\u0085to\x1ca dog"
    records = [{**g, "query": odd if i == 1 else "q", "vid": f"v{i}"} for i, g in enumerate(GTS)]
    gt_path = tmp_path / "gt.jsonl"
    gt_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    loaded = load_jsonl(gt_path)
    assert [r["query"] for r in loaded] == [r["query"] for r in records]
    assert loaded.lines == [1, 2, 3]
    assert [a.query for a in load_annotations(gt_path)] == [r["query"] for r in records]
    assert [a.source for a in load_annotations(gt_path)] == [f"{gt_path}:{n}" for n in (1, 2, 3)]
    sub_path = write_jsonl(tmp_path / "sub.jsonl", preds())
    assert main(["eval", "--submission", str(sub_path), "--gt", str(gt_path)]) == 0
    assert capsys.readouterr().out == dumps(eval_submission(preds(), records)) + "\n"
    gt_path.write_text(gt_path.read_text(encoding="utf-8") + "{\"qid\": 9,\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"{gt_path}:4: expected one JSON object per line")):
        load_jsonl(gt_path)
