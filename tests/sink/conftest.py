"""Sink test data: wire bodies from the simulator's market, as the bridge receives them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge.mlink.catalog import default_catalog
from bridge.simulator.market import DEFAULT_TYPES, Market

NOW = 1_726_000_000_123_456_789
# The default types, a generic one, and the two types with repeated groups.
ROUND_TRIP_TYPES = (*DEFAULT_TYPES, "LiveSurfaceCurve", "ProductDefinitionV2", "RootDefinition")

Messages = list[tuple[str, dict[str, Any]]]


def _market_messages(names: tuple[str, ...], steps: int) -> Messages:
    """The market's cache, then some updates, each an independent copy parsed from JSON (the
    market changes its dicts in place)."""
    market = Market(
        default_catalog(), msg_names=names, tickers=3, expiries=2, strikes=2, clock=lambda: NOW
    )
    out = [
        (name, orjson.loads(orjson.dumps(obj.message)))
        for name in market.names()
        for obj in market.objects(name)
    ]
    for _ in range(steps):
        obj = market.step()
        if not obj.deleted:
            out.append((obj.msg_name, orjson.loads(orjson.dumps(obj.message))))
    return out


@pytest.fixture(scope="session")
def round_trip_messages() -> Messages:
    """Records of every default type plus LiveSurfaceCurve, ProductDefinitionV2 (repeated group
    `legs`) and RootDefinition (group `underlying`)."""
    messages = _market_messages(ROUND_TRIP_TYPES, steps=200)
    assert {name for name, _ in messages} == set(ROUND_TRIP_TYPES)
    return messages


@pytest.fixture(scope="session")
def catalog_messages() -> Messages:
    """Records of every message type in the catalog."""
    return _market_messages(tuple(default_catalog().names()), steps=100)
