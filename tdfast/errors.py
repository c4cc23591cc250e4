"""User-facing errors."""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a wrong shape, dim, value or file.

    The message always names the argument (or file and line), what was
    expected and what was seen, so the caller can fix the input without
    reading tdfast's source.
    """


class BackendUnavailableError(RuntimeError):
    """A backend or optional dependency can't run on this machine.

    The message says what is missing and how to install or enable it.
    """
