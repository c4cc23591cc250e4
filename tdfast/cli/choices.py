"""argparse choices read from the table that defines them, when first needed.

The tables (export formats, Retriever backends, dtypes, autocast dtypes) live in modules
that import torch, which ``tdfast --help`` must not pay for; ``TableKeys`` imports the
module only when argparse checks a value or formats an error.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator


class TableKeys:
    """The keys of ``module.attr`` (a dict) as argparse ``choices``."""

    def __init__(self, module: str, attr: str) -> None:
        self.module, self.attr = module, attr

    def _names(self) -> list[str]:
        return list(getattr(importlib.import_module(self.module), self.attr))

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())
