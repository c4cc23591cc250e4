"""``TrainConfig``: how a TD-DETR is trained (data synthesis, optimizer, losses, validation).

The network's config (``TDDETRConfig``, what a checkpoint's ``config.json`` holds) and this
one are named by the same presets; ``tdfast train --set k=v`` takes a field of either
(``RunConfig``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tdfast.errors import InputError
from tdfast.presets import DEFAULT_PROTOCOL, PROTOCOLS
from tdfast.model.config import ConfigBase, TDDETRConfig, check_ranges, check_unit_interval, parse_assignments


INF = float("inf")
# (least, most) of each numeric training setting. 0 means "off" for lr_drop (no LR drop),
# early_stop_patience (never stop), grad_clip (no clipping); lr 0 is a frozen run (tests of
# early stopping use it). Upper bounds only where a typo would run unbounded work.
TRAIN_LIMITS: dict[str, tuple[float, float]] = {
    "vsdc_topk": (1, 1 << 12), "lr": (0, INF), "weight_decay": (0, INF), "batch_size": (1, 1 << 16),
    "epochs": (1, 1 << 20), "lr_drop": (0, INF), "grad_clip": (0, INF), "early_stop_patience": (0, INF),
    "w_span_l1": (0, INF), "w_span_giou": (0, INF), "w_class": (0, INF), "w_saliency_margin": (0, INF),
    "w_saliency_contrast": (0, INF), "w_negative": (0, INF), "w_dyn_match": (0, INF), "saliency_margin": (0, INF),
    "vsdc_strip_gate": (0, INF),
    "num_saliency_pairs": (1, 1 << 10),
}


@dataclass
class TrainConfig(ConfigBase):
    """Training settings. Presets: ``TrainConfig.from_name(name)``; the official values are in
    docs/training.md."""

    PART = "training"
    # TD-DETR's training-side switches (paper Table 4 rows: with use_tdem of the network)
    use_vsdc: bool = True
    use_negative_pair: bool = True
    alpha: float = 0.7  # VSDC: keep-probability of the anchor video's non-GT tokens
    vsdc_topk: int = 5  # VSDC: clip dot products averaged per video pair
    # VSDC, opt-in (not in the paper or the official code): put the anchor's GT clips inside the
    # partner's clips, so the moment's neighbours are new context (docs/fidelity.md, section 3)
    vsdc_moment_in_context: bool = False
    # VSDC, opt-in (not in the paper or the official code): the probability that a synthesized
    # sample's moment clips take the look of the partner's clips (mean shifted), keeping their
    # temporal differences, so that sample's moment is marked by its dynamics, not its look
    # (docs/fidelity.md, section 5); 0 = off
    vsdc_strip_look: float = 0.0
    # VSDC, opt-in schedule of vsdc_strip_look: the fraction of the epochs, from the start, in which
    # every synthesized sample is stripped (p = 1) before p falls to vsdc_strip_look, so the
    # dynamics are learned before the look is shown (docs/fidelity.md, section 5); 0 = off
    vsdc_strip_all_first: float = 0.0
    # VSDC, opt-in gate of the strip-look: strip a sample's moment only where its clips show
    # dynamics, i.e. their von Neumann ratio (vsdc.moment_dynamics_ratio: mean squared
    # clip-to-clip change / twice their variance; ~1 for independent clips, > 1 when consecutive
    # clips alternate) exceeds this threshold; 0 = off (every drawn sample is stripped)
    vsdc_strip_gate: float = 0.0
    # optimisation
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 200
    lr_drop: int = 400  # epoch of the 10x LR drop
    grad_clip: float = 0.1
    early_stop_patience: int = 10  # epochs without gain in the val selection metric; 0 = never stop
    # per-epoch validation (tdfast.presets.PROTOCOLS): "qvhighlights" (official QVHighlights metrics,
    # best by MR-full-mAP) or "charades" (Charades-STA / TACoS R1@{0.3,0.5,0.7} and mIoU, best by
    # R1@0.5 then mIoU)
    eval_protocol: str = DEFAULT_PROTOCOL
    # loss / matching coefficients (the matcher uses the same ones)
    aux_loss: bool = True  # the moment losses on every decoder layer, not just the last
    w_span_l1: float = 10.0
    w_span_giou: float = 1.0
    w_class: float = 4.0
    eos_coef: float = 0.1
    w_saliency_margin: float = 1.0
    w_saliency_contrast: float = 1.0
    w_negative: float = 1.0
    # opt-in (not in the paper or the official code; needs dyn_null_slot): weight of a loss that
    # asks the dynamics attention to attend to the query on the moment's clips and to its null
    # slot elsewhere, so A_t localizes (docs/fidelity.md, section 5); 0 = off
    w_dyn_match: float = 0.0
    saliency_margin: float = 0.2
    num_saliency_pairs: int = 2  # margin loss: hard and easy (pos, neg) clip pairs per sample, each

    def validate(self) -> None:
        """Raise InputError for values training can't run with."""
        super().validate()
        check_ranges(self, TRAIN_LIMITS)
        check_unit_interval(self, ("alpha", "eos_coef", "vsdc_strip_look", "vsdc_strip_all_first"))
        if self.eval_protocol not in PROTOCOLS:
            raise InputError(f"config.eval_protocol: expected one of {list(PROTOCOLS)}, "
                             f"got {self.eval_protocol!r}")
        if self.vsdc_strip_gate > 0 and self.vsdc_strip_look == 0 and self.vsdc_strip_all_first == 0:
            raise InputError(f"config.vsdc_strip_gate: expected 0 without a strip-look (vsdc_strip_look or "
                             f"vsdc_strip_all_first > 0), got {self.vsdc_strip_gate!r}")


@dataclass(frozen=True)
class RunConfig:
    """A network and its training settings: what a preset names and ``--set`` edits.

    Flat as a dict (``to_dict`` / ``from_dict``): each field belongs to exactly one of the two
    configs, so a key says which one it sets.
    """

    model: TDDETRConfig
    training: TrainConfig

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "RunConfig":
        """Preset ``name`` (both parts) with flat ``overrides``."""
        return cls(TDDETRConfig.from_name(name), TrainConfig.from_name(name)).replace(**overrides)

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.to_dict(), **self.training.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        return cls(TDDETRConfig(), TrainConfig()).replace(**d)

    def replace(self, **changes: Any) -> "RunConfig":
        """These configs with flat ``changes``; an unknown key is an InputError naming both sets."""
        _check_known(changes)
        model = {k: v for k, v in changes.items() if k in TDDETRConfig.field_names()}
        training = {k: v for k, v in changes.items() if k in TrainConfig.field_names()}
        return RunConfig(TDDETRConfig.from_dict({**self.model.to_dict(), **model}),
                         TrainConfig.from_dict({**self.training.to_dict(), **training}))

    def override(self, assignments: list[str]) -> "RunConfig":
        """Apply ``--set key=value`` items to whichever config has the field."""
        pairs = parse_assignments(assignments)
        _check_known(dict(pairs))
        mine = {part: [f"{k}={v}" for k, v in pairs if k in cls.field_names()]
                for part, cls in (("model", TDDETRConfig), ("training", TrainConfig))}
        return RunConfig(self.model.override(mine["model"]), self.training.override(mine["training"]))


def _check_known(keys: Any) -> None:
    unknown = sorted(set(keys) - TDDETRConfig.field_names() - TrainConfig.field_names())
    if unknown:
        raise InputError(f"--set: unknown config field(s) {unknown}; network fields: "
                         f"{sorted(TDDETRConfig.field_names())}; training fields: "
                         f"{sorted(TrainConfig.field_names())}")
