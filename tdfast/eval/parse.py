"""Check submission / ground-truth records and turn them into padded arrays.

Every check raises ``InputError`` naming the record (``file:line`` when
the records came from ``load_jsonl``, else ``submission[i]``), the field,
what was expected and what was seen. Inputs on which the official
evaluator crashes or computes 0/0 (empty window lists, end < start,
zero-length GT windows, NaN, clip ids outside the video) are rejected
here, so everything that gets through is scored exactly as the official
code scores it.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from tdfast.errors import InputError
from tdfast.eval.io import record_label

SUBMISSION = "submission"
GROUND_TRUTH = "ground_truth"
MAX_GT_CLIPS = 10_000  # clips per GT video in highlight eval (5.5 h of 2-s clips); tables are padded to the longest


def _field(records: list[dict], i: int, name: str, key: str):
    if key not in records[i]:
        raise InputError(f"{record_label(records, i, name)}: missing field {key!r}")
    return records[i][key]


def _as_array(value) -> np.ndarray | None:
    """A JSON list as an array; None for a non-list or ragged rows."""
    if not isinstance(value, (list, tuple)):
        return None
    try:
        return np.asarray(value)
    except ValueError:
        return None


def _number_matrix(value, where: str, cols: int | None, what: str, exact: bool = False) -> np.ndarray:
    """A non-empty list of rows of ``cols`` (or more, unless ``exact``) finite numbers.

    Returns float64 [N, cols] (extra columns dropped), or [N, C] when ``exact``
    or ``cols`` is None (any C >= 1).
    """
    return _checked_matrix(_as_array(value), value, where, cols, what, exact)


def _number_vector(value, where: str, what: str) -> np.ndarray:
    """A non-empty list of finite numbers -> float64 [N]."""
    arr = _as_array(value)
    return _checked_matrix(None if arr is None else arr[None], value, where, None, what, False)[0]


def _checked_matrix(arr: np.ndarray | None, value, where: str, cols: int | None, what: str,
                    exact: bool) -> np.ndarray:
    seen = _Shown(value)  # formatted only if an error message needs it
    min_cols = cols or 1
    if (arr is None or arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < min_cols
            or (exact and arr.shape[1] != cols)):
        raise InputError(f"{where}: expected a non-empty list of {what}, got {seen}")
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{where}: expected numbers in {what}, got {seen}")
    arr = arr.astype(np.float64) if exact or cols is None else arr[:, :cols].astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: expected finite numbers, got NaN/inf in {seen}")
    return arr


class _Shown:
    """A value as an error message shows it: str, cut to 80 characters."""

    def __init__(self, value):
        self.value = value

    def __str__(self) -> str:
        return str(self.value)[:80]


def _pad(rows: list[np.ndarray], fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Ragged [n_i, *rest] arrays -> padded [Q, max n_i, *rest] and mask [Q, max n_i] (True = real)."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width) + rows[0].shape[1:], fill, dtype=np.float64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for q, r in enumerate(rows):
        out[q, : len(r)] = r
        mask[q, : len(r)] = True
    return out, mask


def qids_of(records: list[dict], name: str) -> list[Hashable]:
    """The qid of every record; rejects missing, unhashable and duplicate qids."""
    qids: list[Hashable] = []
    seen: dict[Hashable, int] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"{record_label(records, i, name)}: expected a dict, got {type(record).__name__}")
        qid = _field(records, i, name, "qid")
        if not isinstance(qid, Hashable) or isinstance(qid, (float, bool)):
            raise InputError(f"{record_label(records, i, name)}: qid must be an int or str, got {qid!r}")
        if qid in seen:
            raise InputError(
                f"{record_label(records, i, name)}: duplicate qid {qid!r} "
                f"(first at {record_label(records, seen[qid], name)}); each query must appear once"
            )
        seen[qid] = i
        qids.append(qid)
    return qids


def match_qids(
    submission: list[dict], ground_truth: list[dict], match_number: bool
) -> tuple[list[int], list[int]]:
    """Pair submission and GT records by qid, in submission order -> (sub indices, gt indices).

    With ``match_number`` the two qid sets must be equal (as in the official
    evaluator); without it only the shared qids are kept.
    """
    if len(submission) == 0:
        raise InputError("submission: expected at least one prediction record, got none")
    sub_qids = qids_of(submission, SUBMISSION)
    gt_index = {qid: i for i, qid in enumerate(qids_of(ground_truth, GROUND_TRUTH))}
    if match_number:
        sub_set = set(sub_qids)
        missing = [q for q in gt_index if q not in sub_set]
        extra = [q for q in sub_qids if q not in gt_index]
        if missing or extra:
            raise InputError(
                "qids in submission and ground_truth must match: "
                f"{len(missing)} GT qids have no prediction (e.g. {missing[:5]}), "
                f"{len(extra)} predicted qids are not in the GT (e.g. {extra[:5]}); "
                "pass --allow-partial (match_number=False) to score only the shared qids"
            )
    pairs = [(i, gt_index[q]) for i, q in enumerate(sub_qids) if q in gt_index]
    if not pairs:
        raise InputError("submission and ground_truth share no qid; nothing to evaluate")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def pred_windows(
    submission: list[dict], indices: Sequence[int], need_score: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pred_relevant_windows`` -> spans [Q, K, 2] (s), scores [Q, K], mask [Q, K].

    K is the longest list; rows keep the submission's order (not sorted).
    Without ``need_score`` a window may be just [start, end] (score 0).
    """
    rows = []
    cols, what = (3, "[start, end, score] windows") if need_score else (2, "[start, end, ...] windows")
    for i in indices:
        where = f"{record_label(submission, i, SUBMISSION)}: pred_relevant_windows"
        w = _number_matrix(_field(submission, i, SUBMISSION, "pred_relevant_windows"), where, cols, what)
        if not need_score:
            w = np.concatenate([w, np.zeros((len(w), 1))], axis=1)
        bad = np.flatnonzero(w[:, 1] < w[:, 0])
        if len(bad):
            raise InputError(f"{where}[{bad[0]}]: expected end >= start, got {w[bad[0], :2].tolist()}")
        rows.append(w)
    padded, mask = _pad(rows, 0.0)
    return padded[..., :2], padded[..., 2], mask


def gt_windows(
    ground_truth: list[dict], indices: Sequence[int], allow_zero_length: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``relevant_windows`` -> spans [Q, G, 2] (s) and mask [Q, G].

    Zero-length GT windows are rejected unless ``allow_zero_length``: the
    official mAP divides 0 by 0 for them and counts the NaN as a match.
    """
    rows = []
    for i in indices:
        where = f"{record_label(ground_truth, i, GROUND_TRUTH)}: relevant_windows"
        w = _number_matrix(_field(ground_truth, i, GROUND_TRUTH, "relevant_windows"), where, 2,
                           "[start, end] windows")
        bad = np.flatnonzero(w[:, 1] < w[:, 0] if allow_zero_length else w[:, 1] <= w[:, 0])
        if len(bad):
            op = ">=" if allow_zero_length else ">"
            raise InputError(f"{where}[{bad[0]}]: expected end {op} start, got {w[bad[0]].tolist()}")
        rows.append(w)
    return _pad(rows, 0.0)


def pred_saliency(submission: list[dict], indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``pred_saliency_scores`` -> scores [Q, P] (-inf padded) and lengths [Q] (clips)."""
    rows = []
    for i in indices:
        where = f"{record_label(submission, i, SUBMISSION)}: pred_saliency_scores"
        value = _field(submission, i, SUBMISSION, "pred_saliency_scores")
        rows.append(_number_vector(value, where, "saliency scores (one per clip)"))
    padded, mask = _pad(rows, -np.inf)
    return padded, mask.sum(1)


def gt_saliency(
    ground_truth: list[dict], indices: Sequence[int], clip_len: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """GT clip scores -> [Q, N, 3] (0..4, 0 outside ``relevant_clip_ids``) and clip counts [Q].

    A video has ``int(duration / clip_len)`` clips, as in the official code; more than
    ``MAX_GT_CLIPS`` is an InputError naming the file and line (a duration of 1e15 s asked
    for petabytes).
    """
    scores, counts = [], []
    for i in indices:
        where = record_label(ground_truth, i, GROUND_TRUTH)
        duration = _field(ground_truth, i, GROUND_TRUTH, "duration")
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= clip_len:
            raise InputError(f"{where}: duration must be a number >= clip length {clip_len} s, got {duration!r}")
        if not duration / clip_len < MAX_GT_CLIPS + 1:  # the [n, 3] score table is allocated per query
            raise InputError(f"{where}: duration {duration!r} s is {duration / clip_len:.3g} clips of "
                             f"{clip_len} s; at most {MAX_GT_CLIPS} clips are evaluated (a QVHighlights "
                             f"video has 75)")
        n = int(duration / clip_len)
        value = _field(ground_truth, i, GROUND_TRUTH, "relevant_clip_ids")
        ids = _as_array(value)
        if ids is None or ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise InputError(f"{where}: relevant_clip_ids must be a list of ints, got {str(value)[:80]}")
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise InputError(f"{where}: relevant_clip_ids must lie in [0, {n}) for duration {duration}, "
                             f"got {ids.min()}..{ids.max()}")
        full = np.zeros((n, 3))
        if ids.size:
            rel = _number_matrix(_field(ground_truth, i, GROUND_TRUTH, "saliency_scores"),
                                 f"{where}: saliency_scores", 3, "3 annotator scores per clip", exact=True)
            if len(rel) != ids.size:
                raise InputError(f"{where}: saliency_scores must be {ids.size} rows of 3 scores "
                                 f"(one row per relevant clip id)")
            full[ids] = rel
        scores.append(full)
        counts.append(n)
    padded, _ = _pad(scores, 0.0)
    return padded, np.asarray(counts)
