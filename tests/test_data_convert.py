"""Charades-STA and TACoS converters on hand-written input."""
from __future__ import annotations

import json

import pytest

from tdfast.data import load_annotations
from tdfast.data.charades_tacos import convert_charades, convert_tacos
from tdfast.errors import InputError

CHARADES = """AO8RW 0.0 6.9##a person is putting a book on a shelf.
Y6R7T 5.2 40.0##person opens the door.

Y6R7T 33.0 35.0##past the end.
AO8RW 12.5 3.0##inverted.
AO8RW 8 9.25##person sits down  
"""


def test_charades(tmp_path):
    src = tmp_path / "charades_sta_test.txt"
    src.write_text(CHARADES)
    out = tmp_path / "charades_test.jsonl"
    conv = convert_charades(src, {"AO8RW": 30.96, "Y6R7T": 32.0}, out_path=out, first_qid=100)
    recs = [json.loads(l) for l in out.read_text().splitlines()]
    assert recs == [
        {"qid": 100, "query": "a person is putting a book on a shelf.", "vid": "AO8RW",
         "duration": 30.96, "relevant_windows": [[0.0, 6.9]]},
        {"qid": 101, "query": "person opens the door.", "vid": "Y6R7T", "duration": 32.0,
         "relevant_windows": [[5.2, 32.0]]},  # end 40.0 clamped to the duration
        {"qid": 102, "query": "person sits down", "vid": "AO8RW", "duration": 30.96,
         "relevant_windows": [[8.0, 9.25]]},
    ]
    assert conv.clamped == 1
    assert [s.split(": ")[0] for s in conv.skipped] == [f"{src}:4", f"{src}:5"]
    assert "[33.0, 35.0] s is empty inside [0, duration=32.0] s" in conv.skipped[0]
    assert [a.qid for a in load_annotations(out)] == [100, 101, 102]  # the strict reader accepts it


@pytest.mark.parametrize("text, durations, needle", [
    ("AO8RW 0.0 6.9 a person\n", {"AO8RW": 30.0}, ":1: expected 'vid start end##sentence'"),
    ("AO8RW 0.0 6.9##ok\nAO8RW zero 6.9##bad\n", {"AO8RW": 30.0}, ":2: expected numeric start"),
    ("AO8RW 0.0 6.9##ok\nZZZZZ 0.0 6.9##bad\n", {"AO8RW": 30.0}, ":2: no duration for video 'ZZZZZ'"),
    ("AO8RW 0.0 6.9##   \n", {"AO8RW": 30.0}, ":1: expected a sentence after '##'"),
])
def test_charades_errors(tmp_path, text, durations, needle):
    src = tmp_path / "cs.txt"
    src.write_text(text)
    with pytest.raises(InputError) as e:
        convert_charades(src, durations)
    assert str(src) + needle in str(e.value), str(e.value)


TACOS = {
    "s13-d21.avi": {"timestamps": [[0, 300], [150, 900], [600, 620]],
                    "sentences": ["He takes out a knife.", "He cuts the cucumber.", "gone"],
                    "num_frames": 600, "fps": 30.0},
    "s27-d50.avi": {"timestamps": [[30, 60]], "sentences": ["He washes a plate."],
                    "num_frames": 2997, "fps": 29.97},
}


def test_tacos(tmp_path):
    src = tmp_path / "tacos_test.json"
    src.write_text(json.dumps(TACOS))
    out = tmp_path / "tacos_test.jsonl"
    conv = convert_tacos(src, out_path=out)
    got = [(a.qid, a.vid, a.query, a.duration, a.windows) for a in load_annotations(out)]
    assert got == [
        (0, "s13-d21", "He takes out a knife.", 20.0, ((0.0, 10.0),)),
        (1, "s13-d21", "He cuts the cucumber.", 20.0, ((5.0, 20.0),)),  # 900/30 = 30 s -> 20 s
        (2, "s27-d50", "He washes a plate.", 100.0, ((30 / 29.97, 60 / 29.97),)),
    ]
    assert conv.clamped == 1 and len(conv.skipped) == 1
    assert "video 's13-d21.avi' timestamps[2]" in conv.skipped[0]
    conv2 = convert_tacos(src, durations={"s13-d21.avi": 40.0, "s27-d50.avi": 50.0}, strip_suffix="",
                          first_qid=7)
    r = conv2.records[1]
    assert (r.qid, r.vid, r.duration, r.windows) == (8, "s13-d21.avi", 40.0, ((5.0, 30.0),))


def test_tacos_errors(tmp_path):
    src = tmp_path / "t.json"
    src.write_text(json.dumps({"v.avi": {**TACOS["s13-d21.avi"], "sentences": ["one"]}}))
    with pytest.raises(InputError, match=r"video 'v.avi': expected one timestamp per sentence, got 3 "
                                         r"timestamps and 1 sentences"):
        convert_tacos(src)
    src.write_text('{"v.avi": {"timestamps": [[0, 1]],\n "sentences": ["a"], "fps": }}')
    with pytest.raises(InputError, match=r"t.json:2: malformed JSON"):
        convert_tacos(src)
    src.write_text(json.dumps({"v.avi": {"timestamps": [[0, 1]], "sentences": ["a"], "fps": 0,
                                         "num_frames": 10}}))
    with pytest.raises(InputError, match=r"video 'v.avi': fps: expected > 0, got 0"):
        convert_tacos(src)
