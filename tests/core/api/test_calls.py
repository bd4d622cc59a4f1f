"""prunetune.compress, prunetune.search and prunetune.load on a live model and a DataLoader,
without any plugin or factory module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import prunetune
from prunetune.errors import UsageError
from prunetune.structure.measure import count_macs_params
from tests.core.toy import Residual


def _loader(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()  # 4 learnable classes
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _teacher() -> Residual:
    torch.manual_seed(0)
    return Residual().eval()


def test_compress_takes_a_module_and_a_dataloader_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = prunetune.compress(teacher, _loader(96, 0), _loader(32, 1), ratio=0.5, epochs=1, batch_size=16)
    assert isinstance(student, prunetune.Student)
    assert student.plan == prunetune.StudentPlan(ratio=0.5)
    teacher_macs, _ = count_macs_params(teacher, (3, 8, 8))
    assert student.teacher_metrics["macs"] == teacher_macs
    assert student.metrics["macs"] == count_macs_params(student.model, (3, 8, 8))[0] < teacher_macs
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items()), "the teacher is left as it was"
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_compress_takes_the_logits_of_a_module_returning_two_outputs(tmp_path: Path) -> None:
    from tests.core.patterns import TupleOut

    torch.manual_seed(0)
    teacher = TupleOut().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 12, 12, generator=g), torch.randint(0, 10, (96,), generator=g)
    student = prunetune.compress(teacher, (x, y), ratio=0.5, epochs=1, batch_size=32, logits=0,
                                 out=str(tmp_path / "s.pt"))
    assert not student.model.training  # as prunetune.load gives it: a forward pass moves no statistics
    assert student.model(x[:2]).shape == (2, 10) and student.model.aux_fc.out_features == 10
    again = prunetune.load(tmp_path / "s.pt", model=teacher)
    assert torch.equal(again.model(x[:4]), student.model(x[:4]))


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_a_student_exports_from_python(fmt: str, tmp_path: Path) -> None:
    from prunetune.jobs.export import run_exported

    student = prunetune.compress(_teacher(), _loader(64, 0), _loader(32, 1), ratio=0.5, epochs=1, batch_size=16)
    path = tmp_path / "student.bin"
    assert student.export(path, format=fmt) <= 1e-4
    x = torch.randn(5, 3, 8, 8)
    torch.testing.assert_close(run_exported(path, fmt, x), student.model(x), atol=1e-4, rtol=0)
    with pytest.raises(UsageError, match="unknown export format 'pickle'"):
        student.export(tmp_path / "s.pkl", format="pickle")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.bin"]


def test_messages_go_to_the_callback_only() -> None:
    lines: list[str] = []
    prunetune.compress(_teacher(), _loader(64, 0), ratio=0.25, epochs=0, callback=lines.append)
    assert lines == ["teacher: given"]


def test_a_saved_student_loads_back_with_its_teacher_object(tmp_path: Path) -> None:
    teacher = _teacher()
    student = prunetune.compress(teacher, _loader(64, 0), ratio=0.5, epochs=1)
    path = student.save(tmp_path / "student.pt")
    back = prunetune.load(path, model=teacher)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(back.model(x), student.model.eval()(x))
    assert back.plan == student.plan
    with pytest.raises(UsageError, match="handed over as a Python object"):
        prunetune.load(path)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: prunetune.compress("resnet", _loader(32, 0)), "teacher must be a torch nn.Module"),
        (lambda: prunetune.compress(_teacher(), "data.npz"), "train must be"),
        (lambda: prunetune.compress(_teacher(), _loader(32, 0), ratio=0.5, plan=prunetune.StudentPlan()), "plan or ratio"),
        (lambda: prunetune.compress(_teacher(), _loader(32, 0), learning_rate=0.1), "unknown setting(s) learning_rate"),
        (lambda: prunetune.compress(_teacher(), _loader(32, 0), val_fraction=float("nan")), "--val-fraction must be in"),
        (lambda: prunetune.compress(_teacher(), _loader(32, 0), teacher_checkpoint="t.pt"), "unknown setting(s) teacher_checkpoint"),
        (lambda: prunetune.search(_teacher(), _loader(32, 0), teacher_epochs=3), "unknown setting(s) teacher_epochs"),
        (lambda: prunetune.compress(_teacher(), _loader(32, 0), scorer="nope"), "nope"),
        (lambda: prunetune.compress(_teacher(), _loader(32, 0), ratio=1.5), "ratio"),
        (lambda: prunetune.search(_teacher(), _loader(32, 0), max_macs=2.0), "--max-macs"),
    ],
)
def test_bad_calls_raise_one_usage_error(call, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def test_search_takes_a_module_and_a_dataloader(tmp_path: Path, ray_cluster, capsys) -> None:  # type: ignore[no-untyped-def]
    teacher = _teacher()
    result = prunetune.search(teacher, _loader(96, 0), _loader(48, 1), max_macs=0.6, num_samples=2, epochs=1,
                              final_epochs=1, batch_size=16, runs=tmp_path / "runs", leaderboard=tmp_path / "board")
    assert isinstance(result, prunetune.SearchResult)
    assert len(result.trials) == 2 and {r["status"] for r in result.trials} == {"ok"}
    best = result.best
    assert best is not None and (result.run_dir / "best_student.pt").is_file()
    teacher_macs, _ = count_macs_params(teacher, (3, 8, 8))
    assert best.metrics["macs"] <= 0.6 * teacher_macs
    assert result.run_id.startswith("object-tests-core-toy-Residual-given-")
    assert capsys.readouterr().out == ""
