"""Annotation jsonl reader: validation errors name file and line; real QVHighlights files load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tdfast.data.annotations import Annotation, load_annotations, write_annotations
from tdfast.data.labels import make_labels
from tdfast.errors import InputError

from conftest import assert_names

QVH = Path(__file__).resolve().parents[2] / "shared" / "qvhighlights" / "annotations"
GOOD = {"qid": 7, "query": "a dog runs", "vid": "v1", "duration": 10,
        "relevant_windows": [[2, 4], [6, 10]], "relevant_clip_ids": [1, 3, 4],
        "saliency_scores": [[1, 2, 3], [0, 0, 4], [2, 2, 2]]}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "ann.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_parses_labels_and_unlabelled_records(tmp_path):
    nolab = {"qid": "q-8", "query": "x", "vid": "v2", "duration": 5.5}
    anns = load_annotations(_write(tmp_path, [json.dumps(GOOD), "", json.dumps(nolab)]))
    a, b = anns
    assert a.qid == 7 and a.duration == 10.0 and a.windows == ((2.0, 4.0), (6.0, 10.0))
    assert a.relevant_clip_ids == (1, 3, 4) and a.saliency_scores[1] == (0, 0, 4)
    assert a.source.endswith("ann.jsonl:1") and a.has_labels
    assert b.qid == "q-8" and b.windows is None and not b.has_labels
    assert b.source.endswith("ann.jsonl:3")  # blank lines still count


def test_round_trip_through_writer(tmp_path):
    anns = load_annotations(_write(tmp_path, [json.dumps(GOOD)]))
    out = write_annotations(anns, tmp_path / "copy.jsonl")
    assert json.loads(out.read_text()) == {**GOOD, "duration": 10.0}
    assert load_annotations(out)[0].windows == anns[0].windows


@pytest.mark.parametrize("bad, needle", [
    ('{"qid": 1, "query": "x", "vid": "v", "duration": 4,', "malformed JSON"),
    (json.dumps({"qid": 1, "query": "x", "duration": 4}), "missing key(s) ['vid']"),
    (json.dumps({**GOOD, "relevant_windows": [[2, 10.5]]}), "inside [0, duration=10.0]"),
    (json.dumps({**GOOD, "relevant_windows": [[-0.5, 3]]}), "inside [0, duration=10.0]"),
    (json.dumps({**GOOD, "relevant_windows": [[5, 3]]}), "start=5.0 > end=3.0"),
    (json.dumps({**GOOD, "saliency_scores": [[1, 2, 3]]}), "(3 rows), got 1"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "saliency_scores"}), "missing key 'saliency_scores'"),
    (json.dumps({**GOOD, "duration": 0}), "duration: expected seconds > 0, got 0"),
    (json.dumps({**GOOD, "relevant_windows": []}), "non-empty list"),
    (json.dumps({**GOOD, "qid": 0}), "qid 0 already used on line 1"),
    ("[1, 2]", "expected a JSON object, got list"),
])
def test_bad_record_names_file_and_line(tmp_path, bad, needle):
    first = json.dumps({**GOOD, "qid": 0})
    path = _write(tmp_path, [first, bad])
    with pytest.raises(InputError) as e:
        load_annotations(path)
    msg = str(e.value)
    assert f"{path}:2:" in msg and needle in msg, msg


def test_window_within_slack_is_clamped(tmp_path):
    a = load_annotations(_write(tmp_path, [json.dumps({**GOOD, "relevant_windows": [[-1e-7, 10 + 1e-7]]})]))
    assert a[0].windows == ((0.0, 10.0),)


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = tmp_path / "ann.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\n" + b'{"qid": 2, "query": "caf\xe9"}\n')
    with pytest.raises(InputError) as e:
        load_annotations(path)
    assert_names(e.value, f"{path}:3", "UTF-8", "0xe9")


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.jsonl"):
        load_annotations(tmp_path / "nope.jsonl")


@pytest.mark.skipif(not QVH.is_dir(), reason="../shared/qvhighlights absent")
def test_real_qvh_val_labels_match_relevant_clip_ids():
    anns = load_annotations(QVH / "highlight_val_release.jsonl")
    assert len(anns) == 1550 and len({a.qid for a in anns}) == 1550
    for a in anns:
        num_clips = int(np.ceil(a.duration / 2.0))
        lab = make_labels(a, num_clips, clip_len=2.0)
        # our overlap definition of GT clips reproduces the released clip ids exactly
        assert np.flatnonzero(lab["gt_clip_mask"]).tolist() == sorted(a.relevant_clip_ids), a.qid
        expect = np.zeros(num_clips, dtype=np.float32)
        expect[list(a.relevant_clip_ids)] = [sum(s) for s in a.saliency_scores]
        np.testing.assert_array_equal(lab["saliency"], expect)
        # spans are windows / duration (QVH: duration = num_clips * 2 s) in (center, width)
        xx = np.asarray(a.windows) / (num_clips * 2.0)
        np.testing.assert_allclose(lab["spans"][:, 0], xx.mean(1), atol=1e-6)
        np.testing.assert_allclose(lab["spans"][:, 1], xx[:, 1] - xx[:, 0], atol=1e-6)


@pytest.mark.skipif(not QVH.is_dir(), reason="../shared/qvhighlights absent")
def test_real_qvh_test_release_loads_without_labels():
    anns = load_annotations(QVH / "highlight_test_release.jsonl")
    assert len(anns) == 1542 and not any(a.has_labels for a in anns)
    assert isinstance(anns[0], Annotation)
