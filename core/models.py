"""Teacher models: zoo plugins and user factories named ``package.module:factory``."""

from __future__ import annotations

import abc
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from prunetune.errors import UsageError

if TYPE_CHECKING:
    from prunetune.registry import Registry

__all__ = ["CallableModelFactory", "ModelFactory", "resolve_model"]


class ModelFactory(abc.ABC):
    """A model plugin. Subclasses declare a frozen dataclass ``Config``."""

    @abc.abstractmethod
    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        """A freshly initialised model for ``image_size`` x ``image_size`` inputs.

        Raises:
            UsageError: the model cannot take this input shape.
        """


class CallableModelFactory(ModelFactory):
    """A user's ``package.module:factory``, called with the arguments it accepts."""

    def __init__(self, fn: Callable[..., nn.Module], options: Mapping[str, Any]) -> None:
        self.fn = fn
        self.options = dict(options)

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        offered = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        params = inspect.signature(self.fn).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in offered.items() if takes_any or k in params}
        kwargs.update(self.options)
        model = self.fn(**kwargs)
        if not isinstance(model, nn.Module):
            raise UsageError(f"model factory returned {type(model).__name__}, not a torch nn.Module")
        return model


def _import_factory(spec: str) -> Callable[..., nn.Module]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import model module {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"module {module_name!r} has no callable {attr!r}")
    return fn


def resolve_model(registry: Registry, spec: str, options: Mapping[str, Any]) -> ModelFactory:
    """A zoo model by name, or a user factory given as ``package.module:factory``."""
    if ":" in spec:
        return CallableModelFactory(_import_factory(spec), options)
    factory = registry.create("model", spec, options)
    assert isinstance(factory, ModelFactory), f"model {spec!r} is not a ModelFactory"
    return factory
