"""TDDETRConfig: the one dataclass that drives model, data and trainer."""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from tdfast.errors import InputError


@dataclass
class TDDETRConfig:
    """Every knob of TD-DETR. Presets: ``TDDETRConfig.from_name(name)``.

    Units: ``clip_len`` in seconds; ``max_video_len`` in clips;
    ``max_query_len`` in tokens. ``video_dim`` is the width of the feature
    files (several dirs concatenated); the two temporal-endpoint features
    (``use_tef``) are added inside the model on top of it.
    """

    # features
    video_dim: int = 2816
    text_dim: int = 512
    max_video_len: int = 75
    max_query_len: int = 32
    clip_len: float = 2.0
    use_tef: bool = True
    normalize_video: bool = True
    normalize_text: bool = True
    # network
    hidden_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 1024
    num_td_layers: int = 2
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    num_queries: int = 10
    num_input_proj: int = 2
    dropout: float = 0.1
    input_dropout: float = 0.5
    aux_loss: bool = True
    # TD-DETR switches (paper Table 4 rows are one config each)
    use_tdem: bool = True
    use_vsdc: bool = True
    use_negative_pair: bool = True
    alpha: float = 0.7  # VSDC: keep-probability of the anchor video's non-GT tokens
    beta: float = 0.7  # TDEM: weight of the residual V in the merge beta*V + (1-beta)*A_t + A_v
    vsdc_topk: int = 5  # VSDC: clip dot products averaged per video pair
    # VSDC, opt-in (not in the paper or the official code): put the anchor's GT clips inside the
    # partner's clips, so the moment's neighbours are new context (docs/fidelity.md, section 3)
    vsdc_moment_in_context: bool = False
    # optimisation (paper Sec. 4.1)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 200
    lr_drop: int = 400  # epoch of the 10x LR drop
    grad_clip: float = 0.1
    early_stop_patience: int = 10  # epochs without gain in the val selection metric; 0 = never stop
    # per-epoch validation: "qvhighlights" (official QVHighlights metrics, best by MR-full-mAP) or
    # "charades" (Charades-STA / TACoS R1@{0.3,0.5,0.7} and mIoU, best by R1@0.5 then mIoU)
    eval_protocol: str = "qvhighlights"
    # loss / matching coefficients (the matcher uses the same ones)
    w_span_l1: float = 10.0
    w_span_giou: float = 1.0
    w_class: float = 4.0
    eos_coef: float = 0.1
    w_saliency_margin: float = 1.0
    w_saliency_contrast: float = 1.0
    w_negative: float = 4.0
    saliency_margin: float = 0.2
    num_saliency_pairs: int = 2  # margin loss: hard and easy (pos, neg) clip pairs per sample, each

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError for values the model can't be built with."""
        for f in dataclasses.fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))
        positive = ("video_dim", "text_dim", "max_video_len", "max_query_len", "hidden_dim",
                    "num_heads", "ffn_dim", "num_queries", "num_input_proj", "batch_size",
                    "num_saliency_pairs", "vsdc_topk")
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise InputError(f"config.{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.hidden_dim % self.num_heads:
            raise InputError(f"config.hidden_dim: expected a multiple of num_heads={self.num_heads}, "
                             f"got {self.hidden_dim}")
        if self.hidden_dim % 4:  # the anchor sine embedding gives each coordinate D/2 sin/cos pairs
            raise InputError(f"config.hidden_dim: expected a multiple of 4, got {self.hidden_dim}")
        for name in ("alpha", "beta", "dropout", "input_dropout"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise InputError(f"config.{name}: expected a value in [0, 1], got {v!r}")
        if self.clip_len <= 0:
            raise InputError(f"config.clip_len: expected seconds > 0, got {self.clip_len!r}")
        if self.eval_protocol not in EVAL_PROTOCOLS:
            raise InputError(f"config.eval_protocol: expected one of {list(EVAL_PROTOCOLS)}, "
                             f"got {self.eval_protocol!r}")

    @property
    def model_video_dim(self) -> int:
        """Width the input projection sees: file features + 2 TEF columns if ``use_tef``."""
        return self.video_dim + (2 if self.use_tef else 0)

    # --- presets -----------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "TDDETRConfig":
        """A named preset (``qvhighlights``, ``qd-detr``, ``charades``, ``tiny``) with optional overrides."""
        if name not in PRESETS:
            raise InputError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **overrides})

    # --- serialisation -----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TDDETRConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"config: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> "TDDETRConfig":
        """Parse JSON text; ``source`` names the file in errors."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{source}: malformed JSON ({e})") from None
        if not isinstance(d, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d)

    def override(self, assignments: list[str]) -> "TDDETRConfig":
        """Apply ``key=value`` strings (CLI ``--set``); values parsed as JSON, else as strings."""
        d = self.to_dict()
        fields = {f.name: f for f in dataclasses.fields(self)}
        for a in assignments:
            if "=" not in a:
                raise InputError(f"--set: expected key=value, got {a!r}")
            key, raw = a.split("=", 1)
            key = key.strip()
            if key not in fields:
                raise InputError(f"--set: unknown config field {key!r}; known: {sorted(fields)}")
            d[key] = _parse_value(raw.strip(), type(d[key]), key)
        return TDDETRConfig.from_dict(d)


def _check_type(name: str, kind: str, value: Any) -> None:
    """InputError unless ``value`` fits the field's annotation (``int``/``float``/``bool``/``str``).

    A hand-edited config.json with ``"use_tdem": "false"`` would otherwise build a TDEM model
    (the string is truthy), and ``"beta": "0.5"`` would fail deep inside ``forward``.
    """
    if kind == "bool":
        ok, expected = isinstance(value, bool), "true or false"
    elif kind == "int":
        ok, expected = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    elif kind == "float":
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
              and math.isfinite(value))
        expected = "a finite number"
    elif kind == "str":
        ok, expected = isinstance(value, str), "a string"
    else:  # an annotation this check doesn't know: left to the field's own checks
        return
    if not ok:
        raise InputError(f"config.{name}: expected {expected}, got {value!r} ({type(value).__name__})")


def _parse_value(raw: str, typ: type, key: str) -> Any:
    if typ is bool:
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise InputError(f"--set {key}: expected true/false, got {raw!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if typ in (int, float):
        try:
            return typ(value)
        except (TypeError, ValueError):
            raise InputError(f"--set {key}: expected a {typ.__name__}, got {raw!r}") from None
    return value


EVAL_PROTOCOLS = ("qvhighlights", "charades")  # the evaluators: tdfast.training.validate.PROTOCOLS

PRESETS: dict[str, dict[str, Any]] = {
    # Official TD-DETR QVHighlights (td_detr/scripts/train.sh + config.py defaults): 4 TD /
    # 4 encoder / 4 decoder layers (the official code builds as many T2V layers as encoder
    # layers), alpha = beta = 0.7, bs 32, lr 1e-4, wd 1e-4, 200 epochs, LR /10 at epoch 80;
    # matching costs and loss weights L1 1, gIoU 10, class 4; saliency weight 1 on all three
    # saliency terms; early stop after 200 epochs without gain (i.e. never).
    "qvhighlights": dict(
        video_dim=2816, text_dim=512, max_video_len=75, max_query_len=32, clip_len=2.0,
        hidden_dim=256, num_heads=8, ffn_dim=1024, num_td_layers=4, num_encoder_layers=4,
        num_decoder_layers=4, num_queries=10, alpha=0.7, beta=0.7,
        lr=1e-4, weight_decay=1e-4, batch_size=32, epochs=200, lr_drop=80, early_stop_patience=200,
        w_span_l1=1.0, w_span_giou=10.0, w_class=4.0,
        w_saliency_margin=1.0, w_saliency_contrast=1.0, w_negative=1.0,
    ),
    # Official QD-DETR QVHighlights (its opt.json): 2/2/2 layers, no TDEM, no VSDC, LR drop at
    # 400 (never within 200 epochs), L1 10, gIoU 1, class 4.
    "qd-detr": dict(
        video_dim=2816, text_dim=512, max_video_len=75, max_query_len=32, clip_len=2.0,
        hidden_dim=256, num_heads=8, ffn_dim=1024, num_td_layers=2, num_encoder_layers=2,
        num_decoder_layers=2, num_queries=10, use_tdem=False, use_vsdc=False,
        lr=1e-4, weight_decay=1e-4, batch_size=32, epochs=200, lr_drop=400, early_stop_patience=200,
        w_span_l1=10.0, w_span_giou=1.0, w_class=4.0,
        w_saliency_margin=1.0, w_saliency_contrast=1.0, w_negative=1.0,
    ),
    # Official TD-DETR Charades-STA (td_detr/scripts/charadesSTA/train_charades.sh): 3/3/3
    # layers, lr 2e-4, 100 epochs, 1-s clips, saliency weight 4, L1 10, gIoU 1; no LR drop
    # (the config default 400). The script's max_v_l 100000 is no bucket limit: tdfast keeps
    # 75 and slides windows over longer videos.
    "charades": dict(
        video_dim=2816, text_dim=512, max_video_len=75, max_query_len=32, clip_len=1.0,
        hidden_dim=256, num_heads=8, ffn_dim=1024, num_td_layers=3, num_encoder_layers=3,
        num_decoder_layers=3, num_queries=10, alpha=0.7, beta=0.7,
        lr=2e-4, weight_decay=1e-4, batch_size=32, epochs=100, lr_drop=400, early_stop_patience=200,
        w_span_l1=10.0, w_span_giou=1.0, w_class=4.0,
        w_saliency_margin=4.0, w_saliency_contrast=4.0, w_negative=4.0, eval_protocol="charades",
    ),
    # Small and fast, for tests and the demo: same structure, small widths.
    "tiny": dict(
        video_dim=64, text_dim=32, max_video_len=32, max_query_len=16, clip_len=2.0,
        hidden_dim=32, num_heads=4, ffn_dim=64, num_td_layers=1, num_encoder_layers=1,
        num_decoder_layers=2, num_queries=5, dropout=0.1, input_dropout=0.1,
        lr=1e-3, weight_decay=1e-4, batch_size=16, epochs=30, lr_drop=1000,
        w_span_l1=10.0, w_span_giou=1.0,
    ),
}
