"""A search under a MACs budget on models of the real-architecture patterns, reloaded exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prunetune.cli import main


@pytest.mark.parametrize(("model", "extra"), [("Grouped", []), ("GhostResidual", []), ("Aux", ["--logits", "0"])])
def test_a_budgeted_search_keeps_a_student_that_reloads(  # type: ignore[no-untyped-def]
        model: str, extra: list[str], tmp_path: Path, ray_cluster, capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"tests.core.patterns:{model}"
    code = main(["search", "--model", spec, *extra, "--runs", str(tmp_path / "runs"), "--leaderboard",
                 str(tmp_path / "board"), "--name", "p", "--max-macs", "0.5", "--num-samples", "2",
                 "--dataset-opt", "limit=256", "--teacher-epochs", "1", "--epochs", "1", "--final-epochs", "1",
                 "--address", ray_cluster.address, "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    student = tmp_path / "runs" / "p" / "best_student.pt"
    assert main(["evaluate", str(student), "--model", spec, "--device", "cpu"]) == 0
    accuracy = re.search(r"test accuracy \(%\)\s+(\S+)\s+(\S+)", capsys.readouterr().out)
    assert accuracy is not None and accuracy.group(1) == accuracy.group(2)
