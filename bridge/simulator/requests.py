"""Client requests as the simulator understands them: MLinkStream, MLinkSubscribe, MLinkQuery.

Each request becomes a `SimSubscription`: which message types it covers, which records match
(where clause, key filters, subscribed keys), how records are shown (view), and when updates go
out (activeLatency). Invalid requests raise `RequestError` with the text MLink's ack carries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import KeyFormatError
from bridge.mlink.catalog import Catalog, MessageSpec
from bridge.mlink.keys import TickerKey, security_key
from bridge.mlink.messages import QueryType
from bridge.mlink.where import WhereError, compile_view, compile_where

Predicate = Callable[[Mapping[str, Any]], bool]
View = Callable[[Mapping[str, Any]], dict[str, Any]]


class RequestError(ValueError):
    """The request cannot be served; the message goes back in the ack or response."""


@dataclass(slots=True)
class TypeRule:
    """How one message type is filtered and shown within a subscription."""

    spec: MessageSpec
    where: Predicate | None = None
    view: View | None = None
    keys: set[str] | None = None  # MLinkSubscribe: only these canonical keys

    def matches(self, key: str, message: Mapping[str, Any]) -> bool:
        if self.keys is not None and key not in self.keys:
            return False
        return self.where is None or self.where(message)

    def render(self, message: Mapping[str, Any]) -> Mapping[str, Any]:
        return message if self.view is None else self.view(message)


@dataclass(slots=True)
class SimSubscription:
    """One active request on one connection."""

    label: str
    channel: str  # "stream" (MLinkStream/MLinkSubscribe: checkpoints) or "query" (responses)
    rules: dict[str, TypeRule]  # by catalog message name
    active_latency: int = -1  # ms; 0 = no delay; -1 = wait for MLinkSignalReady
    highwater_ts: int = 0
    key_filter: Predicate | None = None
    live: bool = False  # snapshot sent; updates flow
    one_shot: bool = False
    msg_name_echo: str = ""  # the msgName as the client spelled it, for the ack
    pending: dict[tuple[str, str], Any] = field(default_factory=dict)  # conflated updates
    last_flush: float = 0.0
    signalled: bool = False
    sent_messages: int = 0
    sent_bytes: int = 0
    sent_highwater: int = 0
    sent_keys: set[tuple[str, str]] = field(default_factory=set)  # keys this client holds
    resuming: bool = False  # while a highwaterTs snapshot is built: deletes since then go out

    def rule_for(self, msg_name: str, key: str, message: Mapping[str, Any]) -> TypeRule | None:
        rule = self.rules.get(msg_name)
        if rule is None or not rule.matches(key, message):
            return None
        if self.key_filter is not None and not self.key_filter(message):
            return None
        return rule


def _int(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RequestError(f"{name} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise RequestError(f"{name} must be an integer, not {value!r}") from None


def _rule(
    catalog: Catalog, served: set[str], name: Any, where: Any = None, view: Any = None
) -> TypeRule:
    if not isinstance(name, str) or not name:
        raise RequestError("msgName missing or not a string")
    if where is not None and not isinstance(where, str):
        raise RequestError("where must be a string")
    if view is not None and not isinstance(view, str):
        raise RequestError("view must be a string")
    spec = catalog.get(name)
    if spec is None or spec.name not in served:
        raise RequestError(f"unknown or unavailable msgName {name!r}")
    try:
        where_fn = compile_where(where, spec) if where else None
        view_fn = compile_view(view, spec) if view else None
    except WhereError as exc:
        raise RequestError(str(exc)) from None
    return TypeRule(spec, where_fn, view_fn)


def stream_request(
    catalog: Catalog, served: set[str], message: Mapping[str, Any], default_label: str
) -> SimSubscription:
    rule = _rule(catalog, served, message.get("msgName"), message.get("where"), message.get("view"))
    return SimSubscription(
        label=str(message.get("queryLabel") or default_label),
        channel="stream",
        rules={rule.spec.name: rule},
        active_latency=_int(message.get("activeLatency"), "activeLatency", -1),
        highwater_ts=_int(message.get("highwaterTs"), "highwaterTs", 0),
        msg_name_echo=str(message.get("msgName")),
    )


def subscribe_request(
    catalog: Catalog,
    served: set[str],
    message: Mapping[str, Any],
    current: SimSubscription | None,
) -> tuple[SimSubscription, dict[str, set[str]]]:
    """Apply an MLinkSubscribe to the connection's key subscription; returns it and the new keys.

    All or nothing: the changes are worked out on copies and applied only if the whole request
    is valid, so a refused request leaves the subscription as it was.
    """
    reset = str(message.get("doReset", "No")).lower() in ("yes", "true", "1")
    base = current if current is not None and not reset else None
    rules = {
        name: TypeRule(r.spec, r.where, r.view, set(r.keys) if r.keys is not None else None)
        for name, r in (base.rules.items() if base is not None else ())
    }
    latency = _int(
        message.get("activeLatency"), "activeLatency", base.active_latency if base else -1
    )
    echo = base.msg_name_echo if base is not None else ""
    added: dict[str, set[str]] = {}
    for entry in _entries(message.get("Subscribe"), "Subscribe"):
        new_rule = _rule(catalog, served, entry.get("msgName"))
        rule = rules.setdefault(new_rule.spec.name, new_rule)
        key = entry.get("msgPKey")
        if not isinstance(key, str) or not key:
            raise RequestError("Subscribe entry without msgPKey")
        if rule.keys is None:
            rule.keys = set()
        rule.keys.add(key)
        added.setdefault(rule.spec.name, set()).add(key)
        echo = echo or str(entry.get("msgName"))
    for entry in _entries(message.get("Unsubscribe"), "Unsubscribe"):
        spec = catalog.get(str(entry.get("msgName", "")))
        found = rules.get(spec.name) if spec else None
        if found is not None and found.keys is not None:
            found.keys.discard(str(entry.get("msgPKey")))
    for entry in _entries(message.get("View"), "View"):
        spec = catalog.get(str(entry.get("msgName", "")))
        found = rules.get(spec.name) if spec else None
        view = entry.get("view")
        if found is not None and view:
            if not isinstance(view, str):
                raise RequestError("View entries need a view string")
            try:
                found.view = compile_view(view, found.spec)
            except WhereError as exc:
                raise RequestError(str(exc)) from None
    sub = base or SimSubscription(label="MLinkSubscribe", channel="stream", rules={})
    sub.rules = rules
    sub.active_latency = latency
    sub.msg_name_echo = echo
    return sub, added


def _entries(value: Any, name: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RequestError(f"{name} must be a list of objects")
    return value


def query_request(
    catalog: Catalog, served: set[str], message: Mapping[str, Any], default_label: str
) -> tuple[SimSubscription, QueryType]:
    raw_type = message.get("queryType") or QueryType.FULL_SUBSCRIPTION.value
    try:
        query_type = QueryType(raw_type)
    except ValueError:
        raise RequestError(f"unknown queryType {raw_type!r}") from None
    rules: dict[str, TypeRule] = {}
    for entry in _entries(message.get("MsgTypes"), "MsgTypes"):
        name = entry.get("msgName")
        if not name and entry.get("msgType") is not None:
            spec = catalog.by_number(_int(entry.get("msgType"), "msgType", 0))
            if spec is None:
                raise RequestError(f"unknown msgType {entry.get('msgType')!r}")
            name = spec.name
        rule = _rule(catalog, served, name, entry.get("where"), entry.get("view"))
        existing = rules.get(rule.spec.name)
        if existing is None or (rule.where or rule.view):
            rules[rule.spec.name] = rule
    if not rules:
        raise RequestError("MsgTypes names no message type")
    key_filter = _key_filter(message)
    sub = SimSubscription(
        label=str(message.get("queryLabel") or default_label),
        channel="query",
        rules=rules,
        active_latency=_int(message.get("activeLatency"), "activeLatency", -1),
        highwater_ts=_int(message.get("highwaterTs"), "highwaterTs", 0),
        key_filter=key_filter,
        one_shot=not query_type.is_subscription,
    )
    if query_type in (QueryType.FULL_QUERY, QueryType.FULL_SUBSCRIPTION):
        sub.highwater_ts = 0
    return sub, query_type


_KEY_PARTS = {"tickerKey": 3, "expiryKey": 4, "optionKey": 6}
_KEY_TYPES = {"tickerKey": "TickerKey", "expiryKey": "ExpiryKey", "optionKey": "OptionKey"}


def _key_filter(message: Mapping[str, Any]) -> Predicate | None:
    """TKeyFilters / EKeyFilters / OKeyFilters: a record passes if any filter matches it."""
    wanted: list[tuple[int, str]] = []  # (number of key parts, canonical prefix)
    for list_name, inner in (
        ("TKeyFilters", "tickerKey"),
        ("EKeyFilters", "expiryKey"),
        ("OKeyFilters", "optionKey"),
    ):
        for entry in _entries(message.get(list_name), list_name):
            try:
                key = security_key(_KEY_TYPES[inner], entry.get(inner))
            except KeyFormatError as exc:
                raise RequestError(f"{list_name}: {exc}") from None
            wanted.append((_KEY_PARTS[inner], key.canonical()))
    if not wanted:
        return None

    def key_filter(msg: Mapping[str, Any]) -> bool:
        parts = _record_key_parts(msg)
        return any(parts.get(n) == text for n, text in wanted)

    return key_filter


def _record_key_parts(message: Mapping[str, Any]) -> dict[int, str]:
    """The ticker / expiry / option canonical strings a record can be filtered by."""
    pkey = message.get("pkey") or {}
    out: dict[int, str] = {}
    for value in pkey.values():
        if isinstance(value, dict) and "tk" in value:
            try:
                ticker = TickerKey.from_json(value)
            except KeyFormatError:
                continue
            out[3] = ticker.canonical()
            if "dt" in value:
                out[4] = f"{out[3]}-{value['dt']}"
                if "cp" in value:
                    with contextlib.suppress(KeyFormatError):
                        out[6] = security_key("OptionKey", value).canonical()
    return out
