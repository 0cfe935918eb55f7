"""The simulator's truth log: one JSON line per data record or delete it sent.

Tests replay it to prove that the bridge lost nothing: the latest line per (message type, key)
is what a compacted topic must hold (a delete means no value). Injected faults are logged too,
marked with `fault`, so that they can be told apart from data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson


class TruthLog:
    """Appends JSON lines to a file; flushes on every batch so a killed server loses little."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None

    def open(self) -> None:
        self._fh = self.path.open("ab")

    def write(self, lines: Iterable[bytes]) -> None:
        """Append finished lines (see `truth_line`)."""
        if self._fh is None:
            return
        self._fh.write(b"".join(lines))
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def truth_line(meta: dict[str, Any], envelope: bytes | None = None) -> bytes:
    """One line: the metadata, plus the exact JSON envelope that went on the wire."""
    head = orjson.dumps(meta)
    if envelope is None:
        return head + b"\n"
    return head[:-1] + b',"envelope":' + envelope + b"}\n"


@dataclass(frozen=True, slots=True)
class TruthEntry:
    conn: int
    label: str
    msg: str
    key: str
    version: int
    deleted: bool
    message: dict[str, Any] | None
    fault: str | None
    checkpoint: str | None = None  # "Begin" or "Complete" of a snapshot; no record


def read_truth(path: Path, *, checkpoints: bool = False) -> Iterator[TruthEntry]:
    """The log's entries in order; snapshot checkpoints only if asked for."""
    with path.open("rb") as fh:
        for line in fh:
            raw = orjson.loads(line)
            checkpoint = raw.get("checkpoint")
            if checkpoint is not None:
                if checkpoints:
                    yield TruthEntry(
                        raw["conn"], raw["label"], "", "", 0, False, None, None, checkpoint
                    )
                continue
            envelope = raw.get("envelope")
            yield TruthEntry(
                conn=raw["conn"],
                label=raw.get("label", ""),
                msg=raw.get("msg", ""),
                key=raw.get("key", ""),
                version=raw.get("version", 0),
                deleted=raw.get("deleted", False),
                message=envelope.get("message") if isinstance(envelope, dict) else None,
                fault=raw.get("fault"),
            )


def latest_state(path: Path) -> dict[tuple[str, str], dict[str, Any] | None]:
    """The last value sent per (message type, key); None where the last word was a delete."""
    state: dict[tuple[str, str], dict[str, Any] | None] = {}
    for entry in read_truth(path):
        if entry.fault is None:
            state[(entry.msg, entry.key)] = None if entry.deleted else entry.message
    return state


def reconciled_state(path: Path) -> dict[tuple[str, str], dict[str, Any] | None]:
    """What a mirror that reconciles holds: the last value sent per (message type, key), except
    that when a subscription's snapshot completes, the keys it sent before that the snapshot
    no longer holds count as deleted (they went while no connection was there to hear it)."""
    state: dict[tuple[str, str], dict[str, Any] | None] = {}
    owner: dict[tuple[str, str], str] = {}
    snapshots: dict[tuple[int, str], set[tuple[str, str]]] = {}
    for entry in read_truth(path, checkpoints=True):
        if entry.fault is not None:
            continue
        if entry.checkpoint == "Begin":
            snapshots[(entry.conn, entry.label)] = set()
        elif entry.checkpoint == "Complete":
            seen = snapshots.pop((entry.conn, entry.label), set())
            for ident, label in owner.items():
                if label == entry.label and ident not in seen:
                    state[ident] = None
        else:
            ident = (entry.msg, entry.key)
            state[ident] = None if entry.deleted else entry.message
            owner[ident] = entry.label
            snapshot = snapshots.get((entry.conn, entry.label))
            if snapshot is not None:
                snapshot.add(ident)
    return state
