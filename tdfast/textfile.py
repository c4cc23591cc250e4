"""UTF-8 text files read line by line, errors naming ``file:line`` (annotations, submissions).

One reader for every jsonl file tdfast takes (``tdfast.data.annotations``, ``tdfast.eval``),
so a file one command accepts is never rejected by another: lines end at ``\\n``, ``\\r\\n``
or ``\\r`` only, as a text-mode file splits them. ``str.splitlines`` would also split at
U+2028, U+0085 and other characters that JSON allows unescaped inside a string.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

from tdfast.errors import InputError


def decode_utf8(data: bytes, path: str | os.PathLike, hint: str = "") -> str:
    """``data`` (the bytes of ``path``) as text; InputError ``path:line: expected UTF-8 text,
    got byte 0x..`` at the first byte that is not UTF-8, with `` (hint)`` appended if given."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        suffix = f" ({hint})" if hint else ""
        raise InputError(f"{path}:{line}: expected UTF-8 text, got byte "
                         f"0x{data[e.start]:02x}{suffix}") from None


def text_lines(path: str | os.PathLike, what: str, hint: str = "") -> Iterator[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file as (1-based line number, text without its
    line end). InputError naming ``what`` (e.g. "annotations") and the file if it cannot be
    read, naming the file and line (and ``hint``) if it is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what}: file {str(path)!r} not found") from None
    except OSError as e:
        raise InputError(f"{what}: cannot read {str(path)!r} ({e.strerror or e})") from None
    text = decode_utf8(data, path, hint)
    # StringIO with newline=None splits lines exactly as a text-mode file does.
    for number, line in enumerate(io.StringIO(text, newline=None), start=1):
        if line.strip():
            yield number, line.rstrip("\n")
