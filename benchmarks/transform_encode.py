"""How fast one core turns MLink records into Avro: `RecordPlan.apply` + `WriterSchema.encode`,
and the bridge's own path with the C extension: the key, then `WriterSchema.encode_wire`.

Records come from the simulator's `Market` (the default types unless `--types`), as JSON bodies
parsed with orjson the way the bridge receives them. They are parsed in chunks outside the timed
region and normalized + encoded right after, while still in the CPU cache, as in the bridge
where a websocket frame is parsed and converted at once. The same records are also encoded with
fastavro.schemaless_writer (the reference the compiled encoder is tested against) for a ratio.

    .venv/bin/python benchmarks/transform_encode.py [--records 60000] [--chunk 500] [--types ...]

Reports records/s for apply alone, encode alone, both, the C wire path (key + encode_wire, what
the bridge runs per live record), and apply+encode through the single-object serializer (the
framing a registry-less bridge writes), plus the time of `sum(range(1000))` on this machine, so
that numbers from different machines can be compared.
"""

from __future__ import annotations

import argparse
import io
import time
import timeit
from collections.abc import Callable, Sequence
from typing import Any

import fastavro
import orjson

from bridge.mlink.catalog import default_catalog
from bridge.simulator.market import DEFAULT_TYPES, Market
from bridge.sink.avro import SchemaHistory
from bridge.sink.serialization import SerializationContext, SingleObjectSerializer
from transforms import TransformOptions, compile_plan

# A fixed clock keeps the workload the same from run to run.
_START_NS = 1_726_000_000_000_000_000


def reference_us() -> float:
    """Microseconds for sum(range(1000)): a yardstick for this machine's single-core speed."""
    return min(timeit.repeat("sum(range(1000))", number=2_000, repeat=7)) / 2_000 * 1e6


def make_bodies(types: Sequence[str], count: int) -> list[tuple[str, bytes]]:
    tick = iter(range(_START_NS, _START_NS + 10**15, 997_001))
    market = Market(default_catalog(), msg_names=types, clock=lambda: next(tick))
    bodies: list[tuple[str, bytes]] = []
    while len(bodies) < count:
        obj = market.step()
        if not obj.deleted:
            bodies.append((obj.msg_name, orjson.dumps(obj.message)))
    return bodies


def timed(
    bodies: list[tuple[str, bytes]],
    chunk: int,
    rounds: int,
    works: dict[str, Callable[[Any], None]],
    functions: dict[str, tuple[Callable[..., Any], Callable[..., bytes]]],
) -> dict[str, float]:
    """Seconds each of `works` spends on all records.

    Per chunk, every work runs `rounds` times, interleaved, each time on a fresh parse of the
    chunk (parsed outside the timing), and the best run counts: a burst of noise on a busy
    machine then neither counts nor favours one work, and every run sees new objects, as the
    bridge does."""
    totals = dict.fromkeys(works, 0.0)
    for start in range(0, len(bodies), chunk):
        best = dict.fromkeys(works, float("inf"))
        for _ in range(rounds):
            for label, work in works.items():
                batch = [(*functions[n], orjson.loads(b)) for n, b in bodies[start : start + chunk]]
                began = time.perf_counter()
                work(batch)
                best[label] = min(best[label], time.perf_counter() - began)
        for label in works:
            totals[label] += best[label]
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="best of this many runs per chunk")
    parser.add_argument("--types", nargs="*", default=list(DEFAULT_TYPES))
    args = parser.parse_args()

    catalog = default_catalog()
    histories = {}
    for name in args.types:
        spec = catalog.get(name)
        if spec is None:
            parser.error(f"unknown message type {name!r}")
        histories[spec.name] = SchemaHistory(compile_plan(spec, TransformOptions(), catalog))
    bodies = make_bodies(args.types, args.records)
    functions = {name: (h.plan.apply, h.current.encode) for name, h in histories.items()}

    # What the sink's hot loop holds per message type: the plan's and the schema's functions.
    Work = list[tuple[Callable[..., Any], Callable[..., bytes], dict[str, Any]]]

    def apply_only(batch: Work) -> None:
        for apply, _, message in batch:
            apply(message)

    def both(batch: Work) -> None:
        for apply, encode, message in batch:
            encode(apply(message).value)

    single_object = SingleObjectSerializer(lambda fingerprint, schema: None)
    contexts = {
        h.plan.apply: SerializationContext(f"mlink.{name}", h.current)
        for name, h in histories.items()
    }

    wires = {h.plan.apply: (h.plan.key_of, h.current.encode_wire) for h in histories.values()}

    def wire_path(batch: Work) -> None:
        # What the bridge does per live record with the C extension: check the key, then
        # normalize + encode in one call (the Python path above is its fallback).
        for apply, _, message in batch:
            key_of, encode_wire = wires[apply]
            key_of(message).encode()
            encode_wire(message, b"")  # type: ignore[misc]

    def both_framed(batch: Work) -> None:
        for apply, _, message in batch:
            single_object(apply(message).value, contexts[apply])

    buffer = io.BytesIO()
    writer = fastavro.schemaless_writer
    parsed = {h.plan.apply: h.current.parsed for h in histories.values()}

    def both_fastavro(batch: Work) -> None:
        for apply, _, message in batch:
            buffer.seek(0)
            buffer.truncate()
            writer(buffer, parsed[apply], apply(message).value)
            buffer.getvalue()

    before = reference_us()
    works = {
        "apply": apply_only,
        "apply+encode": both,
        "apply+serializer": both_framed,
        "apply+fastavro": both_fastavro,
    }
    if all(wire for _, wire in wires.values()):
        works["key+wire (C)"] = wire_path
    else:
        print("the C extension is not built: no key+wire (C) line")
    results = timed(bodies, args.chunk, args.rounds, works, functions)
    yardsticks = [before, reference_us()]
    encode_only = results["apply+encode"] - results["apply"]
    n = len(bodies)
    print(f"{n:,} records of {', '.join(args.types)}")
    print(f"chunks of {args.chunk}, each timed as the best of {args.rounds} runs")
    low, high = min(yardsticks), max(yardsticks)
    print(f"sum(range(1000)) on this machine: {low:.1f} us (max seen {high:.1f})")
    results["encode alone"] = encode_only
    for label, seconds in results.items():
        rate, each = n / seconds, seconds / n * 1e6
        print(f"  {label:<17} {rate:>10,.0f} records/s  {each:6.2f} us/record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
