"""Teacher resolution: zoo names through the registry, user factories as module:factory."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn

from prunetune.components.models import CallableModelFactory, ModelFactory, resolve_model
from prunetune.errors import UsageError
from prunetune.host.registry import Registry

USER_MODULE = '''
from torch import nn

NOT_CALLABLE = 3


def small_cnn(in_channels: int, num_classes: int, width: int = 4, head: bool = True):
    layers = [nn.Conv2d(in_channels, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if head:
        layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def not_a_model(num_classes):
    return "oops"
'''


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package ``usernets`` with module ``usernets.cnn`` importable from ``tmp_path``."""
    package = tmp_path / "usernets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cnn.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "usernets.cnn"
    for name in [n for n in sys.modules if n == "usernets" or n.startswith("usernets.")]:
        del sys.modules[name]


def test_only_accepted_arguments_are_passed() -> None:
    seen: dict[str, object] = {}

    def factory(num_classes, image_size):
        seen.update(num_classes=num_classes, image_size=image_size)
        return nn.Linear(2, num_classes)

    CallableModelFactory(factory, {}).build(3, 7, 28)
    assert seen == {"num_classes": 7, "image_size": 28}


def test_var_keyword_factories_get_only_what_they_name_and_their_options() -> None:
    seen: dict[str, object] = {}

    def factory(num_classes, **kwargs):
        seen.update(kwargs, num_classes=num_classes)
        return nn.Identity()

    CallableModelFactory(factory, {"extra": "x"}).build(3, 7, 28)
    assert seen == {"num_classes": 7, "extra": "x"}  # no in_channels: torchvision's **kwargs would refuse it


def test_string_options_follow_the_annotations(user_package: str) -> None:
    factory = resolve_model(Registry(), f"{user_package}:small_cnn", {"width": "6", "head": "no"})
    model = factory.build(1, 10, 28)
    assert model[0].out_channels == 6
    assert len(model) == 3
    with pytest.raises(UsageError, match="option width='wide' is not a valid int"):
        resolve_model(Registry(), f"{user_package}:small_cnn", {"width": "wide"}).build(1, 10, 28)


def test_unknown_or_dataset_options_are_usage_errors(user_package: str) -> None:
    spec = f"{user_package}:small_cnn"
    with pytest.raises(UsageError, match=r"has no option depth \(valid: width, head\)$"):
        resolve_model(Registry(), spec, {"depth": "2"}).build(1, 10, 28)
    with pytest.raises(UsageError, match="num_classes is set from the dataset"):
        resolve_model(Registry(), spec, {"num_classes": "3"}).build(1, 10, 28)


def test_non_module_return_is_rejected(user_package: str) -> None:
    factory = resolve_model(Registry(), f"{user_package}:not_a_model", {})
    with pytest.raises(UsageError, match="returned str, not a torch nn.Module"):
        factory.build(1, 10, 28)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:f", "cannot import model module 'no_such_module_xyz'"),
        ("usernets.cnn:missing", "has no callable 'missing'"),
        ("usernets.cnn:NOT_CALLABLE", "has no callable 'NOT_CALLABLE'"),
        (":small_cnn", "neither a zoo name nor package.module:factory"),
        ("usernets.cnn:", "neither a zoo name nor package.module:factory"),
        (".cnn:small_cnn", "neither a zoo name nor package.module:factory"),
        ("nosuchzoo", r"unknown model 'nosuchzoo' \(valid: none installed\)"),
    ],
)
def test_bad_specs(user_package: str, spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_model(Registry(), spec, {})


def test_zoo_names_go_through_the_registry() -> None:
    class Tiny(ModelFactory):
        """A tiny model."""

        def __init__(self, config) -> None:
            self.config = config

        def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
            return nn.Linear(in_channels, num_classes)

    registry = Registry()
    registry.add_model("tiny", Tiny)
    factory = resolve_model(registry, "tiny", {})
    assert isinstance(factory, Tiny)
    with pytest.raises(UsageError, match="model 'tiny' has no option width"):
        resolve_model(registry, "tiny", {"width": "2"})


def test_a_registered_non_factory_is_a_type_error() -> None:
    class NotAFactory:
        """Not a model factory."""

        def __init__(self, config) -> None:
            pass

    registry = Registry()
    registry.add_model("odd", NotAFactory)
    with pytest.raises(TypeError, match="is a NotAFactory, not a prunetune.components.models.ModelFactory"):
        resolve_model(registry, "odd", {})


# -- ModelSpec: the one description an architecture is built from ------------------------------


def _zoo() -> Registry:
    from prunetune.host.manager import Host

    return Host.create().registry


def test_a_spec_builds_its_zoo_model_for_its_images_and_classes() -> None:
    import torch

    from prunetune.components.models import ModelSpec

    spec = ModelSpec("resnet", {"width": "4"}, (1, 28, 28), 7)
    out = spec.build(_zoo())(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 7)
    # What the teacher cache and student files record: unchanged in form, so caches still hit.
    assert spec.meta() == {"model": "resnet", "model_options": {"width": "4"}, "input_shape": [1, 28, 28],
                           "num_classes": 7}


def test_a_live_model_is_copied_never_shared() -> None:
    from prunetune.components.models import ModelSpec, is_import_spec

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    spec = ModelSpec.of_module(net, (1, 5, 5), 3)
    built = spec.build(Registry())
    assert built is not net and all(a.data_ptr() != b.data_ptr() for a, b in zip(built.parameters(), net.parameters()))
    assert spec.model == "object:torch.nn.modules.container.Sequential" and spec.is_live
    assert not is_import_spec(spec.model)
    with pytest.raises(UsageError, match="handed over as a Python object"):
        resolve_model(Registry(), spec.model, {})


@pytest.mark.parametrize(
    ("meta", "named", "message"),
    [
        ({"model": "usernets.cnn:small_cnn"}, None, "code that prunetune imports only when you name it"),
        ({"model": "usernets.cnn:small_cnn"}, "other.mod:f", "was made with model 'usernets.cnn:small_cnn', not 'other.mod:f'"),
        ({"model": "object:pkg.Net"}, None, "give that model object"),
        ({"model": "resnet"}, nn.Linear(1, 1), "not from a model object"),
        ({"model": "resnet", "input_shape": [1, 28]}, None, "no valid input_shape"),
        ({"model": "resnet", "num_classes": 0}, None, "no valid num_classes"),
        ({"model": "resnet", "model_options": [1]}, None, "model options that are not a mapping"),
    ],
)
def test_a_file_never_chooses_code(meta: dict, named: object, message: str) -> None:
    from prunetune.components.models import ModelSpec

    full = {"input_shape": [1, 28, 28], "num_classes": 10, **meta}
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        ModelSpec.from_meta(full, named, "student 'x.pt'")


def test_a_file_of_a_live_model_takes_that_model() -> None:
    from prunetune.components.models import ModelSpec

    net = nn.Linear(2, 3)
    spec = ModelSpec.from_meta({"model": "object:torch.nn.Linear", "input_shape": [1, 1, 2], "num_classes": 3},
                               net, "student 'x.pt'")
    assert spec.module is net and spec.input_shape == (1, 1, 2)  # a file's model object is the caller's
