"""The simulator's REST metadata: `getmsgtypes` and `getschema`, over plain HTTP GET.

As MLink's REST API (seed: mlink-api-readme), on `/rest/json` (a JSON array of
`{"header": {"mTyp": ...}, "message": {...}}` objects) and `/rest/jsonf` (the same messages
framed), each answer ending with a `QueryResult`. Parameter names are not case-sensitive and
take their short forms (`c`, `mt`); the key is `apikey`, as the websocket's token
(`key` or `key.password`).

* `getmsgtypes`: one `MsgDesc` per message type of the catalog: `name`, `mNum`, `actions`,
  `hasTKey` / `hasEKey` / `hasOKey`;
* `getschema&msgtype=X`: one `FieldDesc` per field of X, in number order: `pos`, `name`,
  `fNum`, `isPkey`, `fType`, `tName` (an enum's or key's type), `eSet` (an enum's values), and
  for a repeated group `repeater` entries (`nm`, `fn`, `fType`, `tName`, `eSet`).

Field names are those of MLink's MLinkRest/MsgDesc.proto and FieldDesc.proto, camelCased as
MLink's JSON does; the other REST commands answer `QueryResult` with result `Error`.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl

import orjson

from bridge.mlink.catalog import Catalog, FieldSpec, MessageSpec
from bridge.mlink.framing import encode_frame

REST_PATHS = ("/rest/json", "/rest/jsonf")
_ALIASES = {"c": "cmd", "mt": "msgtype"}
# The catalog's field types as MLink's FieldType enum names them.
_FIELD_TYPES = {
    "byte": "Byte",
    "short": "Short",
    "ushort": "UShort",
    "int": "Int",
    "uint": "UInt",
    "long": "Long",
    "float": "Float",
    "double": "Double",
    "enum": "Enum",
    "flag": "Flag",
    "string": "String",
    "DateTime": "DateTime",
    "TimeSpan": "TimeSpan",
    "DateKey": "DateKey",
    "TickerKey": "TickerKey",
    "ExpiryKey": "ExpiryKey",
    "OptionKey": "OptionKey",
    "group": "Repeater",
}


def rest_answer(
    path: str, query: str, catalog: Catalog, api_keys: tuple[str, ...]
) -> tuple[int, str, str]:
    """(HTTP status, content type, body) for a GET of `path?query`."""
    started = time.perf_counter()
    params = {_ALIASES.get(k.lower(), k.lower()): v.strip('"') for k, v in parse_qsl(query)}
    if params.get("apikey") not in api_keys:
        return _render(401, path, [], catalog, started, result="AuthError", detail="unknown apikey")
    cmd = params.get("cmd", "").lower()
    if cmd == "getmsgtypes":
        specs = [catalog.get(name) for name in catalog.names()]
        messages = [("MsgDesc", _msg_desc(spec)) for spec in specs if spec is not None]
        return _render(200, path, messages, catalog, started)
    if cmd == "getschema":
        spec = catalog.get(params.get("msgtype", ""))
        if spec is None:
            detail = f"unknown msgType {params.get('msgtype', '')!r}"
            return _render(400, path, [], catalog, started, result="Error", detail=detail)
        fields = [("FieldDesc", _field_desc(i, f, catalog)) for i, f in enumerate(spec.fields)]
        return _render(200, path, fields, catalog, started)
    detail = f"the simulator answers getmsgtypes and getschema, not {cmd or 'nothing'!r}"
    return _render(400, path, [], catalog, started, result="Error", detail=detail)


def _msg_desc(spec: MessageSpec) -> dict[str, Any]:
    types = {f.type for f in spec.key_fields}
    return {
        "name": spec.name,
        "mNum": spec.number,
        "actions": "SIURD",
        "hasTKey": _yes("TickerKey" in types),
        "hasEKey": _yes("ExpiryKey" in types),
        "hasOKey": _yes("OptionKey" in types),
    }


def _field_desc(pos: int, field: FieldSpec, catalog: Catalog) -> dict[str, Any]:
    out: dict[str, Any] = {"pos": pos, "name": field.name, "fNum": field.number}
    out["isPkey"] = _yes(field.key)
    out.update(_type_of(field, catalog))
    if field.fields:
        out["repeater"] = [
            {"nm": member.name, "fn": member.number, **_type_of(member, catalog)}
            for member in field.fields
        ]
    return out


def _type_of(field: FieldSpec, catalog: Catalog) -> dict[str, Any]:
    out: dict[str, Any] = {"fType": _FIELD_TYPES.get(field.type, field.type)}
    if field.enum:
        out["tName"] = field.enum
        out["eSet"] = ",".join(catalog.enum(field.enum).values())
    elif field.type.endswith("Key"):
        out["tName"] = field.type
    if field.max_len:
        out["sLen"] = field.max_len
    return out


def _yes(value: bool) -> str:
    return "Yes" if value else "No"


def _render(
    status: int,
    path: str,
    found: list[tuple[str, dict[str, Any]]],
    catalog: Catalog,
    started: float,
    *,
    result: str = "Ok",
    detail: str | None = None,
) -> tuple[int, str, str]:
    """The messages found, then the QueryResult that says how the query went."""
    outcome: dict[str, Any] = {"numMessagesSent": len(found), "result": result}
    if detail is not None:
        outcome["detail"] = detail
    outcome["queryElapsed"] = round(time.perf_counter() - started, 4)
    messages = [*found, ("QueryResult", outcome)]
    bodies = [
        (mtyp, orjson.dumps({"header": {"mTyp": mtyp}, "message": message}))
        for mtyp, message in messages
    ]
    if path.endswith("jsonf"):
        numbers = catalog.admin_numbers
        framed = b"".join(encode_frame(body, numbers.get(mtyp, 0)) for mtyp, body in bodies)
        return status, "text/plain", framed.decode()
    return status, "application/json", "[\n" + ",\n".join(b.decode() for _, b in bodies) + "\n]\n"
