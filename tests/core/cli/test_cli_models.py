"""Models with several outputs on the command line: the logits named, the heads kept, reloaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from prunetune.cli import main

TINY = ["--dataset-opt", "limit=256", "--teacher-epochs", "1", "--epochs", "1", "--batch-size", "64",
        "--device", "cpu", "--quiet", "--ratio", "0.5"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_model_returning_two_outputs_needs_its_logits_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "s.pt"
    code, out, err = _run(capsys, "compress", "--model", "tests.core.patterns:TupleOut", "--out", str(out_file), *TINY)
    assert code == 2 and not out_file.exists()
    assert err.count("\n") == 1 and "returns 2 outputs: name the logits with --logits" in err


@pytest.mark.parametrize("model", ["TupleOut", "Aux"])
def test_the_named_logits_train_compress_and_reload(model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file, spec = tmp_path / "s.pt", f"tests.core.patterns:{model}"
    code, out, err = _run(capsys, "compress", "--model", spec, "--logits", "0", "--classifier", "aux_conv",
                          "--out", str(out_file), *TINY)
    assert code == 0, err
    saved = re.search(r"test accuracy \(%\)\s+\S+\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    code, evaluated, err = _run(capsys, "evaluate", str(out_file), "--model", spec, "--device", "cpu")
    assert code == 0, err
    assert re.search(r"test accuracy \(%\)\s+(\S+)\s+(\S+)", evaluated).groups() == (saved, saved)  # type: ignore[union-attr]


def test_a_classifier_that_is_no_layer_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "compress", "--model", "tests.core.patterns:TupleOut", "--logits", "0",
                        "--classifier", "nope", "--out", str(tmp_path / "s.pt"), *TINY)
    assert code == 2 and err == "prunetune: error: --classifier names no layer of the model: nope\n"
