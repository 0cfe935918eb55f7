"""Build bridge/mlink/data/catalog.json from MLink's published facts.

Input: ../shared/mlink-facts/data-dictionary.csv and enums.csv (SpiderRock's public samples).
Output: the catalog the simulator and the Avro schemas read at run time.

    python tools/build_catalog.py [--facts DIR] [--out FILE]

tests/mlink/test_catalog.py rebuilds it and compares, so the shipped file cannot drift.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FACTS = ROOT.parent / "shared" / "mlink-facts"
DEFAULT_OUT = ROOT / "bridge" / "mlink" / "data" / "catalog.json"

# Enums whose JSON names are codes (EQT, NMS, EDGX, USD), not words (PrcChange, Call, Open).
CODE_ENUMS = frozenset(
    {
        "AssetType",
        "TickerSrc",
        "StkExch",
        "OptExch",
        "FutExch",
        "Currency",
        "ContractUnit",
        "PrimaryExchange",
        "PriceFormat",
        "TimeMetric",
        "TapeCode",
        "SysRealm",
    }
)
# Enums the protocol itself needs even though no data field refers to them.
PROTOCOL_ENUMS = ("AdminState", "MLinkState", "MLinkQueryType", "AssetType", "TickerSrc", "CallPut")

# Admin message numbers seen in SpiderRock's samples (0 = not published; sent as 00000).
ADMIN_MESSAGES = {
    "MLinkAdmin": 0,
    "MLinkLogon": 0,
    "MLinkStream": 0,
    "MLinkStreamAck": 0,
    "MLinkStreamCheckPt": 0,
    "MLinkSubscribe": 0,
    "MLinkSubscribeAck": 0,
    "MLinkQuery": 3310,
    "MLinkResponse": 3315,
    "MLinkSignalReady": 0,
    "MsgDesc": 3330,
    "QueryResult": 3320,
}

# Repeated groups, which the flat dictionary lists as plain fields (and so repeats names such as
# RootDefinition.ticker). From the published .proto files: group name, its field number, and the
# field numbers inside it.
REPEATED_GROUPS = {
    "ProductDefinitionV2": ("legs", 223, range(224, 246)),
    "RootDefinition": ("underlying", 199, range(200, 206)),
}

_TYPE_RE = re.compile(r"^(?P<base>[A-Za-z0-9]+)(?::(?P<arg>[A-Za-z0-9]+))?(?::(?P<default>\w+))?$")


def json_name(enum: str, constant: str) -> str:
    """UPDATETYPE_PRC_CHANGE -> PrcChange, STKEXCH_EDGX -> EDGX, *_UNSPECIFIED -> None."""
    prefix = enum.upper() + "_"
    bare = constant[len(prefix) :] if constant.startswith(prefix) else constant
    if bare == "UNSPECIFIED":
        return "None"
    if enum in CODE_ENUMS:
        return bare
    return "".join(part[:1] + part[1:].lower() for part in bare.split("_"))


def parse_type(raw: str) -> dict[str, object]:
    match = _TYPE_RE.match(raw)
    if match is None:
        raise ValueError(f"unknown field type {raw!r}")
    base, arg, default = match["base"], match["arg"], match["default"]
    if base in ("enum", "flag"):
        spec: dict[str, object] = {"type": base, "enum": arg}
        if default is not None:
            spec["default"] = default
        return spec
    if base == "string":
        return {"type": "string", "maxLen": int(arg)} if arg else {"type": "string"}
    if base == "text1":
        return {"type": "string"}
    return {"type": base}


def build(facts: Path) -> dict[str, object]:
    messages: dict[str, dict[str, object]] = {}
    with (facts / "data-dictionary.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            msg = messages.setdefault(row["message"], {"number": int(row["msg_id"]), "fields": []})
            field = {"name": row["field_name"], "number": int(row["field_number"])}
            field.update(parse_type(row["field_type"]))
            field["key"] = field["number"] < 100
            fields = msg["fields"]
            assert isinstance(fields, list)
            fields.append(field)

    wanted = set(PROTOCOL_ENUMS)
    for msg in messages.values():
        for field in msg["fields"]:  # type: ignore[attr-defined]
            if "enum" in field:
                wanted.add(field["enum"])

    enums: dict[str, dict[str, str]] = {}
    with (facts / "enums.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["enum"] in wanted:
                values = enums.setdefault(row["enum"], {})
                values[row["number"]] = json_name(row["enum"], row["constant"])
    missing = wanted - enums.keys()
    if missing:
        raise ValueError(f"enums referenced but not defined: {sorted(missing)}")

    for name, msg in messages.items():
        fields = sorted(msg["fields"], key=lambda f: f["number"])  # type: ignore[attr-defined]
        if name in REPEATED_GROUPS:
            group_name, group_number, inside = REPEATED_GROUPS[name]
            members = [f for f in fields if f["number"] in inside]
            fields = [f for f in fields if f["number"] not in inside]
            fields.append(
                {
                    "name": group_name,
                    "number": group_number,
                    "type": "group",
                    "key": False,
                    "fields": members,
                }
            )
            fields.sort(key=lambda f: f["number"])
        names = [f["name"] for f in fields]
        if len(names) != len(set(names)):
            raise ValueError(f"{name}: repeated field names {sorted(names)}")
        msg["fields"] = fields
    return {
        "source": "SpiderRock MLink-Samples data dictionary and enums (Apache-2.0)",
        "admin": ADMIN_MESSAGES,
        "messages": dict(sorted(messages.items())),
        "enums": dict(sorted(enums.items())),
    }


def render(catalog: dict[str, object]) -> str:
    return json.dumps(catalog, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=Path, default=DEFAULT_FACTS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    text = render(build(args.facts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
