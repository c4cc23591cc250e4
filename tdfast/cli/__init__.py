"""The ``tdfast`` command line: one subcommand per module in this package.

Each command module defines ``register(subparsers)``, which adds its parser
and sets ``func`` to a function taking the parsed ``argparse.Namespace`` and
returning an exit code. Heavy imports happen inside those functions so that
``tdfast --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from tdfast.errors import BackendUnavailableError, InputError

# Order here is the order in ``tdfast --help``.
COMMAND_MODULES = [
    "demo",
    "train",
    "predict",
    "eval",
    "convert",
    "export",
    "serve",
    "bench",
    "analyze",
    "ablate",
]


def build_parser() -> argparse.ArgumentParser:
    from tdfast import __version__

    parser = argparse.ArgumentParser(prog="tdfast", description="TD-DETR moment retrieval, fast.")
    parser.add_argument("--version", action="version", version=f"tdfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"tdfast.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, BackendUnavailableError) as e:
        print(f"tdfast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a file-size limit, no permission: the file and the reason
        print(f"tdfast {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2


def describe_os_error(e: OSError) -> str:
    """``<file>: <reason> (errno NAME)`` for an OSError, on one line."""
    import errno

    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    code = f" ({errno.errorcode.get(e.errno, e.errno)})" if e.errno is not None else ""
    return f"{where or 'a file'}: {e.strerror or e}{code}"


if __name__ == "__main__":
    sys.exit(main())
