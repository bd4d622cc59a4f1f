"""``prunetune export``: each format computes the student's logits to 1e-4, or nothing is written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from prunetune.cli import main
from prunetune.cli.parser import EXPORT_FORMATS
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.jobs.export import FORMATS, TOLERANCE, export_student, run_exported
from prunetune.results.checkpoint import load_student

TINY = ["--dataset-opt", "limit=128", "--teacher-epochs", "1", "--epochs", "1", "--batch-size", "64",
        "--device", "cpu", "--quiet", "--ratio", "0.5"]
STUDENTS = {"resnet": ["--model-opt", "width=4", "--kernel", "layer1.0.conv1=5"],
            "tests.core.patterns:TupleOut": ["--logits", "0"],
            "tests.core.patterns:Grouped": []}
ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime", "onnxscript"))


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder, out = tmp_path_factory.mktemp("students"), {}
    for model, extra in STUDENTS.items():
        out[model] = folder / f"{model.replace(':', '-')}.pt"
        assert main(["compress", "--model", model, *extra, "--out", str(out[model]), *TINY]) == 0
    return out


def test_the_parser_offers_the_formats_there_are() -> None:
    assert EXPORT_FORMATS == tuple(FORMATS)


@pytest.mark.parametrize("fmt", [f if f != "onnx" or ONNX else pytest.param(
    f, marks=pytest.mark.skip(reason="onnx, onnxruntime or onnxscript is not installed")) for f in FORMATS])
@pytest.mark.parametrize("model", list(STUDENTS))
def test_an_export_computes_the_students_logits(fmt: str, model: str, students: dict[str, Path],
                                                tmp_path: Path) -> None:
    factory = model if ":" in model else None
    done = export_student(str(students[model]), fmt, out=str(tmp_path / f"s{FORMATS[fmt]}"), model=factory)
    assert Path(done["path"]).is_file() and done["max_abs_diff"] <= TOLERANCE
    net, meta = load_student(Host.create().registry, str(students[model]), factory)
    x = torch.randn(5, *meta["input_shape"])
    with torch.no_grad():
        torch.testing.assert_close(run_exported(done["path"], fmt, x), net.eval()(x), atol=TOLERANCE, rtol=0)


def test_the_command_writes_beside_the_student_by_default(students: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", str(students["resnet"]), "--format", "torchscript"])
    out, err = capsys.readouterr()
    written = students["resnet"].with_suffix(".ts.pt")
    assert code == 0 and written.is_file() and out.startswith(f"wrote {written} (torchscript)"), err


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "pickle"], "invalid choice: 'pickle'"),
    (["--format", "torchscript", "--out", "{student}"], "would overwrite the student"),
])
def test_bad_exports_are_one_line_and_write_nothing(args: list[str], message: str, students: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    student = str(students["resnet"])
    before = sorted(students["resnet"].parent.iterdir())
    with pytest.raises(SystemExit) if args[1] == "pickle" else _no_raise():
        code = main(["export", student, *[a.format(student=student) for a in args]])
        assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(students["resnet"].parent.iterdir()) == before


def test_onnx_without_its_packages_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                        students: dict[str, Path]) -> None:
    real = importlib.util.find_spec
    absent = {"onnx", "onnxruntime", "onnxscript"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    needs = r"--format onnx needs onnx, onnxruntime, onnxscript: pip install 'prunetune\[onnx\]'"
    with pytest.raises(UsageError, match=needs):
        export_student(str(students["resnet"]), "onnx")
    assert not students["resnet"].with_suffix(".onnx").exists()


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
