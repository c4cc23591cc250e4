"""Module attributes imported on first use (PEP 562), so light modules don't pay for torch."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_getattr(module: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``table`` (public name -> module that defines it):
    the first lookup imports the defining module and caches the value in ``module``."""
    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        setattr(sys.modules[module], name, value)  # later lookups skip this function
        return value

    return __getattr__
