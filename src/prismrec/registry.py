"""An explicit, decorator-based registry (models, split rules, readers, encoders).

A component registers itself where it is defined::

    @MODELS.register("lightgcn")
    class LightGCN(Recommender): ...

and callers look it up with :meth:`Registry.get`, which fails with a suggestion for near-misses.
Nothing is discovered by scanning the file system: the package that defines the components imports
their modules explicitly, so the set of registered names is always visible in code.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def suggest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Name -> component table with aliases and helpful lookup errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        key = name.lower()

        def deco(obj: T) -> T:
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[key] = obj
            for alias in aliases:
                self._aliases[alias.lower()] = key
            try:
                setattr(obj, "registry_name", key)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str) -> T:
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            names = list(self._items) + list(self._aliases)
            raise ConfigError(
                f"Unknown {self.kind} '{name}'.{suggest(key, names)} Known: {', '.join(sorted(self._items))}."
            )
        return self._items[key]

    def canonical(self, name: str) -> str:
        key = name.lower()
        key = self._aliases.get(key, key)
        self.get(key)
        return key

    def aliases_of(self, name: str) -> tuple[str, ...]:
        key = self.canonical(name)
        return tuple(a for a, target in self._aliases.items() if target == key)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        key = name.lower()
        return key in self._items or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
