"""Monolith Tune: find, train, publish and use self-supervised encoders for market data.

The one name most users need is re-exported here: ``monolith.Encoder`` (see
``monolith.encoder``), loaded on first use so that ``import monolith.config`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Encoder"]


def __getattr__(name: str) -> Any:
    if name == "Encoder":
        from monolith.encoder import Encoder

        return Encoder
    raise AttributeError(f"module 'monolith' has no attribute {name!r}")
