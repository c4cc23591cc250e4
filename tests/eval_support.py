"""Record builders for the evaluator tests (QVHighlights jsonl fields)."""
from __future__ import annotations


def gt(qid, windows, duration=150, clip_ids=(), scores=()):
    """A GT record: relevant_windows in seconds; saliency rows of 3 annotator scores per clip id."""
    return {"qid": qid, "duration": duration, "relevant_windows": [list(w) for w in windows],
            "relevant_clip_ids": list(clip_ids), "saliency_scores": [list(s) for s in scores]}


def pred(qid, windows=None, saliency=None):
    """A prediction record with pred_relevant_windows [[st, ed, score]] and/or pred_saliency_scores."""
    record = {"qid": qid}
    if windows is not None:
        record["pred_relevant_windows"] = [list(w) for w in windows]
    if saliency is not None:
        record["pred_saliency_scores"] = list(saliency)
    return record
