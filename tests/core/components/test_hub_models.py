"""``--model torchvision:NAME`` and ``timm:NAME``: the libraries' own registries, no weights downloaded.

torchvision and timm are not needed: stand-in modules with the same entry points check what
prunetune asks of them; the real libraries are tried where they import.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

from prunetune.components.models import ModelSpec, check_model_named, hub_of, is_import_spec, resolve_model
from prunetune.errors import UsageError
from prunetune.host.registry import Registry


def _net(in_channels: int = 3, num_classes: int = 1000, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))


@pytest.fixture
def libraries(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Stand-ins for torchvision.models and timm; each records the calls made to it."""
    calls: dict[str, list[dict[str, Any]]] = {"torchvision": [], "timm": []}

    def get_model(name: str, **kwargs: Any) -> nn.Module:
        calls["torchvision"].append({"name": name, **kwargs})
        if name != "tiny":
            raise ValueError(f"Unknown model {name}")
        return _net(num_classes=kwargs["num_classes"], width=kwargs.get("width", 8))

    def create_model(name: str, **kwargs: Any) -> nn.Module:
        calls["timm"].append({"name": name, **kwargs})
        return _net(kwargs["in_chans"], kwargs["num_classes"])

    vision, models, timm = (types.ModuleType(n) for n in ("torchvision", "torchvision.models", "timm"))
    models.get_model, timm.create_model, vision.models = get_model, create_model, models  # type: ignore[attr-defined]
    for name, module in (("torchvision", vision), ("torchvision.models", models), ("timm", timm)):
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_hub_names_are_registry_names_not_code() -> None:
    assert hub_of("torchvision:resnet18") == "torchvision" and hub_of("timm:regnety_002") == "timm"
    assert hub_of("mypkg.models:net") is None and not is_import_spec("timm:resnet18")
    check_model_named("timm:resnet18", None, "student.pt")  # a file may name one, as it names a zoo model


def test_torchvision_models_get_no_weights_their_classes_and_options(libraries: dict[str, list[Any]]) -> None:
    model = resolve_model(Registry(), "torchvision:tiny", {"width": "6", "adapt_input": "true"}).build(1, 10, 28)
    assert libraries["torchvision"] == [{"name": "tiny", "weights": None, "num_classes": 10, "width": 6}]
    assert model[0].in_channels == 1 and model[0].out_channels == 6  # the first conv adapted to the data
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_models_on_other_channels_must_ask_for_the_adapted_conv(libraries: dict[str, list[Any]]) -> None:
    with pytest.raises(UsageError, match="takes 3-channel images and the data has 1: pass --model-opt adapt_input=true"):
        resolve_model(Registry(), "torchvision:tiny", {}).build(1, 10, 28)
    assert resolve_model(Registry(), "torchvision:tiny", {}).build(3, 10, 28)[0].in_channels == 3


def test_timm_models_take_the_datas_channels(libraries: dict[str, list[Any]]) -> None:
    model = ModelSpec("timm:anything", {}, (1, 28, 28), 10).build(Registry())
    assert libraries["timm"] == [{"name": "anything", "pretrained": False, "num_classes": 10, "in_chans": 1}]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_a_name_the_library_does_not_know_is_one_line(libraries: dict[str, list[Any]]) -> None:
    with pytest.raises(UsageError, match=r"^model 'torchvision:nope' could not be built: ValueError: Unknown model nope$"):
        resolve_model(Registry(), "torchvision:nope", {}).build(3, 10, 28)


def test_a_library_that_does_not_import_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import fails
    with pytest.raises(UsageError, match="^model 'timm:resnet18' needs timm, which does not import here"):
        resolve_model(Registry(), "timm:resnet18", {}).build(1, 10, 28)


@pytest.mark.parametrize(("spec", "options"), [("torchvision:resnet18", {"adapt_input": "true"}), ("timm:resnet18", {})])
def test_the_real_libraries(spec: str, options: dict[str, str]) -> None:
    pytest.importorskip(spec.split(":")[0])
    model = resolve_model(Registry(), spec, options).build(1, 10, 32)
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_the_first_conv_in_module_order_is_the_one_adapted() -> None:
    from prunetune.components.models import adapt_first_conv

    model = nn.Sequential()
    model.stem = nn.Sequential(nn.Conv2d(3, 8, 3))
    model.head = nn.Conv2d(8, 4, 1)
    adapt_first_conv(model, 1)
    assert model.stem[0].in_channels == 1 and model.head.in_channels == 8


def test_adapt_input_is_a_bool_option_for_torchvision_only(libraries: dict[str, list[Any]]) -> None:
    assert resolve_model(Registry(), "torchvision:tiny", {"adapt_input": "yes"}).build(1, 10, 28)[0].in_channels == 1
    with pytest.raises(UsageError, match="adapt_input is for torchvision models"):
        resolve_model(Registry(), "timm:anything", {"adapt_input": "true"})
