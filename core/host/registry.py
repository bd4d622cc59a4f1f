"""The typed registry that plugins fill with components.

A component is a class with a frozen dataclass ``Config`` and an ``__init__(config)``; its
one-line description is the first line of its docstring. Names are unique per kind across all
plugins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from prunetune.errors import UsageError
from prunetune.host.options import EmptyConfig, build_config

__all__ = ["KINDS", "Component", "DuplicateComponentError", "Registry"]

#: Every kind of component, in the order ``prunetune plugins`` lists them.
KINDS = ("model", "dataset", "scorer", "pruner", "distiller", "search_space", "strategy")


class DuplicateComponentError(Exception):
    """Two plugins offer a component of the same kind and name."""


@dataclasses.dataclass(frozen=True)
class Component:
    """One registered component and where it came from."""

    kind: str
    name: str
    cls: type
    plugin: str
    distribution: str = "-"
    version: str = "-"

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def config_cls(self) -> type:
        return getattr(self.cls, "Config", EmptyConfig)

    def create(self, options: Mapping[str, Any] | None = None) -> Any:
        """Instantiate the component with its config built from ``options``."""
        owner = f"{self.kind.replace('_', ' ')} {self.name!r}"
        config = build_config(self.config_cls, dict(options or {}), owner)
        return self.cls(config)


class Registry:
    """Components by kind and name, filled by ``prunetune_add_components`` hooks."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Component] = {}
        self._origin: tuple[str, str, str] = ("-", "-", "-")

    def _set_origin(self, plugin: str, distribution: str, version: str) -> None:
        self._origin = (plugin, distribution, version)

    def add(self, kind: str, name: str, cls: type) -> None:
        """Register ``cls`` as component ``name`` of ``kind``.

        Raises:
            ValueError: ``kind`` is not one of :data:`KINDS`.
            DuplicateComponentError: another plugin already offers ``kind`` ``name``.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r} (valid: {', '.join(KINDS)})")
        plugin, dist, version = self._origin
        existing = self._items.get((kind, name))
        if existing is not None:
            raise DuplicateComponentError(
                f"{kind} {name!r} is offered by two plugins: {existing.plugin!r} "
                f"({existing.distribution}) and {plugin!r} ({dist})"
            )
        self._items[(kind, name)] = Component(kind, name, cls, plugin, dist, version)

    def add_model(self, name: str, cls: type) -> None:
        self.add("model", name, cls)

    def add_dataset(self, name: str, cls: type) -> None:
        self.add("dataset", name, cls)

    def add_scorer(self, name: str, cls: type) -> None:
        self.add("scorer", name, cls)

    def add_pruner(self, name: str, cls: type) -> None:
        self.add("pruner", name, cls)

    def add_distiller(self, name: str, cls: type) -> None:
        self.add("distiller", name, cls)

    def add_search_space(self, name: str, cls: type) -> None:
        self.add("search_space", name, cls)

    def add_strategy(self, name: str, cls: type) -> None:
        self.add("strategy", name, cls)

    def names(self, kind: str) -> list[str]:
        """Sorted names of every component of ``kind``."""
        return sorted(name for k, name in self._items if k == kind)

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``.

        Raises:
            UsageError: no such component; the message lists the valid names.
        """
        try:
            return self._items[(kind, name)]
        except KeyError:
            valid = ", ".join(self.names(kind)) or "none installed"
            label = kind.replace("_", " ")
            raise UsageError(f"unknown {label} {name!r} (valid: {valid})") from None

    def create(self, kind: str, name: str, options: Mapping[str, Any] | None = None) -> Any:
        """Instantiate component ``name`` of ``kind`` with ``options``."""
        return self.get(kind, name).create(options)

    def __iter__(self) -> Iterator[Component]:
        order = {k: i for i, k in enumerate(KINDS)}
        return iter(sorted(self._items.values(), key=lambda c: (order[c.kind], c.name)))

    def __len__(self) -> int:
        return len(self._items)
