"""Bridges between fedledger and machine-learning frameworks (see docs/integrations.md).

Each integration is its own module, imported by name (``fedledger.integrations.torch``); none
is imported here, so a framework is needed only by the code that uses its bridge.
"""

from __future__ import annotations

__all__: list[str] = []
