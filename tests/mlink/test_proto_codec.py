"""The protobuf codec: P frames <-> the same envelopes and records the JSON path produces."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ConfigError, MessageError
from bridge.mlink.catalog import default_catalog
from bridge.mlink.framing import WireForm, encode_frame, iter_frames
from bridge.mlink.messages import (
    Ack,
    AdminMessage,
    CheckPoint,
    DataRecord,
    MLinkLogon,
    MLinkQuery,
    MLinkSignalReady,
    MLinkStream,
    MsgTypeFilter,
    QueryType,
)
from bridge.mlink.proto import (
    ProtoCodec,
    bundled_codec,
    format_datetime,
    format_timespan,
    parse_datetime,
    parse_timespan,
    shortest_float32,
)
from bridge.mlink.session import (
    Authenticated,
    MLinkSession,
    ProtocolViolation,
    Record,
    SnapshotBegin,
    SnapshotComplete,
    Subscription,
    SubscriptionAcked,
)
from bridge.simulator.market import DEFAULT_TYPES, Market

CODEC = bundled_codec()
CAT = default_catalog()
BUNDLED = Path(__file__).resolve().parents[2] / "bridge" / "mlink" / "data" / "mlink.protoset"
AAPL = {"at": "EQT", "ts": "NMS", "tk": "AAPL"}
F32 = struct.Struct("<f")


def roundtrip(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    number, body = CODEC.from_envelope(doc)
    return number, CODEC.to_envelope(number, body)


def test_a_quote_keeps_its_json_names_enums_key_and_float_decimals() -> None:
    message = {
        "pkey": {"ticker": AAPL},
        "updateType": "PrcChange",
        "marketStatus": "Open",
        "bidPrice1": 141.69,
        "bidSize1": 300,
        "bidExch1": "EDGX",
        "askMask1": 196612,
        "srcTimestamp": 1_726_000_000_123_456_789,
    }
    header = {"mTyp": "StockBookQuote", "sTim": "2024-09-10 20:26:40.123456", "sID": 18409}
    number, doc = roundtrip({"header": header, "message": message})
    assert number == 3000  # the dictionary's number for StockBookQuote
    assert doc == {"header": header, "message": message}
    assert doc["message"]["bidPrice1"] == 141.69  # not 141.69000244140625


def test_a_delete_is_flagged_like_the_json_header() -> None:
    okey = {"at": "EQT", "ts": "NMS", "tk": "MSFT", "dt": "2024-09-20", "xx": 580.0, "cp": "Call"}
    header = {"mTyp": "OptionNbboQuote", "isDel": True}
    doc = {"header": header, "message": {"pkey": {"okey": okey}}}
    number, body = CODEC.from_envelope(doc)
    record = CODEC.decode(number, body)
    assert isinstance(record, DataRecord)
    assert record.deleted
    assert record.header["isDel"] is True
    assert record.message == {"pkey": {"okey": okey}}
    assert record.raw == body


def test_every_simulated_type_round_trips_through_protobuf() -> None:
    market = Market(CAT, seed=3, msg_names=tuple(s.name for s in CAT), tickers=3, expiries=1)
    for name in market.names():
        for obj in market.objects(name)[:5]:
            number, doc = roundtrip({"header": {"mTyp": name}, "message": obj.message})
            assert number == CAT.number_of(name)
            assert doc["message"] == normalized(obj.message), name


def normalized(message: dict[str, Any]) -> dict[str, Any]:
    """What the JSON means, as protobuf carries it: no zero values, floats as float64."""
    out: dict[str, Any] = {}
    for name, wire in message.items():
        value = wire
        if isinstance(wire, dict):
            value = {k: float(v) if k == "xx" else v for k, v in wire.items()}
            if name == "pkey":
                value = {k: normalized({k: v}).get(k, v) for k, v in value.items()}
        elif isinstance(wire, list):
            value = [normalized(v) if isinstance(v, dict) else v for v in wire]
        if value in (0, "", "None", [], None) and not isinstance(value, dict):
            continue
        out[name] = value
    return out


def test_admin_messages_become_the_same_typed_messages() -> None:
    admin = {"header": {"mTyp": "MLinkAdmin"}, "message": {"state": "LoggedOn"}}
    number, body = CODEC.from_envelope(admin)
    assert number == 0  # MLink publishes no number: the type travels in _meta
    assert CODEC.decode(number, body) == AdminMessage("LoggedOn")
    # The seeds' JSON spellings map onto the AdminState enum.
    refused = {"header": {"mTyp": "MLinkAdmin"}, "message": {"state": "AuthError"}}
    assert CODEC.decode(*CODEC.from_envelope(refused)) == AdminMessage("LogonFailed")
    ack = {
        "header": {"mTyp": "MLinkStreamAck"},
        "message": {"msgName": "stockbookquote", "result": "OK"},
    }
    assert CODEC.decode(*CODEC.from_envelope(ack)) == Ack("MLinkStreamAck", "stockbookquote", "OK")
    response = {
        "header": {"mTyp": "MLinkResponse"},
        "message": {
            "queryLabel": "q",
            "state": "Complete",
            "highwaterTs": 17,
            "numMessagesSent": 3,
            "timestamp": "2023-11-09 15:26:45.592286",
        },
    }
    number, body = CODEC.from_envelope(response)
    assert number == 3315
    assert CODEC.decode(number, body) == CheckPoint("MLinkResponse", "Complete", "q", "", 3, 17)
    assert CODEC.to_envelope(number, body)["message"]["timestamp"] == "2023-11-09 15:26:45.592286"


def test_requests_are_framed_protobuf_as_the_sample_client_sends_them() -> None:
    query = MLinkQuery(
        "Example1",
        QueryType.FULL_QUERY,
        [MsgTypeFilter(msg_type=3000)],
        tkey_filters=[AAPL],
        active_latency=0,
    )
    payload = CODEC.encode_request(query)
    assert payload.startswith(b"\r\nP03310")
    (frame,) = iter_frames(payload)
    sample_cls = CODEC.message_class("MLinkQuery")
    assert sample_cls is not None
    sent: Any = sample_cls.FromString(frame.body)
    assert sent.query_label == "Example1"
    assert sent.query_type == 1  # MLINKQUERYTYPE_FULL_QUERY
    assert sent.msg_types[0].msg_type == 3000
    assert sent.tkey_filters[0].ticker_key.ticker == "AAPL"
    assert sent.tkey_filters[0].ticker_key.asset_type == 1  # ASSETTYPE_EQT
    assert sent.tkey_filters[0].ticker_key.ticker_src == 2  # TICKERSRC_NMS
    # The server reads the request back as the JSON path would (activeLatency 0 kept).
    message = CODEC.to_envelope(frame.number, frame.body)["message"]
    assert message["activeLatency"] == 0
    assert message["MsgTypes"] == [{"msgType": 3000}]
    assert message["TKeyFilters"] == [{"tickerKey": AAPL}]


@pytest.mark.parametrize(
    "request_",
    [
        MLinkLogon(api_key="k", api_password="p"),
        MLinkStream("s1", "StockBookQuote", where="ticker.tk:eq:AAPL", active_latency=-1),
        MLinkSignalReady("s1", "FullScan"),
    ],
)
def test_other_requests_round_trip(request_: Any) -> None:
    (frame,) = iter_frames(CODEC.encode_request(request_, sent_ns=1_700_000_000_000_000_000))
    doc = CODEC.to_envelope(frame.number, frame.body)
    assert doc["header"]["mTyp"] == request_.mtyp
    assert doc["header"]["sTim"] == "2023-11-14 22:13:20.000000"
    for name, value in request_.to_message().items():
        assert doc["message"][name] == value


def test_unknown_numbers_and_types_are_clear_errors() -> None:
    with pytest.raises(MessageError, match=r"number 4242 is not in the descriptor set"):
        CODEC.decode(4242, b"")
    unknown_meta = b"\x0a\x10\x0a\x0eSimUnknownType"
    with pytest.raises(MessageError, match=r"99999 \(SimUnknownType\) is not in"):
        CODEC.decode(99_999, unknown_meta)
    # A number not known (MLink may renumber) whose _meta names a known type still decodes.
    _, body = CODEC.from_envelope(
        {"header": {"mTyp": "StockPrint"}, "message": {"pkey": {"ticker": AAPL}}}
    )
    record = CODEC.decode(12_345, body)
    assert isinstance(record, DataRecord)
    assert record.mtyp == "StockPrint"


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a\xff\xff",  # a length-delimited field cut off
        b"\xa0\x06",  # a varint with no value
        b"\x12\x05\x0a\x03ab",  # a nested message shorter than announced
        b"\x07",  # wire type 7 does not exist
    ],
)
def test_malformed_bytes_are_a_message_error(body: bytes) -> None:
    with pytest.raises(MessageError, match="StockBookQuote: not a valid protobuf body"):
        CODEC.decode(3000, body)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.sampled_from([0, 3000, 2785, 3315, 3045, 7]))
def test_arbitrary_bytes_never_crash_the_decoder(body: bytes, number: int) -> None:
    with contextlib.suppress(MessageError):
        CODEC.decode(number, body)


def test_non_finite_floats_are_refused_like_nan_in_json() -> None:
    cls: Any = CODEC.message_class("StockBookQuote")
    msg = cls()
    msg.bid_price1 = float("nan")
    with pytest.raises(MessageError, match="non-finite"):
        CODEC.decode(3000, msg.SerializeToString())


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_shortest_float32_reads_back_as_the_same_float32(value: float) -> None:
    short = shortest_float32(value)
    assert F32.unpack(F32.pack(short))[0] == value
    assert short == float(f"{short:.9g}")  # nine significant digits at most


@given(st.decimals(min_value=-99999, max_value=99999, places=2, allow_nan=False))
def test_short_decimals_survive_the_32_bit_trip(value: Any) -> None:
    """What MLink's JSON prints for a float field comes back exactly."""
    decimal = float(value)
    assert shortest_float32(F32.unpack(F32.pack(decimal))[0]) == decimal


@given(st.integers(min_value=-(10**17), max_value=4 * 10**18))
def test_datetime_text_round_trips(ns: int) -> None:
    assert parse_datetime(format_datetime(ns)) == ns


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_timespan_text_round_trips(ns: int) -> None:
    assert parse_timespan(format_timespan(ns)) == ns


def test_timespan_takes_the_simulators_time_of_day_form() -> None:
    assert parse_timespan("14:30:05.250000") == ((14 * 60 + 30) * 60 + 5) * 10**9 + 250_000_000
    assert format_timespan(parse_timespan("14:30:05.250000")) == "14:30:05.250000"
    with pytest.raises(MessageError):
        parse_timespan("14h30")


# -- the session on /mlink/proto --------------------------------------------------------------


def frame_of(doc: dict[str, Any]) -> bytes:
    return CODEC.encode_frame(doc)


def test_session_speaks_protobuf_end_to_end() -> None:
    sub = Subscription("s1", MLinkStream("s1", "StockBookQuote", active_latency=0))
    session = MLinkSession([sub], form=WireForm.PROTO, clock=lambda: 1_700_000_000_000_000_000)
    session.connected()
    (sent,) = session.data_to_send()
    (frame,) = iter_frames(sent)
    assert frame.kind == "P"
    assert CODEC.to_envelope(frame.number, frame.body)["header"]["mTyp"] == "MLinkStream"

    quote = {"pkey": {"ticker": AAPL}, "bidPrice1": 1.5}
    payload = b"".join(
        frame_of(d)
        for d in (
            {"header": {"mTyp": "MLinkAdmin"}, "message": {"state": "LoggedOn"}},
            {
                "header": {"mTyp": "MLinkStreamAck"},
                "message": {"msgName": "StockBookQuote", "result": "OK"},
            },
            {"header": {"mTyp": "MLinkStreamCheckPt"}, "message": {"state": "Begin"}},
            {"header": {"mTyp": "StockBookQuote"}, "message": quote},
            {"header": {"mTyp": "MLinkStreamCheckPt"}, "message": {"state": "Complete"}},
        )
    )
    events = session.receive(payload)
    kinds = [type(e) for e in events]
    assert kinds == [Authenticated, SubscriptionAcked, SnapshotBegin, Record, SnapshotComplete]
    record = events[3]
    assert isinstance(record, Record)
    assert record.record.message == quote
    assert session.phase == "live"


def test_crlf_inside_binary_bodies_does_not_split_frames() -> None:
    """Protobuf bodies are binary: a \\r\\n (even one followed by what looks like a header)
    inside a body must not end the frame."""
    sub = Subscription("s1", MLinkStream("s1", "StockBookQuote"))
    session = MLinkSession([sub], form=WireForm.PROTO)
    session.connected()
    tricky = {"at": "EQT", "ts": "NMS", "tk": "A\r\nP03000000010B"}
    crlf_float = F32.unpack(b"\x0d\x0aP\x40")[0]  # its little-endian bytes hold \r\nP
    docs = [
        {"header": {"mTyp": "MLinkAdmin"}, "message": {"state": "LoggedOn"}},
        {
            "header": {"mTyp": "StockBookQuote"},
            "message": {"pkey": {"ticker": tricky}, "bidPrice1": crlf_float},
        },
        {"header": {"mTyp": "StockBookQuote"}, "message": {"pkey": {"ticker": AAPL}}},
    ]
    payload = b"".join(frame_of(d) for d in docs)
    assert payload.count(b"\r\nP") > len(docs)
    events = session.receive(payload)
    records = [e for e in events if isinstance(e, Record)]
    assert [r.record.message["pkey"]["ticker"]["tk"] for r in records] == [tricky["tk"], "AAPL"]
    assert F32.pack(records[0].record.message["bidPrice1"]) == b"\x0d\x0aP\x40"


def test_session_turns_undecodable_frames_into_protocol_violations() -> None:
    sub = Subscription("s1", MLinkStream("s1", "StockBookQuote"))
    session = MLinkSession([sub], form=WireForm.PROTO)
    session.connected()
    payload = encode_frame(b"\x0a\xff\xff", 3000, "P") + encode_frame(b"", 4242, "P")
    payload += frame_of({"header": {"mTyp": "MLinkAdmin"}, "message": {"state": "LoggedOn"}})
    events = session.receive(payload)
    assert [type(e) for e in events] == [ProtocolViolation, ProtocolViolation, Authenticated]
    first = events[0]
    assert isinstance(first, ProtocolViolation)
    assert first.raw == b"\x0a\xff\xff"  # the bytes go to the dead-letter topic


# -- descriptor sets --------------------------------------------------------------------------


def test_a_descriptor_set_file_is_used_before_the_bundled_one(tmp_path: Path) -> None:
    codec = ProtoCodec.load(BUNDLED)
    assert codec.message_class("StockBookQuote") is not None
    with pytest.raises(ConfigError, match="MLINK_PROTO_DESCRIPTORS: cannot read"):
        ProtoCodec.load(tmp_path / "missing.protoset")
    garbage = tmp_path / "garbage.protoset"
    garbage.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ConfigError, match="not a compiled descriptor set"):
        ProtoCodec.load(garbage)


def test_a_set_compiled_without_its_imports_is_refused(tmp_path: Path) -> None:
    full = descriptor_pb2.FileDescriptorSet.FromString(BUNDLED.read_bytes())
    partial = descriptor_pb2.FileDescriptorSet()
    partial.file.extend(f for f in full.file if f.name == "mlink_data.proto")
    path = tmp_path / "partial.protoset"
    path.write_bytes(partial.SerializeToString())
    with pytest.raises(ConfigError, match="--include_imports"):
        ProtoCodec.load(path)


def test_numbers_learned_at_run_time_win() -> None:
    codec = ProtoCodec.load()
    codec.learn({"StockBookQuote": 3001})
    doc = {"header": {"mTyp": "StockBookQuote"}, "message": {"pkey": {"ticker": AAPL}}}
    number, body = codec.from_envelope(doc)
    assert number == 3001
    record = codec.decode(3001, body)
    assert isinstance(record, DataRecord)
    assert record.mtyp == "StockBookQuote"


def test_default_simulated_types_are_all_in_the_bundled_set() -> None:
    for name in DEFAULT_TYPES:
        assert CODEC.message_class(name) is not None
