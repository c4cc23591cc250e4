"""The evaluation protocols by name: ``tdfast eval --mode`` and ``TrainConfig.eval_protocol``
choose one of ``PROTOCOLS`` (torch-free, like the rest of ``tdfast.eval``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tdfast.eval.charades import eval_charades
from tdfast.eval.qvhighlights import eval_submission


@dataclass(frozen=True)
class Protocol:
    """How a split is scored: ``evaluate`` (submission, ground truth) -> metrics with a
    ``brief`` dict; ``select``: the ``brief`` keys best-checkpoint selection maximizes, compared
    in order (later keys break ties); ``highlights``: whether it scores saliency predictions."""

    evaluate: Callable[[list[dict], list[dict]], dict]
    select: tuple[str, ...]
    highlights: bool


PROTOCOLS = {  # the first is the default; QVHighlights selects by the paper's main number
    "qvhighlights": Protocol(eval_submission, ("MR-full-mAP",), highlights=True),
    "charades": Protocol(eval_charades, ("MR-full-R1@0.5", "MR-full-mIoU"), highlights=False),
}
DEFAULT_PROTOCOL = next(iter(PROTOCOLS))
