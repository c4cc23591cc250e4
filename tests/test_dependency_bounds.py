"""Every lower bound in pyproject.toml is a version CI runs: .ci/run's 'oldest' leg installs with
.ci/oldest.txt as constraints, so the two must name the same versions."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def _release(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", version)]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _lower_bounds() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    bounds = {}
    for spec in project["dependencies"] + extras["dev"]:
        found = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9.]+).*", spec)
        assert found, f"pyproject.toml: {spec!r} has no lower bound (>=)"
        bounds[found[1].lower()] = found[3]
    return bounds


def _oldest_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / ".ci" / "oldest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_lower_bound_is_pinned_in_the_oldest_ci_leg():
    bounds, pins = _lower_bounds(), _oldest_pins()
    assert set(bounds) == set(pins), (sorted(set(bounds) ^ set(pins)))
    for name, bound in bounds.items():
        assert _release(bound) == _release(pins[name]), f"{name}: pyproject >= {bound}, CI oldest == {pins[name]}"


def test_ci_installs_exactly_as_the_readme_says():
    """.ci/run's only install command is the README's, once plain and once constrained."""
    readme = (REPO / "README.md").read_text()
    assert readme.split("```bash\n", 1)[1].split("```", 1)[0] == 'pip install -e ".[dev]" && tdfast demo\npytest -q\n'
    installs = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if re.search(r"pip[^#]* install", line) and not line.strip().startswith("#")]
    assert installs == ['"$py" -m pip install -q --no-compile -e ".[dev]" "$@"'], installs
    assert re.findall(r"^leg .*$", (REPO / ".ci" / "run").read_text(), re.M) == [
        "leg newest", "leg oldest -c .ci/oldest.txt"]
