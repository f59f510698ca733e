"""Integrations with federated-learning frameworks (each imports its framework on first use;
see docs/integrations.md)."""

from __future__ import annotations

__all__: list[str] = []
