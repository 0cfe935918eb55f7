from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import FramingError, GarbledFrame, OversizedFrame, TruncatedFrame
from bridge.mlink import framing
from bridge.mlink.framing import (
    Frame,
    encode_frame,
    iter_frames,
    iter_messages,
    split_frames,
    split_messages,
)

BUILT = framing._native


@pytest.fixture(scope="module", autouse=True, params=["python", "native"])
def splitter(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs against both splitters: the C fast path and the Python one."""
    if request.param == "native" and BUILT is None:
        pytest.fail("the C extension bridge.mlink._framing_native is not built")
    framing._native = BUILT if request.param == "native" else None
    yield request.param
    framing._native = BUILT


# Golden bytes: the REST docs frame OptionNbboQuote as J02745 + 6-digit length; the protobuf
# sample sends MLinkQuery as P03310; the JSON sample client sends number 00000.


def test_encode_frame_golden_json() -> None:
    assert encode_frame(b'{"a":1}', 2745, "J") == b"\r\nJ02745000007" + b'{"a":1}'


def test_encode_frame_golden_proto_query() -> None:
    body = b"\x0a\x03abc\r\n\x00"
    assert encode_frame(body, 3310, "P") == b"\r\nP03310000008" + body


def test_encode_matches_sample_client_header() -> None:
    smsg = '{"header": {"mTyp": "MLinkStream"}, "message": {}}'
    sample = "".join(["\r\nJ", "%011d" % len(smsg), smsg]).encode()  # noqa: UP031 (the sample's)
    assert encode_frame(smsg.encode(), 0, "J") == sample


def test_encode_rejects_bad_kind_number_and_size() -> None:
    with pytest.raises(ValueError, match="kind"):
        encode_frame(b"x", 0, "X")
    with pytest.raises(ValueError, match="five digits"):
        encode_frame(b"x", 100_000, "J")
    with pytest.raises(OversizedFrame):
        encode_frame(b"x" * 1_000_000, 0, "J")


def test_several_frames_in_one_payload() -> None:
    payload = encode_frame(b'{"a":1}', 3000) + encode_frame(b"\r\n\r\n", 3045, "P")
    assert list(iter_frames(payload)) == [
        Frame("J", 3000, b'{"a":1}'),
        Frame("P", 3045, b"\r\n\r\n"),
    ]


def test_binary_body_containing_frame_marks_is_parsed_by_length() -> None:
    tricky = b"\r\nJ03000000002{}" * 3
    payload = encode_frame(tricky, 3000, "P") + encode_frame(b"{}", 1)
    frames = list(iter_frames(payload))
    assert [f.body for f in frames] == [tricky, b"{}"]


def test_trailing_whitespace_is_ignored() -> None:
    assert list(iter_frames(encode_frame(b"{}") + b"\r\n")) == [Frame("J", 0, b"{}")]


def test_truncated_body_raises_after_yielding_good_frames() -> None:
    good = encode_frame(b'{"ok":1}', 1)
    bad = encode_frame(b'{"cut":true}', 2)[:-3]
    seen: list[Frame] = []
    with pytest.raises(TruncatedFrame, match="announces 12 bytes"):
        seen.extend(iter_frames(good + bad))
    assert seen == [Frame("J", 1, b'{"ok":1}')]


def test_truncated_header() -> None:
    with pytest.raises(TruncatedFrame, match="header cut short"):
        list(iter_frames(b"\r\nJ0300"))


@pytest.mark.parametrize(
    "header",
    [
        b"\r\nX03000000002",  # kind
        b"\r\nJ03a00000002",  # number
        b"\r\nJ03000 00002",  # length with a space (int() would accept it)
        b"\r\nJ0300+000002",  # sign
        b"\n\rJ03000000002",  # mark
    ],
)
def test_garbled_headers(header: bytes) -> None:
    with pytest.raises(GarbledFrame):
        list(iter_frames(header + b"{}"))


def test_garbage_after_a_frame_is_garbled() -> None:
    with pytest.raises(GarbledFrame):
        list(iter_frames(encode_frame(b"{}") + b"junk-after-the-frame"))


def test_frame_over_the_cap() -> None:
    with pytest.raises(OversizedFrame, match="limit is 10"):
        list(iter_frames(encode_frame(b"x" * 11), max_message=10))


def test_payload_over_the_cap() -> None:
    with pytest.raises(OversizedFrame, match="payload"):
        list(iter_messages(b"{}" * 10, max_payload=5))


def test_plain_json_payload_is_one_message() -> None:
    assert list(iter_messages('{"header":{}}\r\n')) == [Frame("J", 0, b'{"header":{}}')]
    assert list(iter_messages(b"   ")) == []


def test_plain_json_message_over_the_cap() -> None:
    with pytest.raises(OversizedFrame):
        list(iter_messages(b"{" + b" " * 5 + b"1}", max_message=3))


frame_st = st.tuples(
    st.sampled_from(["J", "P"]), st.integers(0, 99_999), st.binary(max_size=300)
).map(lambda t: Frame(*t))


@given(st.lists(frame_st, max_size=8))
def test_round_trip_any_frames(frames: list[Frame]) -> None:
    payload = b"".join(encode_frame(f.body, f.number, f.kind) for f in frames)
    assert list(iter_frames(payload)) == frames


@given(st.lists(frame_st, min_size=1, max_size=5), st.data())
def test_any_cut_is_detected_never_misparsed(frames: list[Frame], data: st.DataObject) -> None:
    payload = b"".join(encode_frame(f.body, f.number, f.kind) for f in frames)
    cut = data.draw(st.integers(1, len(payload) - 1))
    got: list[Frame] = []
    with contextlib.suppress(TruncatedFrame, GarbledFrame):
        got.extend(iter_frames(payload[:cut]))
    # Whatever came out before the error is an exact prefix of what was sent.
    assert got == frames[: len(got)]
    assert len(got) < len(frames) or payload[cut:].strip() == b""


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(blob: bytes) -> None:
    try:
        for frame in iter_messages(b"\r\n" + blob):
            assert frame.kind in ("J", "P")
    except (TruncatedFrame, GarbledFrame, OversizedFrame):
        pass


def test_plain_json_tolerates_crlf_like_the_sample_client() -> None:
    payload = b'\r\n{"a":1}\r\n{"b":2}\r\n'
    assert [f.body for f in iter_messages(payload)] == [b'{"a":1}', b'{"b":2}']


def test_framed_endpoint_is_strict_about_headers() -> None:
    with pytest.raises(GarbledFrame):
        list(iter_messages(b"\r\nJ03000 00002{}", framed=True))
    # On a plain endpoint the same bytes are just text that is not a frame.
    assert [f.body for f in iter_messages(b"\r\nJ03000 00002{}")] == [b"J03000 00002{}"]


def test_twenty_thousand_frames_in_one_payload() -> None:
    payload = encode_frame(b"{}") * 20_000
    assert sum(1 for _ in iter_frames(payload)) == 20_000


def test_split_keeps_the_frames_before_an_error_and_returns_it() -> None:
    good = encode_frame(b'{"a":1}', 7) + encode_frame(b"\x00\r\n", 8, "P")
    frames, error = split_frames(good + b"\r\nJ00001000009{}")
    assert frames == [Frame("J", 7, b'{"a":1}'), Frame("P", 8, b"\x00\r\n")]
    assert isinstance(error, TruncatedFrame)
    assert str(error) == "framed message at offset 38 announces 9 bytes, 2 remain"
    frames, error = split_messages(good + b"\r\nJ00001000002{}", max_message=1)
    assert frames == []
    assert isinstance(error, OversizedFrame)
    assert str(error) == "framed message at offset 0 is 7 bytes; the limit is 1"


def test_split_messages_refuses_an_oversized_payload_whole() -> None:
    frames, error = split_messages(encode_frame(b"{}") * 3, max_payload=20)
    assert frames == []
    assert isinstance(error, OversizedFrame)


def _python_split(payload: bytes, max_message: int) -> tuple[list[Frame], FramingError | None]:
    native, framing._native = framing._native, None
    try:
        return split_frames(payload, max_message)
    finally:
        framing._native = native


# Bytes around frame headers: good frames, headers with a bad byte, cuts, white space.
piece_st = st.one_of(
    frame_st.map(lambda f: encode_frame(f.body, f.number, f.kind)),
    st.sampled_from([b"\r\n", b" \t\r\n", b"\r\nX0000000000", b"\r\nJ0000a000001x"]),
    st.binary(max_size=20),
)


@given(st.lists(piece_st, max_size=6), st.integers(0, 400))
def test_both_splitters_agree_on_any_payload(pieces: list[bytes], max_message: int) -> None:
    """The C splitter stands for the Python one: same frames, same error, same words."""
    payload = b"".join(pieces)
    frames, error = split_frames(payload, max_message)
    expected, expected_error = _python_split(payload, max_message)
    assert frames == expected
    assert all(type(f) is Frame for f in frames)
    assert type(error) is type(expected_error)
    assert str(error) == str(expected_error)
