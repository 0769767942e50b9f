"""Checkpoint families: one module per source format, registered by name.

A family adapter maps a checkpoint (already read into plain data by
:mod:`memrec_infer.checkpoint_reader`) onto a :class:`memrec_infer.spec.ModelSpec`. It has two
methods: ``validate(checkpoint) -> list[str]`` reports every problem at once and changes
nothing; ``to_spec(checkpoint) -> ModelSpec`` runs only on a checkpoint that validated clean.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import CheckpointError
from ..spec import ModelSpec

__all__ = ["Family", "get_family", "register", "supported_families"]

# Modules holding the built-in families; imported on first lookup so they register themselves.
_BUILTIN = ("memrec_dlrm",)
_REGISTRY: dict[str, Family] = {}


class Family(Protocol):
    """What a family adapter provides."""

    name: str
    revisions: frozenset[int]

    def validate(self, checkpoint: dict[str, Any]) -> list[str]: ...

    def to_spec(self, checkpoint: dict[str, Any]) -> ModelSpec: ...


def register(name: str) -> Callable[[type], type]:
    """Class decorator: register an adapter class (instantiated without arguments) as ``name``."""

    def decorate(cls: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"family {name!r} is registered twice")
        instance = cls()
        instance.name = name
        _REGISTRY[name] = instance
        return cls

    return decorate


def _load_builtin() -> None:
    for module in _BUILTIN:
        importlib.import_module(f"{__name__}.{module}")


def supported_families() -> list[str]:
    """Names of every registered family, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_family(name: Any) -> Family:
    """The adapter registered as ``name``.

    Raises
    ------
    CheckpointError
        No family of that name; the message lists the supported ones.
    """
    _load_builtin()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise CheckpointError(
            f"unknown checkpoint family {name!r}; supported families: "
            f"{', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]
