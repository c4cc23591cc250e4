"""Evaluation with the official QVHighlights numbers, and Charades-STA / TACoS metrics."""
from tdfast.eval.charades import eval_charades
from tdfast.eval.io import dumps, load_jsonl, save_json
from tdfast.eval.qvhighlights import eval_submission

__all__ = ["dumps", "eval_charades", "eval_submission", "load_jsonl", "save_json"]
