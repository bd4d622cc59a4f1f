"""Teacher models: zoo plugins and user factories named ``package.module:factory``."""

from __future__ import annotations

import abc
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from prunetune.errors import UsageError
from prunetune.host.options import convert_value

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["CallableModelFactory", "ModelFactory", "check_model_named", "is_import_spec", "model_from_file", "resolve_model"]


class ModelFactory(abc.ABC):
    """A model plugin. Subclasses declare a frozen dataclass ``Config``."""

    @abc.abstractmethod
    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        """A freshly initialised model for ``image_size`` x ``image_size`` inputs.

        Raises:
            UsageError: the model cannot take this input shape.
        """


class CallableModelFactory(ModelFactory):
    """A user's ``package.module:factory``, called with the arguments it accepts.

    Of ``in_channels``, ``num_classes`` and ``image_size``, the factory gets those it names
    (all of them if it takes ``**kwargs``); ``options`` are passed as keyword arguments, strings
    converted to the parameter's annotated type where it has one (``int``, ``float``, ``bool``,
    ``tuple[int, ...]``...).
    """

    def __init__(
        self, fn: Callable[..., nn.Module], options: Mapping[str, Any], name: str | None = None
    ) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", repr(fn))
        self.options = dict(options)

    def _kwargs(self, offered: dict[str, int]) -> dict[str, Any]:
        params = _parameters(self.fn)
        if params is None:
            return {**offered, **self.options}
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        named = [n for n, p in params.items() if p.kind in keyword]
        kwargs: dict[str, Any] = {k: v for k, v in offered.items() if takes_any or k in params}
        for key, value in self.options.items():
            if key in offered:
                raise UsageError(
                    f"model {self.name!r} option {key} is set from the dataset, not by an option"
                )
            if key not in params and not takes_any:
                valid = ", ".join(n for n in named if n not in offered) or "none"
                raise UsageError(f"model {self.name!r} has no option {key} (valid: {valid})")
            annotation = params[key].annotation if key in params else inspect.Parameter.empty
            if annotation is not inspect.Parameter.empty and not isinstance(annotation, str):
                value = convert_value(value, annotation, f"model {self.name!r} option {key}")
            kwargs[key] = value
        return kwargs

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        offered = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
        kwargs = self._kwargs(offered)
        try:
            model = self.fn(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's own factory failed: say so in one line
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise UsageError(f"model factory {self.name!r} failed: {type(exc).__name__}: {reason}") from None
        if not isinstance(model, nn.Module):
            raise UsageError(
                f"model factory {self.name!r} returned {type(model).__name__}, "
                "not a torch nn.Module"
            )
        return model


def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter] | None:
    """``fn``'s parameters with annotations evaluated where they can be; None if unreadable."""
    try:
        plain = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read, e.g. some builtins
        return None
    try:
        return inspect.signature(fn, eval_str=True).parameters
    except Exception:  # an annotation that does not evaluate: keep them as strings
        return plain.parameters


def _import_factory(spec: str) -> Callable[..., nn.Module]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or module_name.startswith("."):
        raise UsageError(f"model {spec!r} is neither a zoo name nor package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import model module {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"module {module_name!r} has no callable {attr!r}")
    return fn


def is_import_spec(spec: str) -> bool:
    """Whether ``spec`` names code to import (``package.module:factory``), not a zoo model."""
    return ":" in spec


def model_from_file(
    registry: Registry, spec: Any, options: Any, given: str | None, what: str
) -> ModelFactory:
    """The model a file names (a student's description, a run's ``search.json``).

    Files never choose code to import: a zoo model is looked up in the registry, and a
    ``package.module:factory`` is imported only when the user named the same one (``given``,
    from the command line or the Python call).

    Raises:
        UsageError: the file names a factory the user did not give, or another model than
            ``given``, or holds no model name.
    """
    check_model_named(spec, given, what)
    if not isinstance(options, Mapping):
        raise UsageError(f"{what} has model options that are not a mapping")
    return resolve_model(registry, spec, options)


def check_model_named(spec: Any, given: str | None, what: str) -> None:
    """Refuse a model named by a file unless it is a zoo name or the user's ``given`` one.

    Raises:
        UsageError: no model name, another model than ``given``, or a
            ``package.module:factory`` the user did not name.
    """
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"{what} names no model")
    if given is not None and given != spec:
        raise UsageError(f"{what} was made with model {spec!r}, not {given!r}")
    if is_import_spec(spec) and given is None:
        raise UsageError(
            f"{what} names model {spec!r}, code that prunetune imports only when you name it: "
            f"pass --model {spec} if you trust it"
        )


def resolve_model(registry: Registry, spec: str, options: Mapping[str, Any]) -> ModelFactory:
    """A zoo model by name, or a user factory given as ``package.module:factory``.

    Only for names the user gave; a name read from a file goes through :func:`model_from_file`.

    Raises:
        UsageError: an unknown zoo name, a module that does not import, a missing factory,
            or options the model does not take.
        TypeError: the zoo plugin registered under ``spec`` is not a :class:`ModelFactory`.
    """
    if is_import_spec(spec):
        return CallableModelFactory(_import_factory(spec), options, name=spec)
    factory = registry.create("model", spec, options)
    if not isinstance(factory, ModelFactory):
        plugin = registry.get("model", spec).plugin
        raise TypeError(
            f"model {spec!r} from plugin {plugin!r} is a {type(factory).__name__}, "
            "not a prunetune.components.models.ModelFactory"
        )
    return factory
