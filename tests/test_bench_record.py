"""tdfast.benchmarks records, percentiles, goals and the text table: numbers on hand-made input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench_support import predict_record, row
from tdfast.benchmarks.goals import add_roofline, evaluate_goals
from tdfast.benchmarks.latency import format_table
from tdfast.benchmarks.record import KINDS, read_record, validate_record, write_record
from tdfast.benchmarks.timing import PeakMemory, percentile, rounds_for, summarize_ms
from tdfast.errors import InputError


def test_percentiles_on_known_input():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0
    s = summarize_ms([0.004, 0.001, 0.003, 0.002])  # seconds, unsorted
    assert s == pytest.approx({"n": 4, "p50_ms": 2.5, "p90_ms": 3.7, "p99_ms": 3.97, "min_ms": 1.0,
                               "mean_ms": 2.5})
    with pytest.raises(ValueError, match="at least one value"):
        percentile([], 50)


def test_rounds_fit_the_budget_within_bounds():
    assert rounds_for(0.5, 20.0) == 40
    assert rounds_for(10.0, 20.0) == 5  # at least 5
    assert rounds_for(1e-5, 20.0, hi=200) == 200


def test_peak_memory_sees_a_256_mib_allocation():
    mem = PeakMemory("cpu")
    if mem.kind != "cpu_peak_rss":
        pytest.skip("/proc/self/clear_refs not writable: peak RSS cannot be reset here")
    mem.reset()
    before = mem.read_mb()
    block = np.ones(256 * 2**20 // 8)  # touched pages: resident
    del block
    assert mem.read_mb() - before >= 250
    mem.reset()
    assert mem.read_mb() < before + 250  # the reset forgot the freed block


def test_valid_record_round_trips(tmp_path):
    record = predict_record()
    assert validate_record(record) is record
    path = write_record(record, tmp_path / "r.json")
    assert json.loads(path.read_text()) == record
    assert read_record(path) == record


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("schema_version"), "record: missing key 'schema_version'"),
    (lambda r: r.update(schema_version=2), "record['schema_version']: expected 1, got 2"),
    (lambda r: r.update(kind="latency"),
     f"record['kind']: expected one of {list(KINDS)}, got 'latency'"),
    (lambda r: r["machine"].pop("git"), "record['machine']: missing key 'git'"),
    (lambda r: r["machine"]["versions"].update(torch=None),
     "record['machine']['versions']['torch']: expected a non-empty string, got None"),
    (lambda r: r.update(rows=[]), "record['rows']: expected a non-empty list, got []"),
    (lambda r: r["rows"][1].update(p50_ms=float("nan")),
     "record['rows'][1]['p50_ms']: expected a finite number >= 0, got nan"),
    (lambda r: r["rows"][2].update(p90_ms=1.0),
     "record['rows'][2]: expected p50_ms <= p90_ms <= p99_ms, got 12, 1, 14.4"),
    (lambda r: r["rows"][0].update(batch=1.0), "record['rows'][0]['batch']: expected an integer >= 1, got 1.0"),
    (lambda r: r["rows"][0].pop("n"), "record['rows'][0]: missing key 'n'"),
    (lambda r: r["rows"][4].update(skipped=""), "record['rows'][4]['skipped']: expected a non-empty string, got ''"),
    (lambda r: r.update(kind="kernels"), "record['rows'][0]: missing key 'impl'"),
])
def test_bad_records_are_rejected_with_the_field_named(change, message):
    record = predict_record()
    change(record)
    with pytest.raises(InputError) as e:
        validate_record(record)
    assert str(e.value) == message


def test_write_refuses_a_bad_record_and_leaves_no_file(tmp_path):
    record = predict_record()
    record["rows"][0]["pairs_per_s"] = 0
    with pytest.raises(InputError, match=r"record\['rows'\]\[0\]\['pairs_per_s'\]: expected a finite number"):
        write_record(record, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"bad.json: record: expected a JSON object, got list"):
        read_record(tmp_path / "bad.json")
    with pytest.raises(InputError, match=r"missing.json: no such record file$"):
        read_record(tmp_path / "missing.json")


def test_roofline_and_cpu_goals_on_hand_made_rows():
    # 1 GFLOP per pair, GEMM peak 100 GFLOP/s. B=32: eager 400 ms -> 80 GFLOP/s = 80%;
    # onnxruntime 320 ms -> 100%. Best (onnxruntime) B=1 12 ms vs 320/32 = 10 ms per pair: 1.2x.
    # int8 at 160 ms: 2x onnxruntime.
    rows = [row("eager", 1, 20.0), row("eager", 32, 400.0), row("onnxruntime", 1, 12.0),
            row("onnxruntime", 32, 320.0), row("onnxruntime-int8", 32, 160.0),
            row("eager", 32, 1.0, video_len=150), {"backend": "tensorrt", "dtype": "float32", "skipped": "x"}]
    add_roofline(rows, {75: 1e9}, {"float32": 100.0})
    assert rows[1]["pct_of_peak"] == pytest.approx(80.0)
    assert rows[3]["gflops"] == pytest.approx(100.0)
    assert "pct_of_peak" not in rows[5]  # no FLOPs for L=150 given
    goals = evaluate_goals(rows, "cpu", {"pairs": 40, "top1_agreement": 0.925})
    got = [(g["backend"], g["value"], g["target"], g["met"]) for g in goals]
    assert got == [("onnxruntime", 100.0, 80.0, True), ("onnxruntime", 1.2, 1.3, True),
                   ("onnxruntime-int8", 2.0, 1.5, True), ("onnxruntime-int8", 2.0, 1.5, True),
                   ("onnxruntime-int8", 0.925, 0.95, False)]
    assert "note" not in goals[-1]  # decisive_pairs not given: no verdict on the measurement


def test_int8_agreement_without_decisive_pairs_is_called_inconclusive():
    rows = [row("onnxruntime", 32, 320.0)]
    add_roofline(rows, {75: 1e9}, {"float32": 100.0})
    int8 = {"pairs": 97, "top1_agreement": 0.1649, "decisive_pairs": 0,
            "fp32_top1_margin_median": 1.18e-06, "max_abs_delta_fg_prob_median": 0.00399}
    goal = evaluate_goals(rows, "cpu", int8)[-1]
    assert (goal["value"], goal["met"]) == (0.1649, False)
    assert goal["note"] == ("inconclusive: the fp32 top-1 margin (median 1.2e-06) is below int8's score "
                            "change (median 4.0e-03) on every pair, so agreement counts flipped near-ties; "
                            "rerun with --ckpt of a trained model, or --train-epochs 60")
    int8["decisive_pairs"] = 3
    assert "note" not in evaluate_goals(rows, "cpu", int8)[-1]


def test_int8_map_loss_goal_is_judged_when_measured():
    rows = [row("onnxruntime", 32, 320.0)]
    add_roofline(rows, {75: 1e9}, {"float32": 100.0})
    int8 = {"pairs": 60, "top1_agreement": 0.97, "decisive_pairs": 50, "MR-full-mAP_loss": 0.62}
    goal = evaluate_goals(rows, "cpu", int8)[-1]
    assert (goal["value"], goal["target"], goal["op"], goal["met"]) == (0.62, 0.5, "<=", False)
    assert "note" not in goal
    int8["MR-full-mAP_loss"] = -0.3  # int8 scoring higher is no loss
    assert evaluate_goals(rows, "cpu", int8)[-1]["met"] is True
    int8.update(decisive_pairs=0, fp32_top1_margin_median=1e-7, max_abs_delta_fg_prob_median=1e-4)
    assert evaluate_goals(rows, "cpu", int8)[-1]["note"].startswith("inconclusive")


def test_int8_agreement_is_judged_off_the_latency_goal_shape():
    # a tiny-model run (L=32, no L=75 rows) still judges the agreement, and only that
    rows = [row("onnxruntime", 32, 5.9, video_len=32), row("onnxruntime-int8", 32, 5.8, video_len=32)]
    goals = evaluate_goals(rows, "cpu", {"pairs": 85, "top1_agreement": 1.0, "decisive_pairs": 78})
    assert [(g["backend"], g["value"], g["met"]) for g in goals] == [("onnxruntime-int8", 1.0, True)]


def test_gpu_goals_judge_the_best_backend_per_batch():
    rows = [row("eager", 1, 1.0, dtype="bfloat16"), row("compile", 1, 0.3, dtype="bfloat16"),
            row("compile", 256, 0.5, dtype="bfloat16"), row("compile", 32, 0.1, dtype="float32")]
    goals = evaluate_goals(rows, "cuda")
    got = [(g["goal"], g["backend"], g["value"], g["met"]) for g in goals]
    assert got == [("bf16 B=1: one whole batch, backend call p50", "compile", 0.24, True),
                   ("bf16 B=1: one whole batch, whole predict p50", "compile", 0.3, False),
                   ("bf16 B=256: one whole batch, backend call p50", "compile", 0.4, True),
                   ("bf16 B=256: one whole batch, whole predict p50", "compile", 0.5, True)]


def test_format_table_aligns_numbers_and_shows_skip_reasons():
    rows = [{"backend": "eager", "dtype": "float32", "video_len": 75, "batch": 1, "p50_ms": 10.0,
             "p90_ms": 12.5, "p99_ms": 13.25, "model_p50_ms": 9.5, "pairs_per_s": 100.0,
             "peak_mem_mb": 812.4, "first_call_s": 0.25, "n": 40},
            {"backend": "tensorrt", "dtype": "float32", "skipped": "needs a CUDA GPU"}]
    assert format_table(rows).splitlines() == [
        "backend   dtype     L  B  p50 ms  p90 ms  p99 ms  model p50 ms  pairs/s  peak MiB  first call s   n",
        "eager     float32  75  1  10.000  12.500  13.250         9.500    100.0       812          0.25  40",
        "tensorrt  float32  skipped: needs a CUDA GPU",
    ]
