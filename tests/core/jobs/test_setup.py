"""The job setup that compress, search and the benchmarks share."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from prunetune.components.data import DataSplits, fingerprint_tensors
from prunetune.errors import UsageError
from prunetune.jobs.setup import set_up_job
from prunetune.jobs.spec import JobSpec
from prunetune.training.recipe import TrainRecipe
from prunetune.training.teacher import teacher_cache_key

TINY = JobSpec(dataset_options={"limit": 120}, model_options={"width": 4}, teacher_epochs=0, progress=False)


def test_it_resolves_the_components_loads_the_data_and_builds_a_checked_model() -> None:
    setup, untrained = set_up_job(TINY, extra=[("search_space", "uniform", {})])
    assert set(setup.versions) == {"scorer.l1", "pruner.channel", "distiller.hinton", "search_space.uniform",
                                   "dataset.fashion_mnist_demo"}
    assert setup.model.input_shape == setup.data.input_shape and setup.model.num_classes == setup.data.num_classes
    assert untrained(setup.data.train_x[:3]).shape == (3, setup.data.num_classes)
    assert len(setup.calibration(torch.device("cpu"))) == 2  # 120 images, 10% held out: 108 -> 64 + 44


def test_the_teacher_cache_key_is_that_of_the_former_model_description() -> None:
    setup, _ = set_up_job(TINY)
    data = setup.data
    former = {"model": "resnet", "model_options": {"width": 4}, "input_shape": list(data.input_shape),
              "num_classes": data.num_classes}
    recipe = TrainRecipe(epochs=0, batch_size=TINY.batch_size, lr=TINY.teacher_lr, seed=TINY.seed)
    assert setup.teacher_recipe() == recipe
    assert teacher_cache_key(setup.model.meta(), data.fingerprint, recipe) == teacher_cache_key(former, data.fingerprint, recipe)


def test_bad_names_fail_before_any_data_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from prunetune.plugins.datasets.fashion_mnist_demo import FashionMnistDemo

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read before the names were checked")

    monkeypatch.setattr(FashionMnistDemo, "load", no_loading)
    for bad, message in [({"scorer": "nope"}, "nope"), ({"model": "nonet"}, "nonet"),
                         ({"teacher_checkpoint": "/no/such.pt"}, "does not exist")]:
        with pytest.raises(UsageError, match=message):
            set_up_job(dataclasses.replace(TINY, **bad))


def _data(n: int = 8) -> DataSplits:
    x, y = torch.randn(n, 1, 6, 6), torch.arange(n) % 3
    return DataSplits(x, y, x, y, x, y, 3, fingerprint_tensors(x, y))


def test_a_given_teacher_and_data_are_used_as_they_are() -> None:
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    setup, copy = set_up_job(TINY, data=_data(), teacher=teacher)
    assert copy is not teacher and type(setup.model.module) is type(teacher)
    assert "dataset.fashion_mnist_demo" not in setup.versions
    lines: list[str] = []
    got, source = setup.obtain_teacher(torch.device("cpu"), lines.append)
    assert got is not teacher and source == "given" and lines == ["teacher: given"]
    assert all(torch.equal(a, b) for a, b in zip(got.state_dict().values(), teacher.state_dict().values()))


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), r"outputs \(64,\) per image, expected \(3,\)"),
        (nn.Sequential(nn.Conv2d(5, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), "cannot take images of shape 1x6x6"),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_one_usage_error(teacher: nn.Module, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        set_up_job(TINY, data=_data(), teacher=teacher)
