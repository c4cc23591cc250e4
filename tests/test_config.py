import pytest

from tdfast import InputError, TDDETRConfig
from tdfast.training import RunConfig, TrainConfig

from conftest import assert_names


def test_presets_follow_the_official_scripts():
    # td_detr/scripts/train.sh (QVHighlights): --enc_layers 4 --dec_layers 4 --lr_drop 80,
    # config.py defaults alpha = beta = 0.7, L1 1 / gIoU 10; QD-DETR's opt.json: 2/2/2, L1 10 /
    # gIoU 1, lr_drop 400; the Charades script: 3/3/3, lr 2e-4, lw_saliency 4, 1-s clips.
    q, qt = TDDETRConfig.from_name("qvhighlights"), TrainConfig.from_name("qvhighlights")
    assert (q.video_dim, q.model_video_dim, q.text_dim, q.hidden_dim, q.num_heads) == (2816, 2818, 512, 256, 8)
    assert (q.num_td_layers, q.num_encoder_layers, q.num_decoder_layers, q.num_queries) == (4, 4, 4, 10)
    assert (q.max_video_len, q.max_query_len, q.clip_len, qt.lr, qt.alpha, q.beta) == (75, 32, 2.0, 1e-4, 0.7, 0.7)
    assert (q.dropout, q.input_dropout, qt.lr_drop, qt.w_span_l1, qt.w_span_giou) == (0.1, 0.5, 80, 1.0, 10.0)
    assert q.use_tdem and qt.use_vsdc
    d, dt = TDDETRConfig.from_name("qd-detr"), TrainConfig.from_name("qd-detr")
    assert (d.num_td_layers, d.num_encoder_layers, d.num_decoder_layers, dt.lr_drop) == (2, 2, 2, 400)
    assert (d.use_tdem, dt.use_vsdc, dt.w_span_l1, dt.w_span_giou) == (False, False, 10.0, 1.0)
    c, ct = TDDETRConfig.from_name("charades"), TrainConfig.from_name("charades")
    assert (c.num_td_layers, c.num_encoder_layers, c.num_decoder_layers) == (3, 3, 3)
    assert (ct.lr, c.clip_len, c.num_queries, c.hidden_dim, ct.w_negative) == (2e-4, 1.0, 10, 256, 4.0)
    t = TDDETRConfig.from_name("tiny")
    assert (t.video_dim, t.text_dim, t.hidden_dim) == (64, 32, 32)


def test_the_network_config_holds_no_training_setting():
    # config.json is the network: what rebuilds it and prepares its inputs, nothing else.
    assert not TDDETRConfig.field_names() & TrainConfig.field_names()
    assert {"lr", "batch_size", "use_vsdc", "alpha", "eval_protocol", "w_negative"} <= TrainConfig.field_names()
    assert {"hidden_dim", "use_tdem", "beta", "clip_len", "max_video_len"} <= TDDETRConfig.field_names()


def test_json_round_trip_is_exact():
    c = TDDETRConfig.from_name("tiny", beta=0.25)
    assert TDDETRConfig.from_json(c.to_json()) == c
    assert TDDETRConfig.from_dict(c.to_dict()) == c
    t = TrainConfig.from_name("tiny", use_vsdc=False, lr=3e-3)
    assert TrainConfig.from_json(t.to_json()) == t


def test_override_parses_types_and_sends_each_field_to_its_config():
    c = TDDETRConfig.from_name("tiny").override(["use_tdem=false", "beta=0.9", "hidden_dim=64"])
    assert c.use_tdem is False and c.beta == 0.9 and c.hidden_dim == 64
    run = RunConfig.from_name("tiny").override(["use_vsdc=false", "beta=0.9", "lr=3e-3", "max_video_len=24"])
    assert (run.training.use_vsdc, run.training.lr, run.model.beta, run.model.max_video_len) == (False, 3e-3, 0.9, 24)
    assert RunConfig.from_dict(run.to_dict()) == run
    assert run.model == TDDETRConfig.from_name("tiny", beta=0.9, max_video_len=24)


@pytest.mark.parametrize("call, argument, parts", [
    (lambda: TDDETRConfig.from_name("nope"), "preset", ("qvhighlights", "'nope'")),
    (lambda: TDDETRConfig.from_name("tiny", beta=1.5), "config.beta", ("[0, 1]", "1.5")),
    (lambda: TDDETRConfig.from_name("tiny", hidden_dim=30), "config.hidden_dim", ("num_heads=4", "30")),
    (lambda: TDDETRConfig.from_name("tiny").override(["bogus=1"]), "--set", ("'bogus'",)),
    (lambda: TDDETRConfig.from_name("tiny").override(["use_tdem=maybe"]), "--set use_tdem", ("'maybe'",)),
    (lambda: TDDETRConfig.from_json("{nope", source="x/config.json"), "x/config.json", ("JSON",)),
    (lambda: TDDETRConfig.from_dict({"wat": 1}), "config", ("'wat'",)),
    (lambda: TDDETRConfig.from_name("tiny", lr=1e-3), "config", ("'lr'", "TDDETRConfig")),
    (lambda: RunConfig.from_name("tiny").override(["bogus=1"]), "--set", ("'bogus'",)),
    (lambda: TrainConfig.from_name("tiny", alpha=2.0), "config.alpha", ("[0, 1]", "2.0")),
])
def test_bad_config_raises_input_error(call, argument, parts):
    with pytest.raises(InputError) as e:
        call()
    assert_names(e.value, argument, *parts)


@pytest.mark.parametrize("field, value, seen", [
    # "false" is truthy: without the check this config.json would build a TDEM model.
    ("use_tdem", "false", "'false' (str)"),
    ("use_tef", 1, "1 (int)"),
    ("beta", "0.5", "'0.5' (str)"),
    ("lr", float("nan"), "nan (float)"),
    ("hidden_dim", 32.5, "32.5 (float)"),
    ("num_heads", True, "True (bool)"),
    ("eval_protocol", 3, "3 (int)"),
])
def test_config_json_with_wrong_types_is_rejected(field, value, seen):
    cls = TDDETRConfig if field in TDDETRConfig.field_names() else TrainConfig
    d = {**cls.from_name("tiny").to_dict(), field: value}
    with pytest.raises(InputError) as e:
        cls.from_dict(d)
    assert_names(e.value, f"config.{field}", seen)


@pytest.mark.parametrize("item, argument, seen", [
    # int() truncated these: 7.9 trained with 7 queries, 16.9 with batch 16, and 1.5 said "got 1"
    ("num_queries=7.9", "--set num_queries", "'7.9'"),
    ("batch_size=16.9", "--set batch_size", "'16.9'"),
    ("hidden_dim=1.5", "--set hidden_dim", "'1.5'"),
    ("epochs=two", "--set epochs", "'two'"),
    ("lr=fast", "--set lr", "'fast'"),
])
def test_set_refuses_non_integers_for_integer_fields_and_echoes_the_text(item, argument, seen):
    with pytest.raises(InputError) as e:
        RunConfig.from_name("tiny").override([item])
    assert_names(e.value, argument, seen)


def test_set_takes_whole_numbers_written_as_floats():
    run = RunConfig.from_name("tiny").override(["num_queries=7.0", "batch_size=1e1"])
    assert (run.model.num_queries, run.training.batch_size) == (7, 10)
    assert isinstance(run.model.num_queries, int)


@pytest.mark.parametrize("item, field, seen", [
    # sizes that built or trained for minutes before any check
    ("num_queries=1000000000", "num_queries", "1000000000"),
    ("num_encoder_layers=100000000", "num_encoder_layers", "100000000"),
    ("hidden_dim=1048576", "hidden_dim", "1048576"),
    # accepted before: epochs 0 / -1 exited 0 with no run, negative lr_drop / patience ran on
    ("epochs=0", "epochs", "0"), ("epochs=-1", "epochs", "-1"),
    ("lr_drop=-5", "lr_drop", "-5"), ("early_stop_patience=-3", "early_stop_patience", "-3"),
    ("weight_decay=-1", "weight_decay", "-1"), ("grad_clip=-0.5", "grad_clip", "-0.5"),
    ("w_class=-4", "w_class", "-4"), ("eos_coef=2", "eos_coef", "2"),
])
def test_every_size_and_training_setting_is_range_checked(item, field, seen):
    with pytest.raises(InputError) as e:
        RunConfig.from_name("tiny").override([item])
    assert_names(e.value, f"config.{field}", "expected a value in", seen)
