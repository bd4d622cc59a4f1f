"""The README's examples stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from prunetune.components.scoring import ScoreContext
from prunetune.structure.groups import find_groups

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_plugin_example_scores_every_group_of_a_zoo_model() -> None:
    code = re.search(r"```python\n(# mypkg/scorer.py.*?)```", README.read_text(), re.S).group(1)  # type: ignore[union-attr]
    namespace: dict[str, object] = {}
    exec(compile(code, "README-example", "exec"), namespace)
    scorer = namespace["MeanAbsScorer"](None)  # type: ignore[operator]
    from prunetune.plugins.models.mobilenet import MobileNetFactory

    model = MobileNetFactory(MobileNetFactory.Config()).build(1, 10, 28)
    example = torch.zeros(1, 1, 28, 28)
    groups = find_groups(model, example)
    scores = scorer.score_groups(groups, ScoreContext(model, example))
    assert all(scores[g.name].shape == (g.size,) and torch.isfinite(scores[g.name]).all() for g in groups)


def test_the_readme_shows_the_two_setup_commands_and_the_makefile_has_them() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
    makefile = (README.parent / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
