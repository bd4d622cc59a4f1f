"""Every built-in search space, run through real Optuna trials on a small zoo ResNet."""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
import warnings

import optuna
import pytest

from prunetune.components.selection import group_ratios
from prunetune.components.spaces import Candidate, DefineByRun, SearchSpace
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.structure.groups import find_groups
from prunetune.structure.kernels import apply_kernels

SPACES = ["per_layer", "uniform", "ratio_only", "kernel_only"]
CHOICES = {"scorers": ("l1", "l2"), "distillers": ("hinton", "none"), "search_temperature": True}


def point(space, structure, candidate):
    """``candidate`` as the point a search would evaluate."""
    return DefineByRun(space, structure).point(candidate)


def make_space(name: str, **options: object) -> SearchSpace:
    registry = Registry()
    importlib.import_module(f"prunetune.search_spaces.{name}").prunetune_add_components(registry)
    return registry.create("search_space", name, options)


def expected_names(name, structure, choices=True):
    ratios = {f"ratio:{g}" for g in structure.groups}
    kernels = {f"kernel:{c}" for c in structure.kernels}
    names = {"per_layer": ratios | kernels, "uniform": {"ratio"}, "ratio_only": ratios, "kernel_only": kernels}[name]
    return names | ({"scorer", "distiller", "T", "alpha"} if choices else set())


def check_plan(teacher, example, params):
    """The plan ``params`` describe names real groups and convs of ``teacher``."""
    candidate = Candidate.from_params(params)
    student = copy.deepcopy(teacher)
    apply_kernels(student, candidate.plan.kernels)
    ratios = group_ratios(find_groups(student, example), candidate.plan)
    return candidate, ratios


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("name", SPACES)
def test_module_registers_its_space(name):
    module = importlib.import_module(f"prunetune.search_spaces.{name}")
    registry = Registry()
    module.prunetune_add_components(registry)
    assert registry.names("search_space") == [name]
    assert registry.get("search_space", name).description
    assert isinstance(make_space(name), SearchSpace)
    with pytest.raises(UsageError, match="no option"):
        make_space(name, bogus="1")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("per_layer", {"max_ratio": "1.0"}),
        ("per_layer", {"kernel_sizes": "3,4"}),
        ("uniform", {"ratio_step": "0.9"}),
        ("ratio_only", {"scorers": "l1,l1"}),
        ("kernel_only", {"ratio": "1.0"}),
    ],
)
def test_bad_options_are_refused(name, options):
    with pytest.raises(UsageError):
        make_space(name, **options)


@pytest.mark.parametrize("name", SPACES)
def test_trials_give_valid_plans_with_stable_names(name, teacher, example, structure):
    space = make_space(name, **CHOICES)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            trial = study.ask()
            space.suggest(trial, structure)
            study.tell(trial, 0.0)
    for trial in study.trials:
        assert set(trial.params) == expected_names(name, structure)
        assert trial.distributions == study.trials[0].distributions
        candidate, ratios = check_plan(teacher, example, trial.params | space.constants())
        assert set(ratios) == set(structure.groups)
        assert all(0.0 <= r <= 0.8 for r in ratios.values())
        assert candidate.scorer in CHOICES["scorers"]
        assert candidate.distiller in CHOICES["distillers"]
        assert set(candidate.distiller_options) == {"T", "alpha"}
        assert 1.0 <= candidate.distiller_options["T"] <= 8.0


@pytest.mark.parametrize("name", SPACES)
def test_without_choices_only_the_plan_is_searched(name, structure):
    trial = optuna.create_study().ask()
    make_space(name).suggest(trial, structure)
    assert set(trial.params) == expected_names(name, structure, choices=False)


@pytest.mark.parametrize("name", ["per_layer", "uniform", "ratio_only"])
def test_ratios_stay_on_the_step_grid(name, structure):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    space = make_space(name, max_ratio="0.5", ratio_step="0.1")
    for _ in range(3):
        trial = study.ask()
        space.suggest(trial, structure)
        study.tell(trial, 0.0)
    values = [v for t in study.trials for k, v in t.params.items() if k.startswith("ratio")]
    assert all(0.0 <= v <= 0.5 and abs(v * 10 - round(v * 10)) < 1e-6 for v in values)


@pytest.mark.parametrize("name", ["per_layer", "uniform", "ratio_only"])
def test_baseline_is_the_uniform_plan_with_the_teacher_kernels(name, teacher, example, structure):
    space = make_space(name, **CHOICES)
    baseline = point(space, structure, space.baseline(structure, 0.33))
    study = optuna.create_study()
    study.enqueue_trial(baseline)
    trial = study.ask()
    with warnings.catch_warnings():
        # A baseline outside its distribution would warn ("out of range").
        warnings.simplefilter("error")
        space.suggest(trial, structure)
    assert trial.params == baseline
    candidate, ratios = check_plan(teacher, example, baseline | space.constants())
    assert set(ratios.values()) == {0.3}  # down: the trial's budget repair raises it to the exact ratio
    assert not candidate.plan.kernels or dict(candidate.plan.kernels) == dict(structure.kernels)
    assert (candidate.scorer, candidate.distiller) == ("l1", "hinton")
    assert dict(candidate.distiller_options) == {"T": 4.0, "alpha": 0.5}


@pytest.mark.parametrize("name", ["per_layer", "ratio_only"])
def test_with_ratios_gives_each_group_its_ratio_on_the_grid(name, teacher, example, structure):
    space = make_space(name, max_ratio="0.5", ratio_step="0.1")
    first, second, *rest = structure.groups
    params = point(space, structure, space.with_ratios(structure, {first: 0.12, second: 0.7}))
    trial = optuna.trial.FixedTrial(params)
    space.suggest(trial, structure)  # a point the space itself could suggest
    assert trial.params == params
    _, ratios = check_plan(teacher, example, params)
    assert (ratios[first], ratios[second]) == (0.1, 0.5)  # down onto the grid; clipped to its top
    assert all(ratios[g] == 0.0 for g in rest)
    assert space.baseline(structure, 0.33) == space.with_ratios(structure, dict.fromkeys(structure.groups, 0.33))


@pytest.mark.parametrize("name", ["uniform", "kernel_only"])
def test_spaces_without_group_ratios_give_no_seeded_point(name, structure):
    assert make_space(name).with_ratios(structure, dict.fromkeys(structure.groups, 0.5)) is None


def test_per_layer_baseline_takes_the_nearest_kernel_size(structure):
    plan = make_space("per_layer", kernel_sizes="5,7").baseline(structure, 0.9).plan
    assert set(plan.kernels.values()) == {5} and set(plan.kernels) == set(structure.kernels)
    assert set(plan.ratios.values()) == {0.8} and set(plan.ratios) == set(structure.groups)


def test_kernel_only_fixes_its_ratio_as_a_constant(teacher, example, structure):
    space = make_space("kernel_only", ratio="0.25")
    assert space.constants() == {"ratio": 0.25}
    baseline = point(space, structure, space.baseline(structure, 0.5))
    assert "ratio" not in baseline  # a constant: the trial adds it
    trial = optuna.trial.FixedTrial(baseline)
    space.suggest(trial, structure)
    assert trial.params == baseline
    candidate, ratios = check_plan(teacher, example, trial.params | space.constants())
    assert set(ratios.values()) == {0.25}
    assert dict(candidate.plan.kernels) == dict(structure.kernels)


def test_loading_the_plugins_imports_neither_optuna_nor_ray():
    code = (
        "import sys\n"
        "from prunetune.search_spaces import per_layer, uniform, ratio_only, kernel_only\n"
        "from prunetune.plugins.strategies import optuna\n"
        "print(','.join(m for m in ('ray', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
