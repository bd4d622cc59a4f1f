"""The set-up contract: make installs the locked versions, and the lock covers every dependency."""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"


def _locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"lock line {line!r} is not NAME==VERSION"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _requirement_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"],
                    *project["optional-dependencies"]["search"]]
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group(0)).lower() for r in requirements}  # type: ignore[union-attr]


def test_every_dependency_is_pinned_in_the_lock() -> None:
    assert _requirement_names() - set(_locked()) == set()


def test_make_installs_with_the_lock_as_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    install_lines = [line for line in makefile.splitlines() if "$(PY) -m pip install" in line]
    assert install_lines and all("-c $(LOCK)" in line for line in install_lines)
    assert "LOCK := requirements/lock.txt" in makefile


@pytest.mark.skipif(os.environ.get("PRUNETUNE_UNLOCKED") == "1", reason="make test-latest runs unlocked versions")
def test_the_suite_runs_with_the_locked_versions() -> None:
    pins = _locked()
    for name in sorted(_requirement_names()):
        installed = importlib.metadata.version(name).split("+")[0]
        assert installed == pins[name], f"{name} {installed} is installed, the lock says {pins[name]}: run make test"
