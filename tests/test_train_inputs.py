"""Bad training input -> InputError naming the file and line, before anything is written."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from tdfast.cli import main
from tdfast.data.synthetic import make_synthetic_dataset
from tdfast.errors import InputError
from tdfast.training import RunConfig, TrainData, TrainOptions, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), seed=5, num_train=6, num_val=3, num_test=0,
                                  max_clips=12)


def lines(path):
    return path.read_text().splitlines()


def write_lines(path, rows):
    path.write_text("".join(r + "\n" for r in rows))
    return path


def run(data, out, train_ann=None, val_ann=None, video_dirs=None):
    config = RunConfig.from_name("tiny", batch_size=4)
    return train(config,
                 TrainData(train_ann or data.train, val_ann or data.val, video_dirs or data.video_dirs,
                           data.text_dir),
                 TrainOptions(out, epochs=1, progress=False))


def test_malformed_jsonl_line_names_file_and_line(data, tmp_path):
    rows = lines(data.train)
    rows[2] = rows[2][:-5]  # cut the closing of line 3
    bad = write_lines(tmp_path / "train.jsonl", rows)
    with pytest.raises(InputError, match=rf"^{re.escape(str(bad))}:3: malformed JSON"):
        run(data, tmp_path / "out", train_ann=bad)
    assert not (tmp_path / "out").exists()


def test_window_outside_duration_names_file_and_line(data, tmp_path):
    rows = [json.loads(r) for r in lines(data.val)]
    rows[1]["relevant_windows"] = [[4.0, rows[1]["duration"] + 6.0]]
    bad = write_lines(tmp_path / "val.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "out"
    out.mkdir()  # an existing empty --out stays empty
    with pytest.raises(InputError, match=rf"^{re.escape(str(bad))}:2: relevant_windows\[0\]: expected a window inside "
                                         rf"\[0, duration={rows[1]['duration']}\] seconds, got "
                                         rf"\[4.0, {rows[1]['duration'] + 6.0}\]"):
        run(data, out, val_ann=bad)
    assert list(out.iterdir()) == []


def test_negative_window_start_is_refused(data, tmp_path):
    rows = [json.loads(r) for r in lines(data.train)]
    rows[0]["relevant_windows"] = [[-3.0, 2.0]]
    bad = write_lines(tmp_path / "train.jsonl", [json.dumps(r) for r in rows])
    with pytest.raises(InputError, match=rf"^{re.escape(str(bad))}:1: relevant_windows\[0\].*got \[-3.0, 2.0\]"):
        run(data, tmp_path / "out", train_ann=bad)
    assert not (tmp_path / "out").exists()


def test_missing_video_feature_file_names_file_and_annotation_line(data, tmp_path):
    videos = tmp_path / "video_feats"
    shutil.copytree(data.video_dirs[0], videos)
    rows = [json.loads(r) for r in lines(data.train)]
    vid = rows[3]["vid"]
    first_use = next(i for i, r in enumerate(rows) if r["vid"] == vid) + 1
    (videos / f"{vid}.npz").unlink()
    with pytest.raises(InputError, match=rf"^{re.escape(str(videos / vid))}\.npz: feature file not found "
                                         rf"\(needed by {re.escape(str(data.train))}:{first_use}\)"):
        run(data, tmp_path / "out", video_dirs=[videos])
    assert not (tmp_path / "out").exists()


def test_missing_query_feature_file_through_the_cli(data, tmp_path, capsys):
    texts = tmp_path / "text_feats"
    shutil.copytree(data.text_dir, texts)
    qid = json.loads(lines(data.val)[2])["qid"]
    (texts / f"qid{qid}.npz").unlink()
    out = tmp_path / "out"
    code = main(["train", "--preset", "tiny", "--train", str(data.train), "--val", str(data.val),
                 "--video-feats", str(data.video_dirs[0]), "--text-feats", str(texts), "--out", str(out),
                 "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"tdfast train: error: {texts / f'qid{qid}.npz'}: feature file not found "
                   f"(needed by {data.val}:3)\n")
    assert not out.exists()


def test_existing_run_is_not_overwritten(data, tmp_path):
    out = tmp_path / "out"
    (out / "last").mkdir(parents=True)
    (out / "log.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match=r"--out .*already holds a training run \(last, log.jsonl\); pass --resume"):
        run(data, out)
    assert lines(out / "log.jsonl") == ["{}"]
