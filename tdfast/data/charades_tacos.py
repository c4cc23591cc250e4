"""Convert Charades-STA and TACoS annotations to the Moment-DETR jsonl format.

- Charades-STA: text lines ``<vid> <start> <end>##<sentence>`` (seconds).
  Charades has no durations in these files: pass ``durations`` {vid: seconds}
  (e.g. the ``length`` column of ``Charades_v1_{train,test}.csv``, or
  ``num_clips * clip_len`` of your features).
- TACoS: the common json ``{vid: {"timestamps": [[s, e], ...], "sentences": [...],
  "num_frames": N, "fps": F}}`` (2D-TAN / VSLNet layout); timestamps are frame
  indices, so seconds = frame / fps and duration = num_frames / fps unless
  ``durations`` gives it. A ``.avi`` suffix on keys is stripped by default so
  ``vid`` matches feature files named ``s13-d21.npz``.

qids: consecutive integers from ``first_qid`` in file order (TACoS: videos in
json order, then sentences in order). Skipped entries do not consume a qid.
Extract query features under the same qids (``qid<qid>.npz``).

Both public datasets have windows that overshoot the video; as in 2D-TAN,
windows are clamped to [0, duration] (counted in ``clamped``) and entries
whose clamped window is empty or inverted are skipped (listed in ``skipped``
with file, line or key, and reason). Malformed input raises ``InputError``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tdfast.data.annotations import Annotation, iter_lines, write_annotations
from tdfast.errors import InputError


@dataclass
class Conversion:
    """Converted records, entries skipped ("where: reason") and the number of clamped windows."""

    records: list[Annotation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    clamped: int = 0

    def add(self, where: str, vid: str, query: str, duration: float, start: float, end: float,
            qid: int) -> bool:
        """Clamp and append one entry; False (and a ``skipped`` line) if its window is empty."""
        st, ed = max(start, 0.0), min(end, duration)
        if st >= ed:
            self.skipped.append(f"{where}: window [{start}, {end}] s is empty inside "
                                f"[0, duration={duration}] s")
            return False
        self.clamped += int((st, ed) != (start, end))
        self.records.append(Annotation(qid=qid, query=query, vid=vid, duration=duration,
                                       windows=((st, ed),), source=where))
        return True


def _duration(durations: Mapping[str, float], vid: str, where: str) -> float:
    if vid not in durations:
        raise InputError(f"{where}: no duration for video {vid!r}; pass durations={{vid: seconds}} "
                         f"covering every video ({len(durations)} given)")
    d = float(durations[vid])
    if not d > 0:
        raise InputError(f"{where}: duration of {vid!r}: expected seconds > 0, got {d!r}")
    return d


def convert_charades(txt_path: str | os.PathLike, durations: Mapping[str, float],
                     out_path: str | os.PathLike | None = None, first_qid: int = 0) -> Conversion:
    """Charades-STA ``vid start end##sentence`` lines -> records (written to ``out_path`` if given)."""
    out = Conversion()
    for where, _, line in iter_lines(txt_path, "charades"):
        head, sep, sentence = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3:
            raise InputError(f"{where}: expected 'vid start end##sentence', got {line.strip()!r}")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise InputError(f"{where}: expected numeric start and end seconds, got "
                             f"{parts[1]!r} {parts[2]!r}") from None
        if not sentence.strip():
            raise InputError(f"{where}: expected a sentence after '##', got an empty one")
        vid = parts[0]
        qid = first_qid + len(out.records)
        out.add(where, vid, sentence.strip(), _duration(durations, vid, where), start, end, qid)
    if out_path is not None:
        write_annotations(out.records, out_path)
    return out


def _tacos_video(entry: Any, where: str) -> tuple[list, list, float]:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object with timestamps, sentences, num_frames, fps")
    missing = [k for k in ("timestamps", "sentences", "num_frames", "fps") if k not in entry]
    if missing:
        raise InputError(f"{where}: missing key(s) {missing}, got keys {sorted(entry)}")
    stamps, sentences, fps = entry["timestamps"], entry["sentences"], float(entry["fps"])
    if not isinstance(stamps, list) or not isinstance(sentences, list) or len(stamps) != len(sentences):
        raise InputError(f"{where}: expected one timestamp per sentence, got "
                         f"{len(stamps) if isinstance(stamps, list) else stamps!r} timestamps and "
                         f"{len(sentences) if isinstance(sentences, list) else sentences!r} sentences")
    if not fps > 0:
        raise InputError(f"{where}: fps: expected > 0, got {entry['fps']!r}")
    return stamps, sentences, fps


def convert_tacos(json_path: str | os.PathLike, out_path: str | os.PathLike | None = None,
                  first_qid: int = 0, durations: Mapping[str, float] | None = None,
                  strip_suffix: str = ".avi") -> Conversion:
    """TACoS json (timestamps in frames) -> records (written to ``out_path`` if given)."""
    path = Path(json_path)
    if not path.is_file():
        raise InputError(f"tacos: file {str(path)!r} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object {{vid: {{...}}}}, got {type(data).__name__}")
    out = Conversion()
    for key, entry in data.items():
        vid = key[: -len(strip_suffix)] if strip_suffix and key.endswith(strip_suffix) else key
        stamps, sentences, fps = _tacos_video(entry, f"{path}: video {key!r}")
        duration = (_duration(durations, vid, f"{path}: video {key!r}") if durations is not None
                    else float(entry["num_frames"]) / fps)
        for k, (stamp, sentence) in enumerate(zip(stamps, sentences)):
            where = f"{path}: video {key!r} timestamps[{k}]"
            if not (isinstance(stamp, list) and len(stamp) == 2
                    and all(isinstance(x, (int, float)) for x in stamp)):
                raise InputError(f"{where}: expected [start_frame, end_frame], got {stamp!r}")
            if not isinstance(sentence, str) or not sentence.strip():
                raise InputError(f"{where}: expected a non-empty sentence, got {sentence!r}")
            qid = first_qid + len(out.records)
            out.add(where, vid, sentence.strip(), duration, stamp[0] / fps, stamp[1] / fps, qid)
    if out_path is not None:
        write_annotations(out.records, out_path)
    return out
