"""Installed distributions made on the fly, for plugin tests: a module plus its ``.dist-info``."""

from __future__ import annotations

from pathlib import Path


def install_distribution(root: Path, name: str, version: str, module: str, source: str, entry: str) -> None:
    """Make ``root`` a site folder holding distribution ``name`` ``version``.

    Its module ``module`` (``source``) is the ``prunetune`` entry point ``entry``, found by
    ``importlib.metadata`` as any installed package once ``root`` is on ``sys.path`` (or, for
    another process, on ``PYTHONPATH``).
    """
    root.mkdir()
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[prunetune]\n{entry} = {module}\n")
