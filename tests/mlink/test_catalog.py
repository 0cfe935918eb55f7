from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from bridge.mlink.catalog import KEY_TYPES, default_catalog, load_catalog

ROOT = Path(__file__).resolve().parents[2]
FACTS = ROOT.parent / "shared" / "mlink-facts"
SHIPPED = ROOT / "bridge" / "mlink" / "data" / "catalog.json"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_catalog", ROOT / "tools" / "build_catalog.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not FACTS.is_dir(), reason="../shared/mlink-facts is not beside the checkout")
def test_shipped_catalog_is_what_the_builder_makes_from_the_facts() -> None:
    builder = _builder()
    assert builder.render(builder.build(FACTS)) == SHIPPED.read_text()


def test_catalog_holds_the_dictionary() -> None:
    cat = default_catalog()
    assert len(cat) == 34
    quote = cat.get("stockbookquote")  # names are case-insensitive, as on the wire
    assert quote is not None
    assert quote.name == "StockBookQuote"
    assert quote.number == 3000
    assert [f.name for f in quote.key_fields] == ["ticker"]
    assert quote.key_fields[0].type == "TickerKey"
    bid = quote.field("BIDPRICE1")
    assert bid is not None
    assert (bid.name, bid.number, bid.type) == ("bidPrice1", 106, "float")
    update = quote.field("updateType")
    assert update is not None
    assert (update.enum, update.default) == ("UpdateType", "None")
    assert cat.by_number(2785) is cat.get("OptionNbboQuote")
    assert cat.number_of("MLinkQuery") == 3310
    assert cat.number_of("MLinkResponse") == 3315
    assert cat.number_of("MLinkAdmin") == 0


def test_every_message_has_a_primary_key_and_unique_field_names() -> None:
    for spec in default_catalog():
        assert spec.key_fields, spec.name
        names = [f.name for f in spec.fields]
        assert len(names) == len(set(names)), spec.name
        numbers = [f.number for f in spec.fields]
        assert numbers == sorted(numbers), spec.name
        assert all(f.number < 100 for f in spec.key_fields)
        assert any(f.type in KEY_TYPES for f in spec.key_fields) or spec.name == "OpraPrintType"


def test_repeated_groups() -> None:
    root = default_catalog().get("RootDefinition")
    assert root is not None
    group = root.field("underlying")
    assert group is not None
    assert group.is_group
    assert [(f.name, f.type) for f in group.fields] == [("ticker", "TickerKey"), ("spc", "float")]
    ticker = root.field("ticker")
    assert ticker is not None
    assert ticker.number == 100  # the master underlying, not the group member
    legs = default_catalog().get("ProductDefinitionV2")
    assert legs is not None
    leg = legs.field("legs")
    assert leg is not None
    assert [f.name for f in leg.fields] == [
        "legID",
        "secKey",
        "secType",
        "side",
        "ratio",
        "refDelta",
        "refPrc",
    ]


def test_enum_names_follow_the_json_wire() -> None:
    cat = default_catalog()
    assert cat.enum("UpdateType").names[1] == "PrcChange"
    assert cat.enum("StkExch").names[7] == "EDGX"
    assert cat.enum("AssetType").names[1] == "EQT"
    assert cat.enum("CallPut").values() == ["Call", "Put", "Pair"]
    assert cat.enum("MarketStatus").names[4] == "Open"
    assert cat.enum("AdminState").values() == [
        "WaitingLogon",
        "LoggedOn",
        "LogonFailed",
        "GoodNight",
    ]
    assert cat.enum("MLinkState").default == "None"


def test_load_catalog_from_a_file(tmp_path: Path) -> None:
    doc = {
        "messages": {
            "Tiny": {
                "number": 7,
                "fields": [
                    {"name": "ticker", "number": 10, "type": "TickerKey", "key": True},
                    {"name": "px", "number": 100, "type": "double"},
                ],
            }
        },
        "enums": {},
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(doc))
    cat = load_catalog(path)
    assert cat.names() == ["Tiny"]
    tiny = cat.get("tiny")
    assert tiny is not None
    assert [f.name for f in tiny.value_fields] == ["px"]
    assert "Tiny" in cat
    assert "Nope" not in cat
