"""Read and write Moment-DETR / QVHighlights annotation jsonl.

One query a line::

    {"qid": 2579, "query": "...", "vid": "NUsG9BgSes0_210.0_360.0", "duration": 150,
     "relevant_windows": [[82, 150]],                      # seconds, optional
     "relevant_clip_ids": [41, 42, ...],                    # optional, with saliency_scores
     "saliency_scores": [[1, 1, 2], [1, 1, 3], ...]}        # one row per relevant clip

Labels are optional (QVHighlights test files have none). Every problem raises
``InputError`` naming the file and 1-based line number.

Windows may overshoot ``[0, duration]`` by at most ``WINDOW_SLACK`` seconds
(float round-off from frame counts); such windows are clamped to the video.
Anything further outside is an error: the real QVHighlights files have no
such window, and Charades-STA / TACoS quirks are handled in ``convert``.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import InputError
from tdfast.textfile import text_lines

WINDOW_SLACK = 1e-6  # seconds a window may lie outside [0, duration] before it is an error
REQUIRED_KEYS = ("qid", "query", "vid", "duration")


@dataclass(frozen=True)
class Annotation:
    """One query.

    ``windows``: relevant moments as (start, end) seconds, ``None`` when the
    record has no labels. ``relevant_clip_ids`` (clip indices on the
    annotation's clip grid) and ``saliency_scores`` (one row of annotator
    scores per relevant clip) come together or not at all. ``source`` is
    ``"file:line"`` for error messages.
    """

    qid: int | str
    query: str
    vid: str
    duration: float
    windows: tuple[tuple[float, float], ...] | None = None
    relevant_clip_ids: tuple[int, ...] | None = None
    saliency_scores: tuple[tuple[float, ...], ...] | None = None
    source: str = "<memory>"

    @property
    def has_labels(self) -> bool:
        return self.windows is not None

    def to_json_dict(self) -> dict[str, Any]:
        """The jsonl record (labels only where present); inverse of ``parse_record``."""
        d: dict[str, Any] = {"qid": self.qid, "query": self.query, "vid": self.vid,
                             "duration": self.duration}
        if self.windows is not None:
            d["relevant_windows"] = [list(w) for w in self.windows]
        if self.relevant_clip_ids is not None:
            d["relevant_clip_ids"] = list(self.relevant_clip_ids)
            d["saliency_scores"] = [list(s) for s in self.saliency_scores or ()]
        return d


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_windows(value: Any, duration: float, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: relevant_windows: expected a non-empty list of [start, end] "
                         f"pairs in seconds, got {value!r}")
    out = []
    for k, w in enumerate(value):
        if not (isinstance(w, list) and len(w) == 2 and all(_is_number(x) for x in w)):
            raise InputError(f"{where}: relevant_windows[{k}]: expected [start, end] numbers, got {w!r}")
        st, ed = float(w[0]), float(w[1])
        if st > ed:
            raise InputError(f"{where}: relevant_windows[{k}]: expected start <= end, got "
                             f"start={st} > end={ed}")
        if st < -WINDOW_SLACK or ed > duration + WINDOW_SLACK:
            raise InputError(f"{where}: relevant_windows[{k}]: expected a window inside "
                             f"[0, duration={duration}] seconds, got [{st}, {ed}]")
        out.append((max(st, 0.0), min(ed, duration)))
    return tuple(out)


def _parse_saliency(rec: dict, where: str) -> tuple[tuple[int, ...] | None, tuple | None]:
    has_ids, has_scores = "relevant_clip_ids" in rec, "saliency_scores" in rec
    if not has_ids and not has_scores:
        return None, None
    if has_ids != has_scores:
        missing = "saliency_scores" if has_ids else "relevant_clip_ids"
        raise InputError(f"{where}: relevant_clip_ids and saliency_scores come together; "
                         f"missing key {missing!r}")
    ids, scores = rec["relevant_clip_ids"], rec["saliency_scores"]
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                            and i >= 0 for i in ids):
        raise InputError(f"{where}: relevant_clip_ids: expected a list of clip indices >= 0, got {ids!r}")
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: relevant_clip_ids: expected unique clip indices, got {ids!r}")
    if not isinstance(scores, list) or len(scores) != len(ids):
        n = len(scores) if isinstance(scores, list) else type(scores).__name__
        raise InputError(f"{where}: saliency_scores: expected one row per relevant clip "
                         f"({len(ids)} rows), got {n}")
    widths = set()
    for k, row in enumerate(scores):
        if not (isinstance(row, list) and row and all(_is_number(x) for x in row)):
            raise InputError(f"{where}: saliency_scores[{k}]: expected a non-empty list of "
                             f"annotator scores, got {row!r}")
        widths.add(len(row))
    if len(widths) > 1:
        raise InputError(f"{where}: saliency_scores: expected the same number of annotators in "
                         f"every row, got row lengths {sorted(widths)}")
    return tuple(ids), tuple(tuple(row) for row in scores)  # ints stay ints on a round trip


def parse_record(rec: Any, where: str = "<memory>") -> Annotation:
    """Validate one decoded jsonl record -> ``Annotation``; ``where`` is ``file:line``."""
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise InputError(f"{where}: missing key(s) {missing}; a record needs {list(REQUIRED_KEYS)}, "
                         f"got keys {sorted(rec)}")
    qid, query, vid, duration = rec["qid"], rec["query"], rec["vid"], rec["duration"]
    if isinstance(qid, bool) or not isinstance(qid, (int, str)) or qid == "":
        raise InputError(f"{where}: qid: expected an int or non-empty string, got {qid!r}")
    if not isinstance(query, str):
        raise InputError(f"{where}: query: expected a string, got {query!r}")
    if not isinstance(vid, str) or not vid:
        raise InputError(f"{where}: vid: expected a non-empty string, got {vid!r}")
    if not _is_number(duration) or duration <= 0:
        raise InputError(f"{where}: duration: expected seconds > 0, got {duration!r}")
    duration = float(duration)
    windows = None
    if "relevant_windows" in rec:
        windows = _parse_windows(rec["relevant_windows"], duration, where)
    ids, scores = _parse_saliency(rec, where)
    if ids is not None and windows is None:
        raise InputError(f"{where}: relevant_clip_ids given without relevant_windows")
    return Annotation(qid=qid, query=query, vid=vid, duration=duration, windows=windows,
                      relevant_clip_ids=ids, saliency_scores=scores, source=where)


def iter_lines(path: str | os.PathLike, what: str) -> Iterator[tuple[str, int, str]]:
    """Non-blank lines of a UTF-8 text file as (``"file:line"``, line number, text without
    newline); InputError naming ``what`` (e.g. "annotations") if the file is missing, and
    naming the file and line if it is not UTF-8."""
    for lineno, line in text_lines(path, what):
        yield f"{path}:{lineno}", lineno, line


def load_annotations(path: str | os.PathLike) -> list[Annotation]:
    """Read a jsonl annotation file -> one ``Annotation`` per non-blank line, in file order.

    Raises ``InputError`` (file and line in the message) for a missing file,
    malformed JSON, missing keys, bad windows or saliency, and duplicate qids.
    """
    out: list[Annotation] = []
    first_line: dict[Any, int] = {}
    for where, lineno, line in iter_lines(path, "annotations"):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        ann = parse_record(rec, where)
        if ann.qid in first_line:
            raise InputError(f"{where}: qid {ann.qid!r} already used on line "
                             f"{first_line[ann.qid]}; qids must be unique")
        first_line[ann.qid] = lineno
        out.append(ann)
    return out


def write_annotations(records: Iterable[Annotation | dict], path: str | os.PathLike) -> Path:
    """Write records as jsonl, atomically. Returns the path."""
    lines = [json.dumps(r.to_json_dict() if isinstance(r, Annotation) else r) + "\n" for r in records]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))
    return Path(path)
