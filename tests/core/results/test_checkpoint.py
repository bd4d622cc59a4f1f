from __future__ import annotations

import json

import pytest
import torch

from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.results.checkpoint import load_student, save_student
from prunetune.structure.plan import StudentPlan
from prunetune.student.surgery import build_student


def _student(pruner: str):  # type: ignore[no-untyped-def]
    registry = Host.create(environ={}).registry
    teacher = registry.create("model", "resnet", {"width": 4}).build(1, 10, 28)
    plan = StudentPlan(ratio=0.5, kernels={"layer1.0.conv1": 5})
    student, record = build_student(
        teacher, plan, registry.create("pruner", pruner), registry.create("scorer", "l1"),
        torch.zeros(1, 1, 28, 28),
    )
    meta = {"model": "resnet", "model_options": {"width": 4}, "input_shape": [1, 28, 28],
            "num_classes": 10, "plan": plan.to_dict(), "pruner": pruner, "record": record.to_dict()}
    return registry, student, meta


@pytest.mark.parametrize("pruner", ["channel", "mask"])
def test_round_trip_gives_the_same_outputs(tmp_path, pruner: str) -> None:  # type: ignore[no-untyped-def]
    registry, student, meta = _student(pruner)
    path = tmp_path / "s.pt"
    save_student(path, student, meta)
    loaded, loaded_meta = load_student(registry, path)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(loaded(x), student.eval()(x), atol=1e-6)
    assert loaded_meta == meta
    assert loaded.layer1[0].conv1.kernel_size == (5, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary file left behind


def test_the_file_loads_without_unpickling_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, student, meta = _student("channel")
    save_student(tmp_path / "s.pt", student, meta)
    payload = torch.load(tmp_path / "s.pt", weights_only=True)
    assert set(payload) == {"format", "meta", "state_dict"}
    assert json.loads(payload["meta"])["pruner"] == "channel"


def test_weights_that_do_not_fit_the_plan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry, student, meta = _student("channel")
    meta["record"]["removed"] = {}  # claims nothing was pruned; the weights say otherwise
    save_student(tmp_path / "s.pt", student, meta)
    with pytest.raises(UsageError, match="does not fit its plan"):
        load_student(registry, tmp_path / "s.pt")


def test_missing_or_foreign_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = Host.create(environ={}).registry
    with pytest.raises(UsageError, match="does not exist"):
        load_student(registry, tmp_path / "nope.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(UsageError, match="not a prunetune student"):
        load_student(registry, tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(UsageError, match="not a readable prunetune student"):
        load_student(registry, tmp_path / "junk.pt")
