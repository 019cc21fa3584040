"""The model registry: builders registered by name into a plain dict (torchvision style).

A builder takes keyword-only arguments and returns a plain ``nn.Module``; the
architecture modules register theirs with :func:`register_model`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

BuilderFn = Callable[..., nn.Module]
MODELS: dict[str, BuilderFn] = {}


def register_model(name: str) -> Callable[[BuilderFn], BuilderFn]:
    def wrap(fn: BuilderFn) -> BuilderFn:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = fn
        return fn

    return wrap


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture; ``kwargs`` are the builder's keyword-only arguments."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(MODELS))}") from None
    return builder(**kwargs)


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Build from a manifest ``arch`` dict: ``{"name": ..., <builder kwargs>}``."""
    spec = dict(spec)
    name = spec.pop("name")
    return build_model(name, **spec)
