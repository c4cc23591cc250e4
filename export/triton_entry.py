"""Triton Python-backend entry point (``model.py`` of the served moments model).

Copied verbatim into the repository by ``tdfast.export.triton_python``. Triton's stub
runs an isolated interpreter that ignores ``PYTHONPATH``; ``tdfast serve`` passes the
launching environment's site-packages in ``TDFAST_SITE_PACKAGES`` instead, put first
on ``sys.path`` (with their ``.pth`` files, so editable installs resolve) before numpy,
torch or tdfast are imported. Where tdfast is installed in the server's own Python
(the full Triton image), the variable is absent and nothing changes.
"""
import os
import site
import sys


def _use_site_packages() -> None:
    before = list(sys.path)
    for directory in filter(None, os.environ.get("TDFAST_SITE_PACKAGES", "").split(os.pathsep)):
        site.addsitedir(directory)
    sys.path[:] = [p for p in sys.path if p not in before] + before


_use_site_packages()

from tdfast.export.triton_backend import TritonPythonModel  # noqa: E402,F401
