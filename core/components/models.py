"""Teacher models: zoo plugins, user factories named ``package.module:factory``, and
torchvision and timm architectures named ``torchvision:NAME`` or ``timm:NAME``.

Both libraries keep a registry of architectures; such a name is looked up there, never
imported as code, so a student file may name one as it names a zoo model. Weights are never
downloaded: every model starts freshly initialised (``weights=None``, ``pretrained=False``).
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from prunetune.errors import UsageError
from prunetune.host.options import convert_value
from prunetune.structure.outputs import select_output

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = [
    "HUBS", "LIVE_PREFIX", "CallableModelFactory", "HubModelFactory", "ModelFactory", "ModelSpec", "adapt_first_conv",
    "check_model_named", "hub_of", "is_import_spec", "is_live_spec", "live_name", "resolve_model",
]


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
    (a factory taking ``**kwargs`` gets only those it names too: torchvision's ``resnet18(**kwargs)``
    passes them on to a class that takes no ``in_channels``); ``options`` are passed as keyword arguments, strings
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
        kwargs: dict[str, Any] = {k: v for k, v in offered.items() if k in params and params[k].kind in keyword}
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


#: The libraries whose model registries ``--model LIBRARY:NAME`` reads.
HUBS = ("torchvision", "timm")
#: prunetune's own option for torchvision models (timm takes ``in_chans`` itself).
ADAPT = "adapt_input"


def hub_of(spec: str) -> str | None:
    """The library ``spec`` names a model of (``timm:resnet18`` -> ``timm``), or None."""
    hub, sep, name = spec.partition(":")
    return hub if sep and name and hub in HUBS else None


def _value(value: Any) -> Any:
    """A command-line option's string as the number, boolean or list it spells; other text as is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def adapt_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    """``model`` with its first conv (in module order) taking ``in_channels`` channels, freshly
    initialised."""
    name = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if name is None:
        raise UsageError(f"{ADAPT} found no Conv2d in the model to adapt")
    conv = model.get_submodule(name)
    if conv.in_channels != in_channels:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Conv2d(
            in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            bias=conv.bias is not None, padding_mode=conv.padding_mode))
    return model


class HubModelFactory(ModelFactory):
    """A torchvision or timm architecture by name, its options passed to the library's builder.

    torchvision models take 3-channel images; ``adapt_input=true`` gives the first conv the
    data's channels instead. timm models are built with the data's channels (``in_chans``).
    """

    def __init__(self, spec: str, options: Mapping[str, Any]) -> None:
        self.hub, _, self.name = spec.partition(":")
        self.spec = spec
        self.options = {k: _value(v) for k, v in options.items() if k != ADAPT}
        self.adapt = convert_value(options.get(ADAPT, False), bool, f"model {spec!r} option {ADAPT}")
        if self.adapt and self.hub != "torchvision":
            raise UsageError(f"model {spec!r} takes the data's channels itself: {ADAPT} is for torchvision models")

    def _library(self) -> Any:
        module = "torchvision.models" if self.hub == "torchvision" else "timm"
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(f"model {self.spec!r} needs {self.hub}, which does not import here: {exc}") from None

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        options, adapt = self.options, self.adapt
        library = self._library()
        try:
            if self.hub == "torchvision":
                if in_channels != 3 and not adapt:
                    raise UsageError(f"model {self.spec!r} takes 3-channel images and the data has {in_channels}: "
                                     f"pass --model-opt {ADAPT}=true to give its first conv {in_channels}")
                model = library.get_model(self.name, weights=None, num_classes=num_classes, **options)
                return adapt_first_conv(model, in_channels) if adapt else model
            return library.create_model(self.name, pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                        **options)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - the library refused the name or an option: one line
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise UsageError(f"model {self.spec!r} could not be built: {type(exc).__name__}: {reason}") from None


#: How a model handed over as a Python object is named (``object:package.module.Class``).
LIVE_PREFIX = "object:"


def live_name(module: nn.Module) -> str:
    """The name of a model handed over as an object: its class, ``object:package.module.Class``."""
    return f"{LIVE_PREFIX}{type(module).__module__}.{type(module).__qualname__}"


def is_live_spec(spec: str) -> bool:
    """Whether ``spec`` names a model that was handed over as a Python object."""
    return spec.startswith(LIVE_PREFIX)


def is_import_spec(spec: str) -> bool:
    """Whether ``spec`` names code to import (``package.module:factory``), not a zoo model."""
    return ":" in spec and not is_live_spec(spec) and hub_of(spec) is None


def check_model_named(spec: Any, given: str | None, what: str) -> None:
    """Refuse a model named by a file unless it is a zoo name or the user's ``given`` one.

    Raises:
        UsageError: no model name, another model than ``given``, or a
            ``package.module:factory`` the user did not name.
    """
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"{what} names no model")
    if is_live_spec(spec):
        raise UsageError(f"{what} was made from a model handed over as a Python object ({spec[len(LIVE_PREFIX):]}): "
                         "give that model object (prunetune.load(path, model=...)); a file never makes prunetune import code")
    if given is not None and given != spec:
        raise UsageError(f"{what} was made with model {spec!r}, not {given!r}")
    if is_import_spec(spec) and given is None:
        raise UsageError(
            f"{what} names model {spec!r}, code that prunetune imports only when you name it: "
            f"pass --model {spec} if you trust it"
        )


def resolve_model(registry: Registry, spec: str, options: Mapping[str, Any]) -> ModelFactory:
    """A zoo model by name, a torchvision or timm model (``torchvision:NAME``, ``timm:NAME``),
    or a user factory given as ``package.module:factory``.

    Only for names the user gave; a name read from a file goes through :meth:`ModelSpec.from_meta`.

    Raises:
        UsageError: an unknown zoo name, a module that does not import, a missing factory,
            or options the model does not take.
        TypeError: the zoo plugin registered under ``spec`` is not a :class:`ModelFactory`.
    """
    if is_live_spec(spec):
        raise UsageError(f"model {spec!r} was handed over as a Python object: give that object, not its name")
    if is_import_spec(spec):
        return CallableModelFactory(_import_factory(spec), options, name=spec)
    if hub_of(spec) is not None:
        return HubModelFactory(spec, options)
    factory = registry.create("model", spec, options)
    if not isinstance(factory, ModelFactory):
        plugin = registry.get("model", spec).plugin
        raise TypeError(
            f"model {spec!r} from plugin {plugin!r} is a {type(factory).__name__}, "
            "not a prunetune.components.models.ModelFactory"
        )
    return factory


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model's description: which model, its options, the images it takes and its classes.

    The only place an architecture is built (:meth:`build`). ``model`` is a zoo name or a
    ``package.module:factory`` the user named, or, for a model handed over in Python,
    ``module`` is that live model and ``model`` names its class; :meth:`build` then copies it.
    :meth:`meta` is what student files and the teacher cache record.
    """

    model: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10
    module: nn.Module | None = dataclasses.field(default=None, compare=False, repr=False)
    logits: int | str | None = None  # which output is the logits, for a model returning several
    heads: tuple[str, ...] = ()  # layers whose outputs are model outputs, never cut

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", dict(self.options))
        object.__setattr__(self, "heads", tuple(self.heads))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "num_classes", int(self.num_classes))

    @classmethod
    def of_module(cls, module: nn.Module, input_shape: tuple[int, int, int], num_classes: int,
                  logits: int | str | None = None, heads: tuple[str, ...] = ()) -> ModelSpec:
        """The description of a live model: a CPU copy of it stands for its architecture (it
        travels to Ray workers; the weights they use are the teacher's state)."""
        module = copy.deepcopy(module).cpu()
        return cls(live_name(module), {}, input_shape, num_classes, module, logits, heads)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], named: str | nn.Module | None, what: str) -> ModelSpec:
        """The model a file describes (a student's description).

        Files never choose code to import: a zoo model is looked up in the registry, and a
        ``package.module:factory`` is imported only when the user named the same one (``named``,
        from the command line or the Python call). A student of a model handed over as an
        object needs that object as ``named``.

        Raises:
            UsageError: the file names code the user did not name, another model than
                ``named``, a model object not given, or holds no valid description.
        """
        spec = meta.get("model")
        shape, classes = meta.get("input_shape"), meta.get("num_classes")
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
            raise UsageError(f"{what} has no valid input_shape (three positive integers), got {shape!r}")
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise UsageError(f"{what} has no valid num_classes, got {classes!r}")
        logits, heads = meta.get("logits"), meta.get("heads", [])
        if not (logits is None or isinstance(logits, (int, str))) or isinstance(logits, bool):
            raise UsageError(f"{what} has logits {logits!r}, neither an output's index nor its name")
        if not (isinstance(heads, list) and all(isinstance(h, str) for h in heads)):
            raise UsageError(f"{what} has heads {heads!r}, not a list of layer names")
        if isinstance(named, nn.Module):
            if not (isinstance(spec, str) and is_live_spec(spec)):
                raise UsageError(f"{what} was made with model {spec!r}, not from a model object")
            return cls(spec, {}, tuple(shape), classes, named, logits, tuple(heads))
        check_model_named(spec, named, what)
        options = meta.get("model_options", {})
        if not isinstance(options, Mapping):
            raise UsageError(f"{what} has model options that are not a mapping")
        return cls(spec, options, tuple(shape), classes, None, logits, tuple(heads))

    @property
    def is_live(self) -> bool:
        """Whether the model was handed over as a Python object rather than named."""
        return self.module is not None

    def meta(self) -> dict[str, Any]:
        """The description as JSON-able fields: ``model``, ``model_options``, ``input_shape``,
        ``num_classes``, and ``logits`` and ``heads`` where they are set."""
        meta = {"model": self.model, "model_options": dict(self.options), "input_shape": list(self.input_shape),
                "num_classes": self.num_classes}
        if self.logits is not None:
            meta["logits"] = self.logits
        if self.heads:
            meta["heads"] = list(self.heads)
        return meta

    def factory(self, registry: Registry) -> ModelFactory:
        """The model's factory (zoo plugin or the user's ``package.module:factory``)."""
        if self.module is not None:
            raise TypeError(f"{self.model} was handed over as an object and has no factory")
        return resolve_model(registry, self.model, self.options)

    def build(self, registry: Registry) -> nn.Module:
        """A new instance of the architecture: freshly initialised, or a copy of the live model.

        Raises:
            UsageError: the model cannot take this input shape, or its factory failed.
        """
        if self.module is not None:
            model = copy.deepcopy(self.module)
        else:
            c, h, _ = self.input_shape
            model = self.factory(registry).build(c, self.num_classes, h)
        if self.logits is not None or self.heads:
            select_output(model, self.logits, self.heads)
        return model
