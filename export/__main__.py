"""``python -m tdfast.export CKPT --format ... --out DIR``: the same command as ``tdfast export``."""
from __future__ import annotations

import argparse
import sys

from tdfast.cli.export import add_arguments, run
from tdfast.errors import BackendUnavailableError, InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdfast.export",
                                     description="Export a tdfast checkpoint (ONNX, TensorRT, Triton).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (InputError, BackendUnavailableError) as e:
        print(f"tdfast export: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
