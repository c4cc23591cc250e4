"""UTF-8 text files whose decoding errors name ``file:line`` (annotations, submissions)."""
from __future__ import annotations

import os

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
