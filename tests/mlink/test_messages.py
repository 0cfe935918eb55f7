from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import MessageError
from bridge.mlink.framing import WireForm, iter_frames
from bridge.mlink.messages import (
    CONTROL_TYPES,
    Ack,
    AdminMessage,
    CheckPoint,
    DataRecord,
    MLinkLogon,
    MLinkQuery,
    MLinkSignalReady,
    MLinkStream,
    MLinkSubscribe,
    MsgTypeFilter,
    QueryType,
    encode_request,
    format_stamp,
    parse_data_record,
    parse_message,
    parse_stamp,
)

AAPL = {"at": "EQT", "ts": "NMS", "tk": "AAPL"}


def test_stamps_round_trip_at_microsecond_precision() -> None:
    ns = 1_699_543_589_698_404_599
    assert format_stamp(ns) == "2023-11-09 15:26:29.698404"
    assert parse_stamp("2023-11-09 15:26:29.698404") == 1_699_543_589_698_404_000
    with pytest.raises(MessageError):
        parse_stamp("yesterday")


def test_stream_request_as_the_docs_show_it() -> None:
    req = MLinkStream("ExampleStockBookQuote", "stockbookquote", where="ticker.tk:eq:AMZN")
    doc = orjson.loads(encode_request(req, WireForm.JSON, sent_ns=1_699_543_583_464_116_000))
    assert doc == {
        "header": {
            "mTyp": "MLinkStream",
            "sTim": "2023-11-09 15:26:23.464116",
            "encT": "2023-11-09 15:26:23.464116",
        },
        "message": {
            "queryLabel": "ExampleStockBookQuote",
            "activeLatency": 1,
            "msgName": "stockbookquote",
            "where": "ticker.tk:eq:AMZN",
        },
    }


def test_stream_request_with_view_and_highwater() -> None:
    req = MLinkStream("q", "StockPrint", view="prtPrice|prtSize", active_latency=0, highwater_ts=5)
    assert req.to_message() == {
        "queryLabel": "q",
        "activeLatency": 0,
        "msgName": "StockPrint",
        "view": "prtPrice|prtSize",
        "highwaterTs": 5,
    }


def test_framed_request_header() -> None:
    payload = encode_request(MLinkSignalReady(ready_scan="FullScan"), WireForm.FRAMED)
    (frame,) = iter_frames(payload)
    assert payload.startswith(b"\r\nJ00000")
    assert orjson.loads(frame.body)["message"] == {"readyScan": "FullScan"}
    numbered = encode_request(MLinkSignalReady("q"), WireForm.FRAMED, number=3310)
    assert numbered.startswith(b"\r\nJ03310")


def test_protobuf_form_is_not_encoded_here() -> None:
    with pytest.raises(ValueError, match="protobuf"):
        encode_request(MLinkSignalReady(), WireForm.PROTO)


@pytest.mark.parametrize("query_type", list(QueryType))
def test_every_query_type(query_type: QueryType) -> None:
    req = MLinkQuery(
        "q1",
        query_type,
        [
            MsgTypeFilter(msg_type=3000),
            MsgTypeFilter(msg_name="StockBookQuote", where="bidSize1:gt:5"),
        ],
        tkey_filters=[AAPL],
        ekey_filters=[{**AAPL, "dt": "2024-09-20"}],
        okey_filters=[{**AAPL, "dt": "2024-09-20", "xx": 180, "cp": "Call"}],
        highwater_ts=1_699_543_583_000_000_000,
    )
    assert req.to_message() == {
        "queryLabel": "q1",
        "queryType": query_type.value,
        "activeLatency": 1,
        "MsgTypes": [{"msgType": 3000}, {"msgName": "StockBookQuote", "where": "bidSize1:gt:5"}],
        "highwaterTs": 1_699_543_583_000_000_000,
        "TKeyFilters": [{"tickerKey": AAPL}],
        "EKeyFilters": [{"expiryKey": {**AAPL, "dt": "2024-09-20"}}],
        "OKeyFilters": [{"optionKey": {**AAPL, "dt": "2024-09-20", "xx": 180, "cp": "Call"}}],
    }
    assert query_type.is_subscription is query_type.value.endswith("Subscription")


def test_subscribe_request_as_the_samples_show_it() -> None:
    req = MLinkSubscribe(
        subscribe=[("StockBookQuote", "AAPL-NMS-EQT")],
        views=[("StockBookQuote", "askPrice1|bidPrice1")],
        unsubscribe=[("StockBookQuote", "MSFT-NMS-EQT")],
    )
    assert req.to_message() == {
        "activeLatency": 1,
        "doReset": "No",
        "View": [{"msgName": "StockBookQuote", "view": "askPrice1|bidPrice1"}],
        "Subscribe": [{"msgName": "StockBookQuote", "msgPKey": "AAPL-NMS-EQT"}],
        "Unsubscribe": [{"msgName": "StockBookQuote", "msgPKey": "MSFT-NMS-EQT"}],
    }


def test_logon_variants_and_secrets() -> None:
    assert MLinkLogon(api_key="k").to_message() == {"apiKey": "k"}
    assert MLinkLogon(jwt_token="ey.a.b").to_message() == {"jwtToken": "ey.a.b"}
    logon = MLinkLogon(api_key="key-123", api_password="pw-456", jwt_token="jwt-789")
    text = repr(logon) + str(logon)
    for secret in ("key-123", "pw-456", "jwt-789"):
        assert secret not in text


def test_parse_admin_ack_checkpoint_response() -> None:
    admin = parse_message(b'{"header":{"mTyp":"MLinkAdmin"},"message":{"state":"LoggedOn"}}')
    assert admin == AdminMessage("LoggedOn")
    ack = parse_message(
        b'{"header":{"mTyp":"MLinkStreamAck"},"message":{"msgName":"x","result":"OK"}}'
    )
    assert isinstance(ack, Ack)
    assert ack.ok
    bad = parse_message(
        b'{"header":{"mTyp":"MLinkSubscribeAck"},"message":{"result":"Error","detail":"no"}}'
    )
    assert isinstance(bad, Ack)
    assert not bad.ok
    assert bad.detail == "no"
    cp = parse_message(
        b'{"header":{"mTyp":"MLinkStreamCheckPt"},"message":{"state":"Active","numMessagesSent":1}}'
    )
    assert cp == CheckPoint("MLinkStreamCheckPt", "Active", None, "", 1, None)
    response = parse_message(
        b'{"header":{"mTyp":"MLinkResponse"},"message":{"queryLabel":"q","state":"Complete",'
        b'"highwaterTs":17,"numMessagesSent":3,"numBytesSent":900}}'
    )
    assert response == CheckPoint("MLinkResponse", "Complete", "q", "", 3, 17)
    rest = parse_message(b'{"header":{"mTyp":"QueryResult"},"message":{"result":"Ok"}}')
    assert isinstance(rest, CheckPoint)
    assert rest.state == "Complete"


def test_parse_data_record_keeps_the_raw_body() -> None:
    body = (
        b'{"header":{"mTyp":"StockBookQuote","seqN":206,"sTim":"2023-11-09 15:26:29.699590"},'
        b'"message":{"pkey":{"ticker":{"at":"EQT","ts":"NMS","tk":"AMZN"}},"bidPrice1":141.69}}'
    )
    record = parse_message(body)
    assert isinstance(record, DataRecord)
    assert record.raw == body
    assert record.message["bidPrice1"] == 141.69
    assert record.deleted is False
    gone = parse_message(b'{"header":{"mTyp":"StockBookQuote","isDel":true},"message":{"pkey":{}}}')
    assert isinstance(gone, DataRecord)
    assert gone.deleted is True
    empty = parse_message(b'{"header":{"mTyp":"StockBookQuote"}}')
    assert isinstance(empty, DataRecord)
    assert empty.message == {}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"header":{"mTyp":"X"},"message":{"a":NaN}}', "invalid JSON"),
        (b'{"header":{"mTyp":"X"},"message":{"a":-Infinity}}', "invalid JSON"),
        (b'{"header":{"mTyp":"X"},"message":{"a":1', "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"null", "not an object"),
        (b'{"header":"x"}', "no header"),
        (b'{"header":{"mTyp":7}}', "no mTyp"),
        (b'{"header":{"mTyp":"X"},"message":"text"}', "not an object"),
    ],
)
def test_unreadable_messages_have_named_reasons(body: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        parse_message(body)


HEADERS = st.one_of(
    st.none(),
    st.just("x"),
    st.fixed_dictionaries(
        {
            "mTyp": st.sampled_from(
                [*sorted(CONTROL_TYPES), "StockBookQuote", "MLinkDataAck", "", 7]
            )
        },
        optional={"isDel": st.sampled_from([True, False, 1, 0, None]), "seqN": st.integers(0, 99)},
    ),
)
MESSAGES = st.one_of(
    st.none(), st.just("text"), st.just([1]), st.dictionaries(st.text(), st.integers(0, 99))
)


@given(HEADERS, MESSAGES, st.booleans())
def test_the_data_record_fast_lane_agrees_with_parse_message(
    header: Any, message: Any, with_message: bool
) -> None:
    doc: dict[str, Any] = {"header": header}
    if with_message:
        doc["message"] = message
    body = orjson.dumps(doc)
    fast = parse_data_record(body)
    try:
        slow: object = parse_message(body)
    except MessageError as exc:
        slow = exc
    if fast is not None:
        assert fast == slow
    if isinstance(slow, DataRecord) and isinstance(message, dict) and with_message:
        assert fast == slow  # every well-formed data record takes the fast lane


@pytest.mark.parametrize("body", [b"\xff", b"null", b"[1]", b'{"header":1}', b"{"])
def test_the_fast_lane_leaves_bad_bodies_to_parse_message(body: bytes) -> None:
    assert parse_data_record(body) is None
    with pytest.raises(MessageError):
        parse_message(body)
