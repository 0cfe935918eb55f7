"""The message catalog: MLink's live-data message types, their fields and primary keys.

Loaded from `data/catalog.json`, which `tools/build_catalog.py` builds from MLink's published
data dictionary. Message numbers in the catalog are defaults only: a running MLink may number
messages differently, so numbers learned at run time (`getmsgtypes`) win.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

KEY_TYPES = frozenset({"TickerKey", "ExpiryKey", "OptionKey"})
INTEGER_TYPES = frozenset({"int", "uint", "long", "short", "byte", "ushort"})
FLOAT_TYPES = frozenset({"float", "double"})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a message as it appears on the JSON wire."""

    name: str
    number: int
    type: str
    key: bool = False
    enum: str | None = None
    default: str | None = None
    max_len: int | None = None
    fields: tuple[FieldSpec, ...] = ()  # the members of a repeated group (type "group")

    @property
    def is_security_key(self) -> bool:
        return self.type in KEY_TYPES

    @property
    def is_group(self) -> bool:
        """A repeated group: on the wire, a list of objects with `fields`."""
        return self.type == "group"


@dataclass(frozen=True, slots=True)
class EnumSpec:
    """An enum: numbers and the short names MLink's JSON uses (`PrcChange`, `EDGX`)."""

    name: str
    names: Mapping[int, str]

    @property
    def default(self) -> str:
        """The name of value 0, which MLink omits from JSON like every default."""
        return self.names.get(0, "None")

    def values(self) -> list[str]:
        """Every name except the default, in number order."""
        return [name for number, name in sorted(self.names.items()) if number != 0]


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """A live-data message type: its number, fields in number order, and primary key."""

    name: str
    number: int
    fields: tuple[FieldSpec, ...]
    _by_lower: Mapping[str, FieldSpec] = field(repr=False, compare=False, default_factory=dict)

    @property
    def key_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.key)

    @property
    def value_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if not f.key)

    def field(self, name: str) -> FieldSpec | None:
        """Look a field up by name, ignoring case as MLink's where/view clauses do."""
        return self._by_lower.get(name.lower())


class Catalog:
    """Message types by name (case-insensitive) and by number, plus enums."""

    def __init__(
        self,
        messages: Mapping[str, MessageSpec],
        enums: Mapping[str, EnumSpec],
        admin_numbers: Mapping[str, int],
    ) -> None:
        self._messages = dict(messages)
        self._by_lower = {name.lower(): spec for name, spec in messages.items()}
        self._by_number = {spec.number: spec for spec in messages.values()}
        self.enums = dict(enums)
        self.admin_numbers = dict(admin_numbers)

    def __iter__(self) -> Iterator[MessageSpec]:
        return iter(self._messages.values())

    def __len__(self) -> int:
        return len(self._messages)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_lower

    def names(self) -> list[str]:
        return sorted(self._messages)

    def get(self, name: str) -> MessageSpec | None:
        """The message type called `name`, in any letter case (`stockbookquote` works)."""
        return self._by_lower.get(name.lower())

    def by_number(self, number: int) -> MessageSpec | None:
        return self._by_number.get(number)

    def number_of(self, name: str) -> int:
        """The message number used in framed headers; 0 when none is published."""
        spec = self.get(name)
        if spec is not None:
            return spec.number
        return self.admin_numbers.get(name, 0)

    def enum(self, name: str) -> EnumSpec:
        return self.enums[name]


def _field_from_json(raw: Mapping[str, Any]) -> FieldSpec:
    return FieldSpec(
        name=raw["name"],
        number=int(raw["number"]),
        type=raw["type"],
        key=bool(raw.get("key", False)),
        enum=raw.get("enum"),
        default=raw.get("default"),
        max_len=raw.get("maxLen"),
        fields=tuple(_field_from_json(f) for f in raw.get("fields", ())),
    )


def catalog_from_json(doc: Mapping[str, Any]) -> Catalog:
    messages: dict[str, MessageSpec] = {}
    for name, raw in doc["messages"].items():
        fields = tuple(_field_from_json(f) for f in raw["fields"])
        messages[name] = MessageSpec(
            name=name,
            number=int(raw["number"]),
            fields=fields,
            _by_lower={f.name.lower(): f for f in fields},
        )
    enums = {
        name: EnumSpec(name, {int(k): v for k, v in values.items()})
        for name, values in doc["enums"].items()
    }
    return Catalog(messages, enums, doc.get("admin", {}))


def load_catalog(path: Path | None = None) -> Catalog:
    """Load a catalog file; without a path, the one shipped with the package."""
    if path is None:
        return default_catalog()
    return catalog_from_json(json.loads(path.read_text()))


@cache
def default_catalog() -> Catalog:
    text = resources.files("bridge.mlink").joinpath("data/catalog.json").read_text()
    return catalog_from_json(json.loads(text))
