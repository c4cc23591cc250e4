"""Reading jsonl submissions / annotations and writing metrics JSON.

``load_jsonl`` remembers which file line each record came from, so the
checks in ``tdfast.eval.parse`` can name ``file:line`` for a bad record
instead of a list index.
"""
from __future__ import annotations

import json
import os

from tdfast.atomic import atomic_write_bytes
from tdfast.errors import InputError
from tdfast.textfile import text_lines


class JsonlRecords(list):
    """A list of dicts read from a jsonl file; ``lines[i]`` is record i's 1-based line."""

    def __init__(self, records: list[dict], path: str, lines: list[int]):
        super().__init__(records)
        self.path = path
        self.lines = lines


def load_jsonl(path: str | os.PathLike) -> list[dict]:
    """One JSON object per line -> list of dicts. Blank lines are skipped; lines split as
    ``tdfast.textfile.text_lines`` splits them (as the annotation loader does).

    Raises InputError naming ``path:line`` for a line that is not UTF-8, not
    valid JSON or not a JSON object, and naming the file if it cannot be read.
    """
    path = str(path)
    records: list[dict] = []
    lines: list[int] = []
    for number, line in text_lines(path, "jsonl", hint="is this a jsonl file?"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(
                f"{path}:{number}: expected one JSON object per line, got invalid JSON ({e.msg} "
                f"at column {e.colno}): {line[:80]!r}"
            ) from e
        if not isinstance(record, dict):
            raise InputError(
                f"{path}:{number}: expected a JSON object per line, got {type(record).__name__}"
            )
        records.append(record)
        lines.append(number)
    return JsonlRecords(records, path, lines)


def record_label(records: list[dict], index: int, name: str) -> str:
    """Where record ``index`` came from: ``file:line`` if read by load_jsonl, else ``name[index]``."""
    if isinstance(records, JsonlRecords):
        return f"{records.path}:{records.lines[index]}"
    return f"{name}[{index}]"


def dumps(metrics: dict) -> str:
    """The metrics JSON text, laid out like the official evaluator's (indent 4)."""
    return json.dumps(metrics, indent=4)


def save_json(metrics: dict, path: str | os.PathLike) -> None:
    """Write ``dumps(metrics)`` to ``path`` atomically (temp file, fsync, rename)."""
    atomic_write_bytes(path, dumps(metrics).encode("utf-8"))
