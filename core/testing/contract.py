"""The contract every component keeps, whatever its family; each conformance suite checks it."""

from __future__ import annotations

import dataclasses

__all__ = ["check_component_contract"]


def check_component_contract(component: object, base: type, kind: str) -> None:
    """Fail unless ``component`` is a ``base``, its class declares a frozen dataclass ``Config``
    of its own whose defaults make an instance, and its docstring's first line describes it."""
    cls = type(component)
    assert isinstance(component, base), f"the {kind} is not a {base.__name__}"
    config_cls = getattr(cls, "Config", None)
    assert isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls), f"the {kind} needs a Config"
    # Its own: a plain subclass of a dataclass would pass on the parent's flags.
    params = vars(config_cls).get("__dataclass_params__")
    assert params is not None and params.frozen, f"the {kind}'s Config must be a frozen dataclass"
    cls(config_cls())  # every option has a default
    assert (cls.__doc__ or "").strip(), f"the {kind}'s docstring's first line is its description"
