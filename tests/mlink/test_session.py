from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge.errors import GarbledFrame, MessageError
from bridge.mlink.framing import WireForm, encode_frame
from bridge.mlink.messages import (
    MLinkLogon,
    MLinkQuery,
    MLinkStream,
    MsgTypeFilter,
    QueryType,
    parse_stamp,
)
from bridge.mlink.session import (
    _MAX_SPELLINGS,
    CONNECTION_TABLE,
    SUBSCRIPTION_TABLE,
    AdminInput,
    Authenticated,
    AuthFailed,
    ConnState,
    MLinkSession,
    Phase,
    ProtocolViolation,
    Record,
    ServerClosing,
    SnapshotBegin,
    SnapshotComplete,
    SubAction,
    SubInput,
    SubscriptionAcked,
    SubscriptionEnded,
    SubscriptionFailed,
    SubState,
)
from bridge.mlink.session import Subscription as Sub

AMZN = {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AMZN"}}


def msg(mtyp: str, message: dict[str, Any], **header: Any) -> bytes:
    return orjson.dumps({"header": {"mTyp": mtyp, **header}, "message": message})


def admin(state: str) -> bytes:
    return msg("MLinkAdmin", {"state": state})


def ack(name: str = "stockbookquote", result: str = "OK") -> bytes:
    return msg("MLinkStreamAck", {"msgName": name, "result": result})


def checkpoint(state: str, **extra: Any) -> bytes:
    return msg("MLinkStreamCheckPt", {"state": state, **extra})


def response(label: str, state: str, **extra: Any) -> bytes:
    return msg("MLinkResponse", {"queryLabel": label, "state": state, **extra})


def quote(bid: float = 141.69, stamp: str = "2023-11-09 15:26:29.699590", **header: Any) -> bytes:
    body = {"pkey": AMZN, "bidPrice1": bid, "askPrice1": bid + 0.01}
    return msg("StockBookQuote", body, sTim=stamp, seqN=206, **header)


def stream(label: str = "q1", name: str = "stockbookquote") -> Sub:
    return Sub(label, MLinkStream(label, name, where="ticker.tk:eq:AMZN"))


def query(label: str = "q1", kind: QueryType = QueryType.FULL_SUBSCRIPTION) -> Sub:
    return Sub(label, MLinkQuery(label, kind, [MsgTypeFilter(msg_name="StockBookQuote")]))


def feed(session: MLinkSession, *payloads: bytes) -> list[Any]:
    events: list[Any] = []
    for p in payloads:
        events.extend(session.receive(p))
    return events


def sent(session: MLinkSession) -> list[dict[str, Any]]:
    return [orjson.loads(p) for p in session.data_to_send()]


# ---------------------------------------------------------------------------------------------
# The documented sequence (MLink websocket API, "Response Order" for AMZN)


def test_documented_stream_sequence() -> None:
    session = MLinkSession([stream()], clock=lambda: 1_699_543_583_464_116_000)
    assert session.phase is Phase.CONNECTING
    session.connected()
    (request,) = sent(session)
    assert request["header"]["mTyp"] == "MLinkStream"
    assert request["header"]["sTim"] == "2023-11-09 15:26:23.464116"
    assert request["message"] == {
        "queryLabel": "q1",
        "activeLatency": 1,
        "msgName": "stockbookquote",
        "where": "ticker.tk:eq:AMZN",
    }
    assert session.phase is Phase.AUTHENTICATING

    events = feed(session, admin("LoggedOn"))
    assert events == [Authenticated("LoggedOn")]
    assert session.phase is Phase.SUBSCRIBING
    assert session.data_to_send() == []  # header auth: the request went out already

    assert feed(session, ack()) == [SubscriptionAcked("q1", "stockbookquote")]
    assert feed(session, checkpoint("Begin")) == [SnapshotBegin("q1")]
    assert session.phase is Phase.SNAPSHOT
    (rec,) = feed(session, quote())
    assert isinstance(rec, Record)
    assert (rec.label, rec.snapshot, rec.record.mtyp) == ("q1", True, "StockBookQuote")
    assert rec.record.message["bidPrice1"] == 141.69
    assert feed(session, checkpoint("Active", numMessagesSent=1)) == []
    assert session.sub_state("q1") is SubState.ACTIVE
    assert session.phase is Phase.SNAPSHOT
    assert feed(session, checkpoint("Complete", waitElapsed=-22.02)) == [
        SnapshotComplete("q1", 1, None, None)
    ]
    assert session.phase is Phase.LIVE
    (live,) = feed(session, quote(141.64, "2023-11-09 15:26:47.543689"))
    assert isinstance(live, Record)
    assert (live.label, live.snapshot) == ("q1", False)
    assert session.highwater_ts("q1") == parse_stamp("2023-11-09 15:26:47.543689")


def test_logon_auth_sends_logon_first_and_subscribes_after_logged_on() -> None:
    logon = MLinkLogon(api_key="1234-5678", api_password="pw")
    session = MLinkSession([stream()], logon=logon, header_auth=False)
    session.connected()
    (first,) = sent(session)
    assert first == {
        "header": {"mTyp": "MLinkLogon"},
        "message": {"apiKey": "1234-5678", "apiPassword": "pw"},
    }
    assert "1234" not in repr(logon)
    assert "pw" not in repr(logon)
    assert feed(session, admin("LoggedOn")) == [Authenticated("LoggedOn")]
    (request,) = sent(session)
    assert request["header"]["mTyp"] == "MLinkStream"


def test_framed_session_sends_and_reads_frames() -> None:
    session = MLinkSession([stream()], form=WireForm.FRAMED)
    session.connected()
    (payload,) = session.data_to_send()
    assert payload[:14] == b"\r\nJ00000" + b"%06d" % (len(payload) - 14)
    events = session.receive(
        encode_frame(admin("LoggedOn")) + encode_frame(ack(), 0) + encode_frame(checkpoint("Begin"))
    )
    assert [type(e) for e in events] == [Authenticated, SubscriptionAcked, SnapshotBegin]


def test_auth_rejected() -> None:
    session = MLinkSession([stream()])
    session.connected()
    assert feed(session, msg("MLinkAdmin", {"state": "AuthError", "detail": "bad key"})) == [
        AuthFailed("AuthError", "bad key")
    ]
    assert session.phase is Phase.FAILED
    session.connection_lost()
    assert session.phase is Phase.FAILED


def test_waiting_logon_makes_a_header_session_log_on() -> None:
    session = MLinkSession([stream()], logon=MLinkLogon(jwt_token="ey.jwt"))
    session.connected()
    session.data_to_send()
    assert feed(session, admin("WaitingLogon")) == []
    (logon,) = sent(session)
    assert logon["message"] == {"jwtToken": "ey.jwt"}


def test_waiting_logon_without_credentials_fails() -> None:
    session = MLinkSession([stream()])
    session.connected()
    (failed,) = feed(session, admin("WaitingForLogon"))
    assert isinstance(failed, AuthFailed)
    assert session.phase is Phase.FAILED


def test_relogon_on_a_live_session() -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Begin"), checkpoint("Complete"))
    session.data_to_send()
    session.relogon(MLinkLogon(jwt_token="fresh"))
    (logon,) = sent(session)
    assert logon["message"]["jwtToken"] == "fresh"
    assert feed(session, admin("LoggedOn")) == [Authenticated("LoggedOn")]
    assert session.phase is Phase.LIVE


def test_good_night() -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"))
    assert feed(session, admin("GoodNight")) == [ServerClosing("GoodNight", "")]
    assert session.phase is Phase.CLOSING
    session.connection_lost()
    assert session.phase is Phase.CLOSED


def test_error_ack() -> None:
    session = MLinkSession([stream()])
    session.connected()
    events = feed(
        session,
        admin("LoggedOn"),
        msg(
            "MLinkStreamAck", {"msgName": "nosuch", "result": "Error", "detail": "unknown msgName"}
        ),
    )
    assert events[-1] == SubscriptionFailed("q1", "unknown msgName")
    assert session.sub_state("q1") is SubState.FAILED


def test_data_before_ack_starts_the_snapshot() -> None:
    session = MLinkSession([stream()])
    session.connected()
    events = feed(session, admin("LoggedOn"), quote(), ack(), checkpoint("Complete"))
    assert [type(e) for e in events] == [
        Authenticated,
        SnapshotBegin,
        Record,
        SubscriptionAcked,
        SnapshotComplete,
    ]
    assert events[2].snapshot is True
    assert events[-1].records == 1


@pytest.mark.parametrize("state", ["Terminated", "Replaced", "Error"])
def test_ending_checkpoints(state: str) -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Begin"), checkpoint("Complete"))
    events = feed(session, checkpoint(state, detail="replaced by newer query"))
    assert events == [SubscriptionEnded("q1", state, "replaced by newer query")]
    assert session.sub_state("q1") is SubState.ENDED


def test_several_streams_are_matched_in_request_order() -> None:
    subs = [stream("p", "stockprint"), stream("b", "stockbookquote")]
    session = MLinkSession(subs)
    session.connected()
    assert [r["message"]["queryLabel"] for r in sent(session)] == ["p", "b"]
    print_rec = msg("StockPrint", {"pkey": AMZN, "prtPrice": 141.7})
    events = feed(
        session,
        admin("LoggedOn"),
        ack("stockprint"),
        checkpoint("Begin"),
        print_rec,
        checkpoint("Active"),
        checkpoint("Complete"),
        ack("stockbookquote"),
        checkpoint("Begin"),
        print_rec,  # live print while the book snapshot runs
        quote(),
        checkpoint("Complete"),
    )
    summary = [
        (type(e).__name__, getattr(e, "label", None), getattr(e, "snapshot", None))
        for e in events
        if not isinstance(e, Authenticated)
    ]
    assert summary == [
        ("SubscriptionAcked", "p", None),
        ("SnapshotBegin", "p", None),
        ("Record", "p", True),
        ("SnapshotComplete", "p", None),
        ("SubscriptionAcked", "b", None),
        ("SnapshotBegin", "b", None),
        ("Record", "p", False),
        ("Record", "b", True),
        ("SnapshotComplete", "b", None),
    ]
    assert session.phase is Phase.LIVE


def test_query_responses_carry_labels() -> None:
    session = MLinkSession([query("a"), query("b", QueryType.FULL_QUERY)])
    session.connected()
    requests = sent(session)
    assert requests[1]["message"]["queryType"] == "FullQuery"
    assert requests[0]["message"]["MsgTypes"] == [{"msgName": "StockBookQuote"}]
    events = feed(
        session,
        admin("LoggedOn"),
        response("b", "Begin"),
        response("b", "Complete", numMessagesSent=0, highwaterTs=1_699_543_607_000_000_000),
    )
    assert events[-1] == SnapshotComplete("b", 0, 0, 1_699_543_607_000_000_000)
    assert session.sub_state("b") is SubState.DONE
    assert session.sub_state("a") is SubState.PENDING
    assert session.highwater_ts("b") == 1_699_543_607_000_000_000


def test_unsolicited_record_has_no_label() -> None:
    session = MLinkSession([stream()])
    session.connected()
    (event,) = feed(session, msg("OptionPrint", {"pkey": {}}))
    assert isinstance(event, Record)
    assert event.label is None


def test_deleted_record_is_flagged() -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Begin"), checkpoint("Complete"))
    (event,) = feed(session, quote(isDel=True))
    assert isinstance(event, Record)
    assert event.record.deleted is True


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{not json", MessageError),
        (b'{"header":{"mTyp":"StockBookQuote"},"message":{"bidPrice1":NaN}}', MessageError),
        (b'{"header":{"mTyp":"X"},"message":{"a":Infinity}}', MessageError),
        (b"[1,2]", MessageError),
        (b'{"message":{}}', MessageError),
        (b'{"header":{"mTyp":""}}', MessageError),
        (b'{"header":{"mTyp":"X"},"message":[1]}', MessageError),
        (b"\r\nJ0000000009{}", GarbledFrame),
    ],
)
def test_bad_input_becomes_a_protocol_violation(payload: bytes, error: type[Exception]) -> None:
    session = MLinkSession(
        [stream()], form=WireForm.FRAMED if error is GarbledFrame else WireForm.JSON
    )
    session.connected()
    (event,) = session.receive(payload)
    assert isinstance(event, ProtocolViolation)
    assert isinstance(event.error, error)
    assert event.raw in payload


def test_a_bad_frame_in_the_middle_keeps_the_good_ones() -> None:
    session = MLinkSession([stream()], form=WireForm.FRAMED)
    session.connected()
    good = encode_frame(admin("LoggedOn"))
    events = session.receive(good + encode_frame(b"{bad json") + encode_frame(ack()))
    assert [type(e) for e in events] == [Authenticated, ProtocolViolation, SubscriptionAcked]


def test_unknown_states_are_violations() -> None:
    session = MLinkSession([stream()])
    session.connected()
    (ev1,) = feed(session, admin("Sleepy"))
    (ev2,) = feed(session, checkpoint("Paused"))
    assert isinstance(ev1, ProtocolViolation)
    assert "Sleepy" in str(ev1.error)
    assert isinstance(ev2, ProtocolViolation)


def test_checkpoint_without_a_subscription_is_a_violation() -> None:
    session = MLinkSession([stream("a"), stream("b")])
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Complete"), ack(), checkpoint("Complete"))
    assert session.phase is Phase.LIVE
    (late,) = feed(session, checkpoint("Complete"))
    (ambiguous,) = feed(session, checkpoint("Active"))  # two live streams, no label
    assert isinstance(late, ProtocolViolation)
    assert isinstance(ambiguous, ProtocolViolation)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="unique"):
        MLinkSession([stream("x"), stream("x")])
    with pytest.raises(ValueError, match="MLinkLogon"):
        MLinkSession([stream()], header_auth=False)
    with pytest.raises(ValueError, match="MLinkLogon needs"):
        MLinkLogon()


# ---------------------------------------------------------------------------------------------
# The tables, row by row: drive a session into the row's state with real messages, feed the
# row's input as a real message, and check the state it lands in.

STATE_RECIPES: dict[SubState, list[bytes]] = {
    SubState.PENDING: [],
    SubState.ACKED: [ack()],
    SubState.SNAPSHOT: [checkpoint("Begin")],  # not acked yet, so the ack rows apply
    SubState.ACTIVE: [checkpoint("Begin"), checkpoint("Active")],
    SubState.LIVE: [ack(), checkpoint("Begin"), checkpoint("Complete")],
}
INPUT_MESSAGES: dict[SubInput, bytes] = {
    SubInput.ACK_OK: ack(),
    SubInput.ACK_ERROR: ack(result="Error"),
    SubInput.BEGIN: checkpoint("Begin"),
    SubInput.ACTIVE: checkpoint("Active"),
    SubInput.COMPLETE: checkpoint("Complete"),
    SubInput.ENDED: checkpoint("Terminated"),
    SubInput.DATA: quote(),
}


ACTION_EVENTS: dict[SubAction, list[type]] = {
    SubAction.NONE: [],
    SubAction.ACKED: [SubscriptionAcked],
    SubAction.FAILED: [SubscriptionFailed],
    SubAction.BEGIN: [SnapshotBegin],
    SubAction.BEGIN_AND_RECORD: [SnapshotBegin, Record],
    SubAction.SNAPSHOT_RECORD: [Record],
    SubAction.LIVE_RECORD: [Record],
    SubAction.COMPLETE: [SnapshotComplete],
    SubAction.BEGIN_AND_COMPLETE: [SnapshotBegin, SnapshotComplete],
    SubAction.ENDED: [SubscriptionEnded],
}


@pytest.mark.parametrize(("row", "outcome"), list(SUBSCRIPTION_TABLE.items()), ids=str)
def test_subscription_table_row(
    row: tuple[SubState, SubInput], outcome: tuple[SubState, SubAction]
) -> None:
    state, sub_input = row
    expected_events = ACTION_EVENTS[outcome[1]]
    if state is SubState.UNSENT:  # logon auth: subscriptions wait for LoggedOn
        session = MLinkSession([stream()], logon=MLinkLogon(api_key="k"), header_auth=False)
        session.connected()
        assert session.sub_state("q1") is SubState.UNSENT
        feed(session, admin("LoggedOn"))
    elif state is SubState.DONE:
        session = MLinkSession([query("q1", QueryType.FULL_QUERY)])
        session.connected()
        feed(session, admin("LoggedOn"), response("q1", "Complete"))
        assert session.sub_state("q1") is SubState.DONE
        events = feed(session, INPUT_MESSAGES[sub_input])
        assert [type(e) for e in events] == expected_events
    else:
        session = MLinkSession([stream()])
        session.connected()
        feed(session, admin("LoggedOn"), *STATE_RECIPES[state])
        assert session.sub_state("q1") is state
        events = feed(session, INPUT_MESSAGES[sub_input])
        assert [type(e) for e in events] == expected_events
    assert session.sub_state("q1") is outcome[0]


@pytest.mark.parametrize(("row", "outcome"), list(CONNECTION_TABLE.items()), ids=str)
def test_connection_table_row(
    row: tuple[ConnState, AdminInput], outcome: tuple[ConnState, object]
) -> None:
    state, admin_input = row
    session = MLinkSession([stream()], logon=MLinkLogon(api_key="k"))
    recipes: dict[ConnState, list[bytes]] = {
        ConnState.AUTHENTICATING: [],
        ConnState.READY: [admin("LoggedOn")],
        ConnState.CLOSING: [admin("GoodNight")],
        ConnState.FAILED: [admin("LogonFailed")],
    }
    if state is not ConnState.CONNECTING:
        session.connected()
        if state is ConnState.CLOSED:
            session.connection_lost()
        else:
            feed(session, *recipes[state])
    assert session.conn_state is state
    inputs = {
        AdminInput.CONNECTED: session.connected,
        AdminInput.CLOSED: session.connection_lost,
        AdminInput.LOGGED_ON: lambda: feed(session, admin("LoggedOn")),
        AdminInput.WAITING_LOGON: lambda: feed(session, admin("WaitingLogon")),
        AdminInput.REJECTED: lambda: feed(session, admin("LogonFailed")),
        AdminInput.GOOD_NIGHT: lambda: feed(session, admin("GoodNight")),
    }
    inputs[admin_input]()
    assert session.conn_state is outcome[0]


# ---------------------------------------------------------------------------------------------
# Several subscriptions of one message type, resumption marks, and odd servers


def where_tk(tk: str) -> Any:
    return lambda message: message.get("pkey", {}).get("ticker", {}).get("tk") == tk


def book(tk: str, stamp: str = "2023-11-09 15:26:29.699590") -> bytes:
    body = {"pkey": {"ticker": {"at": "EQT", "ts": "NMS", "tk": tk}}, "bidPrice1": 1.0}
    return msg("StockBookQuote", body, sTim=stamp)


def test_same_type_subscriptions_are_told_apart_by_their_filters() -> None:
    subs = [
        Sub(
            "amzn",
            MLinkStream("amzn", "StockBookQuote", where="ticker.tk:eq:AMZN"),
            where_tk("AMZN"),
        ),
        Sub(
            "aapl",
            MLinkStream("aapl", "StockBookQuote", where="ticker.tk:eq:AAPL"),
            where_tk("AAPL"),
        ),
    ]
    session = MLinkSession(subs)
    session.connected()
    feed(
        session, admin("LoggedOn"), ack(), checkpoint("Begin"), book("AMZN"), checkpoint("Complete")
    )
    # A live AMZN update arrives before the AAPL ack: it is AMZN's, not the start of AAPL's
    # snapshot; AAPL's own records still go to AAPL's snapshot.
    events = feed(
        session,
        book("AMZN"),
        ack(),
        checkpoint("Begin"),
        book("AMZN"),
        book("AAPL"),
        checkpoint("Complete"),
    )
    records = [(e.label, e.snapshot) for e in events if isinstance(e, Record)]
    assert records == [("amzn", False), ("amzn", False), ("aapl", True)]
    assert not any(isinstance(e, ProtocolViolation) for e in events)
    complete = [e for e in events if isinstance(e, SnapshotComplete)]
    assert complete == [SnapshotComplete("aapl", 1, None, None)]


def test_highwater_is_only_offered_from_a_completed_snapshot() -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Begin"))
    feed(session, quote(stamp="2023-11-09 15:26:40.000000"), quote(stamp="2023-11-09 15:26:30.0"))
    assert session.highwater_ts("q1") is None  # mid-snapshot: resuming would skip records
    feed(session, checkpoint("Complete"))
    assert session.highwater_ts("q1") == parse_stamp("2023-11-09 15:26:40.000000")
    feed(session, quote(stamp="2023-11-09 15:26:50.000000"))
    assert session.highwater_ts("q1") == parse_stamp("2023-11-09 15:26:50.000000")


def test_a_header_time_that_is_not_one_never_breaks_the_resume_mark() -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Begin"), checkpoint("Complete"))
    feed(session, quote(stamp="2023-11-09 15:26:40.000000"))
    feed(session, quote(stamp="2024-01-02T03:04:06Z"))  # sorts above the real ones
    assert session.highwater_ts("q1") is None  # forgotten: a resume takes a fresh snapshot
    feed(session, quote(stamp="2023-11-09 15:26:50.000000"))
    assert session.highwater_ts("q1") == parse_stamp("2023-11-09 15:26:50.000000")


def test_a_record_a_where_clause_cannot_compare_is_no_subscriptions() -> None:
    def cheap(message: Any) -> bool:
        return bool(message["bidPrice1"] < 10)  # TypeError for a string, as a real clause

    subs = [
        Sub("lo", MLinkStream("lo", "StockBookQuote", where="bidPrice1:lt:10"), cheap),
        Sub("hi", MLinkStream("hi", "StockBookQuote", where="bidPrice1:ge:10"), cheap),
    ]
    session = MLinkSession(subs)
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Begin"), checkpoint("Complete"))
    feed(session, ack(), checkpoint("Begin"), checkpoint("Complete"))
    bad = msg("StockBookQuote", {"pkey": {}, "bidPrice1": "x"}, sTim="2023-11-09 15:26:29.699590")
    events = feed(session, bad, book("AAPL"))
    assert [(e.label, e.record.message["bidPrice1"]) for e in events if isinstance(e, Record)] == [
        (None, "x"),  # the pipeline dead-letters it (stage routing)
        ("lo", 1.0),  # and the stream goes on
    ]


def test_waiting_logon_sends_one_logon_and_resubscribes_after_logged_on() -> None:
    session = MLinkSession([stream("a"), stream("b", "stockprint")], logon=MLinkLogon(api_key="k"))
    session.connected()
    assert len(sent(session)) == 2  # header auth: both requests went out at once
    feed(session, admin("WaitingForLogon"), admin("WaitingForLogon"))
    (logon,) = sent(session)
    assert logon["header"]["mTyp"] == "MLinkLogon"
    assert session.sub_state("a") is SubState.UNSENT
    feed(session, admin("LoggedOn"))
    assert [r["message"]["queryLabel"] for r in sent(session)] == ["a", "b"]
    assert session.sub_state("b") is SubState.PENDING


def test_labels_that_are_not_strings_do_not_break_the_session() -> None:
    session = MLinkSession([query("q1")])
    session.connected()
    events = feed(
        session,
        admin("LoggedOn"),
        msg("MLinkResponse", {"queryLabel": ["q1"], "state": "Begin"}),
        msg("MLinkStreamAck", {"queryLabel": {"x": 1}, "msgName": "x", "result": "OK"}),
    )
    assert session.sub_state("q1") is SubState.SNAPSHOT  # matched by order instead
    assert isinstance(events[-1], ProtocolViolation)  # an ack nothing waits for


def test_phase_is_failed_when_every_subscription_was_refused() -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"), ack(result="Error"))
    assert session.phase is Phase.FAILED


def test_the_live_data_fast_path_is_the_tables_row() -> None:
    # MLinkSession._on_data takes (LIVE, DATA) without walking the table: they must agree.
    assert SUBSCRIPTION_TABLE[(SubState.LIVE, SubInput.DATA)] == (
        SubState.LIVE,
        SubAction.LIVE_RECORD,
    )


def test_type_names_match_in_any_spelling_and_what_is_remembered_is_bounded() -> None:
    session = MLinkSession([stream()])
    session.connected()
    feed(session, admin("LoggedOn"), ack(), checkpoint("Begin"), checkpoint("Complete"))
    strays = [msg(f"Stray{i}", {"pkey": {}}) for i in range(_MAX_SPELLINGS + 10)]
    assert all(e.label is None for e in feed(session, *strays))  # unsolicited; 1024 remembered
    for name in ("StockBookQuote", "STOCKBOOKQUOTE", "stockbookquote"):
        body = {"pkey": AMZN, "bidPrice1": 1.0}
        (event,) = feed(session, msg(name, body, sTim="2023-11-09 15:26:29.699590"))
        assert isinstance(event, Record)
        assert event.label == "q1"
    assert len(session._by_type) <= _MAX_SPELLINGS
