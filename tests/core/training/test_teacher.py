from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from prunetune.components.data import DataSplits, fingerprint_tensors
from prunetune.errors import UsageError
from prunetune.testing.distillers import TinyConvNet, tiny_problem
from prunetune.training import teacher as teacher_module
from prunetune.training.recipe import TrainRecipe
from prunetune.training.teacher import (
    CACHE_ENV,
    default_cache_dir,
    load_teacher_checkpoint,
    obtain_teacher,
    teacher_cache_key,
)

CPU = torch.device("cpu")
SPEC = {"name": "tiny", "options": {"widths": [8, 16]}}
RECIPE = TrainRecipe(epochs=1, batch_size=8)


def _data() -> DataSplits:
    x, y = tiny_problem(16)
    vx, vy = tiny_problem(8, seed=1)
    return DataSplits(x, y, vx, vy, vx, vy, 4, fingerprint_tensors(x, y, vx, vy))


def _build() -> TinyConvNet:
    torch.manual_seed(0)
    return TinyConvNet((8, 16))


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replaces teacher training (tested in test_train.py) by a counted, visible weight change."""
    calls: list[int] = []

    def fake_train(
        model: torch.nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any
    ) -> list[dict[str, Any]]:
        calls.append(len(x))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        model.train()
        return []

    monkeypatch.setattr(teacher_module, "train_supervised", fake_train)
    return calls


def test_cache_key_is_canonical_and_sensitive() -> None:
    key = teacher_cache_key(SPEC, "abc", RECIPE)
    assert len(key) == 64 and int(key, 16) >= 0
    reordered = {"options": {"widths": [8, 16]}, "name": "tiny"}
    assert teacher_cache_key(reordered, "abc", RECIPE) == key
    assert teacher_cache_key({**SPEC, "name": "other"}, "abc", RECIPE) != key
    assert teacher_cache_key(SPEC, "abd", RECIPE) != key
    assert teacher_cache_key(SPEC, "abc", dataclasses.replace(RECIPE, seed=1)) != key
    assert teacher_cache_key(SPEC, "abc", dataclasses.replace(RECIPE, nesterov=True)) != key


def test_cache_key_of_a_default_recipe_is_the_one_before_nesterov() -> None:
    # Teachers cached before TrainRecipe had `nesterov` keep their key (no retraining).
    recipe = {k: v for k, v in dataclasses.asdict(RECIPE).items() if k != "nesterov"}
    payload = {"format": 1, "model": SPEC, "data": "abc", "recipe": recipe}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert teacher_cache_key(SPEC, "abc", RECIPE) == expected


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "prunetune"


def test_trains_once_then_reuses_the_cache(tmp_path: Path, train_calls: list[int]) -> None:
    data = _data()
    first, source = obtain_teacher(
        _build, SPEC, data, RECIPE, CPU, cache_dir=tmp_path, progress=False
    )
    path = tmp_path / "teachers" / f"{teacher_cache_key(SPEC, data.fingerprint, RECIPE)}.pt"
    assert source == f"trained, cached at {path}" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left"
    assert not first.training and train_calls == [16], "trained once, on the training split"
    assert torch.equal(first.head.bias, _build().head.bias + 1.0)

    second, source = obtain_teacher(
        _build, SPEC, data, RECIPE, CPU, cache_dir=tmp_path, progress=False
    )
    assert source == f"cache {path}" and train_calls == [16]
    assert not second.training
    for k, v in first.state_dict().items():
        assert torch.equal(v, second.state_dict()[k])


def test_cache_dir_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_calls: list[int]
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    _, source = obtain_teacher(_build, SPEC, _data(), RECIPE, CPU, progress=False)
    assert source.startswith(f"trained, cached at {tmp_path / 'teachers'}")


def test_stale_cache_entry_is_retrained(tmp_path: Path, train_calls: list[int]) -> None:
    data = _data()
    path = tmp_path / "teachers" / f"{teacher_cache_key(SPEC, data.fingerprint, RECIPE)}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": TinyConvNet((2, 2)).state_dict()}, path)
    _, source = obtain_teacher(_build, SPEC, data, RECIPE, CPU, cache_dir=tmp_path, progress=False)
    assert source.startswith("trained") and train_calls == [16]


@pytest.mark.parametrize("wrapped", [False, True])
def test_checkpoint_is_loaded_not_trained(
    tmp_path: Path, train_calls: list[int], wrapped: bool
) -> None:
    trained = _build()
    state = trained.state_dict()
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": state, "epoch": 3} if wrapped else state, path)
    model, source = obtain_teacher(
        _build, SPEC, _data(), RECIPE, CPU, checkpoint=str(path), cache_dir=tmp_path, progress=False
    )
    assert source == f"checkpoint {path}" and train_calls == []
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_data_parallel_prefix_is_stripped(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in _build().state_dict().items()}
    torch.save(state, tmp_path / "dp.pt")
    load_teacher_checkpoint(_build(), tmp_path / "dp.pt", "tiny")


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"teacher checkpoint .*nope\.pt does not exist"):
        obtain_teacher(_build, SPEC, _data(), RECIPE, CPU, checkpoint=str(tmp_path / "nope.pt"))


def test_checkpoint_that_does_not_fit(tmp_path: Path) -> None:
    state = TinyConvNet((8, 16), num_classes=5).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["stage1.1.bias"]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(UsageError) as info:
        load_teacher_checkpoint(_build(), tmp_path / "other.pt", "tiny")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"teacher checkpoint {tmp_path / 'other.pt'} does not fit model tiny: "
    )
    assert "missing keys stage1.1.bias" in message and "unexpected extra.weight" in message
    assert "shape mismatch head.weight (5, 16) vs (4, 16)" in message


@pytest.mark.parametrize("content", ["garbage", "pickled module", "list"])
def test_unreadable_checkpoints(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.pt"
    if content == "garbage":
        path.write_bytes(b"not a torch file")
    elif content == "pickled module":
        torch.save(_build(), path)  # whole module: needs pickled code, refused by weights_only
    else:
        torch.save([torch.zeros(1)], path)
    with pytest.raises(UsageError, match="teacher checkpoint") as info:
        load_teacher_checkpoint(_build(), path, "tiny")
    assert "\n" not in str(info.value)
