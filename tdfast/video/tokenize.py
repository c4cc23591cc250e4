"""CLIP's BPE tokenizer with QD-DETR run_on_video's truncation.

The BPE itself comes from ``instant-clip-tokenizer`` (it bundles OpenAI's vocabulary and
reproduces OpenAI's BPE; a wheel with no dependency but numpy). OpenAI's text cleaning
before the BPE (``ftfy.fix_text``, HTML entities unescaped twice, whitespace collapsed) is
done here, since that package skips the first two (``&amp;`` would become three tokens). run_on_video's
modified ``clip.tokenize`` keeps at most ``max_valid_length`` = 32 tokens including the
start and end tokens: ``[<sot>] + bpe(text)[:30] + [<eot>]``.
"""
from __future__ import annotations

import functools
import html
import re

import torch
from torch import Tensor

from tdfast.errors import BackendUnavailableError, InputError

SOT, EOT = 49406, 49407
MAX_VALID_LENGTH = 32  # run_on_video's clip.tokenize default


@functools.lru_cache(maxsize=1)
def _bpe():  # noqa: ANN202
    try:
        import instant_clip_tokenizer
    except ImportError:
        raise BackendUnavailableError("the CLIP tokenizer needs instant-clip-tokenizer: "
                                      "pip install 'tdfast[video]'") from None
    return instant_clip_tokenizer.Tokenizer()


def clean(text: str) -> str:
    """OpenAI CLIP's ``whitespace_clean(basic_clean(text)).lower()``."""
    try:
        import ftfy
    except ImportError:
        raise BackendUnavailableError("the CLIP tokenizer needs ftfy: pip install 'tdfast[video]'") from None
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def tokenize(texts: list[str], max_valid_length: int = MAX_VALID_LENGTH) -> tuple[Tensor, list[int]]:
    """Sentences -> (token ids [N, T] int64, zero-padded to the longest, valid lengths [N]).

    InputError for a query that is not a string or has no word in it.
    """
    rows = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"queries[{i}]: expected a string, got {type(text).__name__}")
        body = _bpe().encode(clean(text))
        if not body:
            raise InputError(f"queries[{i}]: expected a sentence, got {text!r} (no token in it)")
        rows.append([SOT, *body[: max_valid_length - 2], EOT])
    lengths = [len(r) for r in rows]
    ids = torch.zeros(len(rows), max(lengths, default=0), dtype=torch.long)
    for row, r in zip(ids, rows):
        row[: len(r)] = torch.tensor(r)
    return ids, lengths
