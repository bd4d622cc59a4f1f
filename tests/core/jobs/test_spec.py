from __future__ import annotations

import dataclasses
import json
import math

import pytest

from prunetune.errors import UsageError
from prunetune.jobs.spec import CompressSpec, JobSpec
from prunetune.searching.spec import SearchSpec
from prunetune.training.recipe import SCHEDULES, TrainRecipe


@pytest.mark.parametrize("spec_class", [CompressSpec, SearchSpec])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"teacher_epochs": -1}, "--teacher-epochs must be 0 or more, got -1"),
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"lr": 0.0}, "--lr must be a finite positive number, got 0.0"),
        ({"lr": math.inf}, "--lr must be a finite positive number, got inf"),
        ({"lr": math.nan}, "--lr must be a finite positive number, got nan"),
        ({"teacher_lr": -0.1}, "--teacher-lr must be a finite positive number, got -0.1"),
        ({"teacher_lr": math.inf}, "--teacher-lr must be a finite positive number, got inf"),
        ({"teacher_lr": math.nan}, "--teacher-lr must be a finite positive number, got nan"),
        ({"val_fraction": 1.0}, r"--val-fraction must be in \(0, 1\), got 1.0"),
        ({"val_fraction": math.nan}, r"--val-fraction must be in \(0, 1\), got nan"),
        ({"val_fraction": math.inf}, r"--val-fraction must be in \(0, 1\), got inf"),
        ({"schedule": "step"}, "--schedule must be one of cosine, onecycle, constant, got 'step'"),
        ({"nesterov": "yes"}, "--nesterov must be true or false, got 'yes'"),
    ],
)
def test_compress_and_search_refuse_the_shared_settings_alike(spec_class, changes, message):
    with pytest.raises(UsageError, match=message) as caught:
        spec_class(**changes)
    assert "\n" not in str(caught.value)


def test_both_specs_start_with_the_shared_settings_and_their_defaults():
    shared = [f.name for f in dataclasses.fields(JobSpec)]
    for spec_class in (CompressSpec, SearchSpec):
        fields = dataclasses.fields(spec_class)
        assert [f.name for f in fields[: len(shared)]] == shared
        assert {f.name: getattr(spec_class(), f.name) for f in fields[: len(shared)]} == {
            name: getattr(JobSpec(), name) for name in shared
        }


def test_a_search_spec_survives_its_json_file():
    spec = SearchSpec(model_options={"width": 4}, max_macs=0.3, objectives=("accuracy", "macs"), lr=0.05)
    assert SearchSpec.from_json(spec.to_json()) == spec


def test_the_students_recipe_defaults_are_the_one_cycle_nesterov_recipe():
    spec = JobSpec()
    assert (spec.schedule, spec.nesterov, spec.lr, spec.batch_size) == ("onecycle", True, 0.05, 128)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_a_spec_takes_makes_a_recipe(schedule):
    assert SearchSpec(schedule=schedule, nesterov=True).schedule == schedule
    assert TrainRecipe(schedule=schedule, nesterov=True).schedule == schedule


def test_a_search_spec_keeps_the_recipe_settings_in_its_json_file():
    spec = SearchSpec(schedule="cosine", nesterov=False)
    assert SearchSpec.from_json(spec.to_json()) == spec
    assert SearchSpec.from_json(SearchSpec().to_json()) == SearchSpec()


def test_a_search_json_from_before_the_recipe_settings_resumes_with_its_old_recipe():
    data = json.loads(SearchSpec(lr=0.02, batch_size=64).to_json())
    del data["schedule"], data["nesterov"]
    spec = SearchSpec.from_json(json.dumps(data))
    assert (spec.schedule, spec.nesterov, spec.lr, spec.batch_size) == ("cosine", False, 0.02, 64)
    assert dict(spec.distiller_options) == {"alpha": 0.9}  # hinton's default then


def test_an_old_search_json_keeps_the_distiller_options_it_set():
    data = json.loads(SearchSpec(distiller_options={"alpha": 0.3, "T": 2.0}).to_json())
    del data["schedule"], data["nesterov"]
    assert dict(SearchSpec.from_json(json.dumps(data)).distiller_options) == {"alpha": 0.3, "T": 2.0}
    data = json.loads(SearchSpec(distiller="attention").to_json())
    del data["schedule"], data["nesterov"]
    assert dict(SearchSpec.from_json(json.dumps(data)).distiller_options) == {}


def test_logits_and_classifier_are_checked_once_in_the_spec() -> None:
    spec = SearchSpec(logits="logits", classifier=["aux1.fc", "aux2.fc"])  # type: ignore[arg-type]
    assert spec.classifier == ("aux1.fc", "aux2.fc") and SearchSpec.from_json(spec.to_json()) == spec
    for bad in ({"logits": True}, {"logits": 1.5}, {"classifier": (1,)}, {"classifier": ("",)}):
        with pytest.raises(UsageError, match="--logits|--classifier"):
            JobSpec(**bad)  # type: ignore[arg-type]
