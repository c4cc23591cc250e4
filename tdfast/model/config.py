"""``TDDETRConfig``: the network, what a checkpoint's ``config.json`` holds; ``ConfigBase``,
which it shares with ``tdfast.training.TrainConfig`` (presets by name from ``tdfast.presets``,
JSON, ``key=value`` overrides)."""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, TypeVar

from tdfast.errors import InputError
from tdfast.presets import PRESETS

C = TypeVar("C", bound="ConfigBase")


class ConfigBase:
    """Shared by the two config dataclasses: type-checked fields, presets by name, JSON and
    ``key=value`` overrides. ``PART`` is the key of a preset's entry this class reads."""

    PART = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, f.type, getattr(self, f.name))

    @classmethod
    def from_name(cls: type[C], name: str, **overrides: Any) -> C:
        """A named preset (``qvhighlights``, ``qd-detr``, ``charades``, ``tiny``) with optional overrides."""
        if name not in PRESETS:
            raise InputError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
        return cls.from_dict({**PRESETS[name][cls.PART], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        unknown = sorted(set(d) - cls.field_names())
        if unknown:
            raise InputError(f"config: unknown field(s) {unknown} for {cls.__name__}; known fields are "
                             f"{sorted(cls.field_names())}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str, source: str = "config.json") -> C:
        """Parse JSON text; ``source`` names the file in errors."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{source}: malformed JSON ({e})") from None
        if not isinstance(d, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d)

    def override(self: C, assignments: list[str]) -> C:
        """Apply ``key=value`` strings (CLI ``--set``); values parsed as JSON, else as strings."""
        d = self.to_dict()
        for key, raw in parse_assignments(assignments):
            if key not in d:
                raise InputError(f"--set: unknown config field {key!r}; known: {sorted(d)}")
            d[key] = _parse_value(raw, type(d[key]), key)
        return type(self).from_dict(d)


def parse_assignments(assignments: list[str]) -> list[tuple[str, str]]:
    """``["k=v", ...]`` -> [(key, raw value)]; InputError for an item without ``=``."""
    out = []
    for a in assignments:
        if "=" not in a:
            raise InputError(f"--set: expected key=value, got {a!r}")
        key, raw = a.split("=", 1)
        out.append((key.strip(), raw.strip()))
    return out


@dataclass
class TDDETRConfig(ConfigBase):
    """The network: everything that rebuilds it and prepares its inputs, nothing about training.
    Presets: ``TDDETRConfig.from_name(name)``.

    Units: ``clip_len`` in seconds; ``max_video_len`` in clips;
    ``max_query_len`` in tokens. ``video_dim`` is the width of the feature
    files (several dirs concatenated); the two temporal-endpoint features
    (``use_tef``) are added inside the model on top of it.
    """

    PART = "model"
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
    # TDEM (off: the official QD-DETR T2V layer)
    use_tdem: bool = True
    beta: float = 0.7  # weight of the residual V in the merge beta*V + (1-beta)*A_t + A_v
    # Opt-in TDEM variant (not in the paper or the official code; docs/fidelity.md, section 5).
    # Off: the official network, bit-identical. Both need use_tdem.
    flow_keep_magnitude: bool = False  # flow_proj's first unit without LayerNorm: |T| reaches A_t
    dyn_null_slot: bool = False  # the dynamics attention may attend to nothing (a zero key/value)
    # Training only (eval outputs unchanged): the dropout masks on the clip tokens that a temporal
    # difference is taken of are shared by all clips of a video (layers.TimeLockedDropout)
    time_locked_dropout: bool = False

    def validate(self) -> None:
        """Raise InputError for values the model can't be built with."""
        super().validate()
        check_ranges(self, SIZE_LIMITS)
        if self.hidden_dim % self.num_heads:
            raise InputError(f"config.hidden_dim: expected a multiple of num_heads={self.num_heads}, "
                             f"got {self.hidden_dim}")
        if self.hidden_dim % 4:  # the anchor sine embedding gives each coordinate D/2 sin/cos pairs
            raise InputError(f"config.hidden_dim: expected a multiple of 4, got {self.hidden_dim}")
        check_unit_interval(self, ("beta", "dropout", "input_dropout"))
        for name in VARIANT_FIELDS:
            if getattr(self, name) and not self.use_tdem:
                raise InputError(f"config.{name}: expected false with use_tdem=false (it changes the "
                                 f"dynamics branch, which QD-DETR has not), got true")
        if self.clip_len <= 0:
            raise InputError(f"config.clip_len: expected seconds > 0, got {self.clip_len!r}")

    @property
    def model_video_dim(self) -> int:
        """Width the input projection sees: file features + 2 TEF columns if ``use_tef``."""
        return self.video_dim + (2 if self.use_tef else 0)


# The opt-in TDEM variant's switches (all default off); kernels and the ablation read this list.
VARIANT_FIELDS = ("flow_keep_magnitude", "dyn_null_slot")
# Opt-in switches that change training only (eval outputs, export and fused kernels unchanged).
TRAINING_ONLY_FIELDS = ("time_locked_dropout",)

# Sizes a network field may take: (least, most). The upper bounds are far above any published
# TD-DETR / QD-DETR / Moment-DETR setting (widths 256-2816, <= 6 layers, 10-30 queries, 75-256
# clips) and there so a typo such as num_queries=1000000000 is refused at once instead of
# building for minutes or exhausting memory (checkpoints are also checked against their tensors).
# The two lengths size no tensor (inputs are as long as their data; untruncated loading uses
# a huge max_video_len): no upper bound.
SIZE_LIMITS: dict[str, tuple[float, float]] = {
    "video_dim": (1, 1 << 16), "text_dim": (1, 1 << 16), "max_video_len": (1, math.inf),
    "max_query_len": (1, math.inf), "hidden_dim": (1, 1 << 13), "num_heads": (1, 256),
    "ffn_dim": (1, 1 << 20), "num_td_layers": (0, 64), "num_encoder_layers": (0, 64),
    "num_decoder_layers": (1, 64), "num_queries": (1, 1 << 12), "num_input_proj": (1, 16),
}


def check_ranges(config: Any, limits: dict[str, tuple[float, float]]) -> None:
    """InputError naming the first field of ``config`` outside its ``(least, most)``."""
    for name, (low, high) in limits.items():
        v = getattr(config, name)
        if not low <= v <= high:
            raise InputError(f"config.{name}: expected a value in [{low:g}, {high:g}], got {v!r}")


def check_unit_interval(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(config, name)
        if not 0.0 <= float(v) <= 1.0:
            raise InputError(f"config.{name}: expected a value in [0, 1], got {v!r}")


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
    if typ is int:  # int() would truncate 7.9 to 7: only whole numbers are integers
        if (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and float(value).is_integer()):
            return int(value)
        raise InputError(f"--set {key}: expected an integer, got {raw!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise InputError(f"--set {key}: expected a number, got {raw!r}")
    return value
