"""`mlink-bridge bench`: the bridge's throughput and latency beside raw ceilings, in one run.

Everything runs on this machine, at the same time of day, so the ratios mean something even
where the absolute numbers do not (shared CI machines are noisy):

* ceiling 1, raw websocket read: a client that receives from the simulator and discards,
  measured before and after each saturated bridge run (the machine's speed drifts; each bridge
  run is compared with the mean of the two around it);
* ceiling 2, raw produce: pre-serialized ~300-byte values with the bridge's producer settings;
* the bridge, saturated, three times: simulator -> bridge -> broker, records delivered per
  second, the bridge's CPU, and the latency from each record's source timestamp to its delivery
  report (live records only; exact p50 and p99 of every delivery in the window);
* the transform+encode stage alone, on one core;
* latency at a fixed 10k records/s offered by the simulator, in three consecutive windows,
  beside two floors measured the same way without the bridge: the simulator to a raw reader
  (source time to the payload's arrival) and a raw producer to the broker's ack.

Every line says how much CPU the host stole from the bench's cores meanwhile (on a shared
VM, the usual cause of a slow run or a long tail) and, when processes are pinned, how busy the
simulator's core was (on two cores the broker shares it; a saturated bridge run where that core
is full and the bridge's is not was held back by its source); the summary gives medians and
every figure behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from statistics import median
from typing import TYPE_CHECKING

import orjson

from bridge.app import Pipeline, run_bridge
from bridge.embedded import EmbeddedBroker, free_port, wait_for_port
from bridge.io.connector import Connector
from bridge.mlink.catalog import default_catalog
from bridge.mlink.framing import iter_messages
from bridge.settings import load_settings
from bridge.simulator.market import Market
from bridge.sink.avro import SchemaHistory
from bridge.sink.kafka import KafkaSink, OutRecord, SinkStats
from bridge.sink.topics import TopicSpec, ensure_topics
from transforms import TransformOptions, compile_plan

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

TYPES = ("StockBookQuote", "StockPrint", "OptionNbboQuote")
SAT = "bridge: simulator -> Kafka"
AT_10K = "bridge at 10k records/s offered"
PROTO = "bridge, protobuf input"
AT_RATE = 10_000.0  # records/s offered for the latency target


@dataclass
class Result:
    name: str
    rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu: float | None = None  # the bridge process's CPU use, in cores
    steal: float | None = None  # share of the bench's CPU the hypervisor took meanwhile
    # How busy the simulator's core was (pinned runs; with two cores the broker's too): near
    # 100% while the bridge has room on its own core says the source side set the rate.
    source_busy: float | None = None

    def line(self) -> str:
        latency = ""
        if self.p50_ms is not None:
            latency = f"   p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"
        if self.cpu is not None:
            latency += f", {self.cpu:.0%} of a core"
        if self.source_busy is not None:
            latency += f", simulator's core {self.source_busy:.0%} busy"
        if self.steal is not None:
            latency += f", steal {self.steal:.1%}"
        return f"{self.name:<42} {self.rate:>10,.0f} records/s{latency}"


BENCH_CORES = frozenset(os.sched_getaffinity(0))  # before pin_processes() narrows this process
STEAL_NOTE = 0.01  # above this share of stolen CPU, a figure says more about the host than us


class Steal:
    """CPU time a virtual machine's host took from these cores ("steal" in /proc/stat), over a
    window: on a shared VM it explains a slow run or a latency tail. None where not measurable.
    By default every core the bench may use: the simulator and the broker run on one, the bridge
    on another. `busy()` is the other reading of the same window: how much of these cores'
    time was not idle."""

    def __init__(self, cores: set[int] | None = None, stat: str = "/proc/stat") -> None:
        self.cores = cores if cores is not None else set(BENCH_CORES)
        self.stat = stat
        self.started = time.monotonic()
        self.ticks = self._ticks()

    def _ticks(self) -> tuple[int, int, int] | None:
        """Steal, idle (with iowait) and all ticks of these cores so far."""
        try:
            with open(self.stat) as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        steal = idle = total = 0
        for line in lines:
            fields = line.split()
            if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
                continue
            if int(fields[0][3:]) in self.cores and len(fields) > 8:
                # user nice system idle iowait irq softirq steal [guest guest_nice, in user]
                ticks = [int(v) for v in fields[1:9]]
                steal += ticks[7]
                idle += ticks[3] + ticks[4]
                total += sum(ticks)
        return steal, idle, total

    def fraction(self) -> float | None:
        """Stolen share of these cores since the window opened."""
        ticks, elapsed = self._ticks(), time.monotonic() - self.started
        if ticks is None or self.ticks is None or elapsed <= 0:
            return None
        return (ticks[0] - self.ticks[0]) / os.sysconf("SC_CLK_TCK") / elapsed / len(self.cores)

    def busy(self) -> float | None:
        """The share of these cores' time since the window opened that was not idle."""
        ticks = self._ticks()
        if ticks is None or self.ticks is None or ticks[2] <= self.ticks[2]:
            return None
        return 1.0 - (ticks[1] - self.ticks[1]) / (ticks[2] - self.ticks[2])


class _Window:
    """One measuring window: from its opening, the wall time, this process's CPU and the
    host's steal; `result` turns a count and the latencies seen into a bench line."""

    def __init__(self) -> None:
        self.started, self.cpu, self.steal = time.monotonic(), time.process_time(), Steal()
        source = _SimulatorProcess.cores
        self.source = Steal(source) if source else None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def result(self, name: str, count: int, samples: list[float]) -> Result:
        elapsed = self.elapsed()
        used = (time.process_time() - self.cpu) / elapsed
        p50, p99 = quantiles(samples)
        source = self.source.busy() if self.source is not None else None
        return Result(name, count / elapsed, p50, p99, used, self.steal.fraction(), source)


class _SimulatorProcess:
    cores: set[int] | None = None  # where the simulator runs, when the bench pins processes
    broker_cores: set[int] | None = None  # and the broker (the same core, with two)

    def __init__(self, rate: float, tickers: int = 100) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "--log-level",
                "WARNING",
                "simulate",
                "--port",
                str(self.port),
                "--rate",
                str(rate),
                "--tickers",
                str(tickers),
                "--types",
                ",".join(TYPES),
                "--delete-rate",
                "0",
            ],
            stdout=subprocess.DEVNULL,
        )
        if self.cores:
            os.sched_setaffinity(self.proc.pid, self.cores)
        if not wait_for_port(self.port, self.proc):
            raise RuntimeError("the simulator did not start")

    def url(self, path: str = "/mlink/jsonf") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _window(stats: SinkStats) -> int:
    """Start a measuring window: every latency from now on is kept; returns deliveries so far."""
    stats.latency_samples = []
    return stats.delivered


def quantiles(samples: list[float]) -> tuple[float | None, float | None]:
    """The exact p50 and p99 of the latencies (source time, in ms, to the delivery report)."""
    if not samples:
        return None, None
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@contextlib.asynccontextmanager
async def _raw_reader(rate: float) -> AsyncIterator[ClientConnection]:
    """A websocket to a new simulator offering `rate` updates/s, streaming the bench's types."""
    from websockets.asyncio.client import connect  # noqa: PLC0415 - the bench reads the wire

    sim = _SimulatorProcess(rate)
    try:
        async with connect(
            sim.url(),
            additional_headers={"Authorization": "Bearer demo-key"},
            max_size=None,
            compression=None,
        ) as ws:
            for name in TYPES:
                msg = {"queryLabel": name, "activeLatency": 0, "msgName": name}
                await ws.send(orjson.dumps({"header": {"mTyp": "MLinkStream"}, "message": msg}))
            yield ws
    finally:
        sim.stop()


async def raw_websocket(seconds: float, rate: float) -> Result:
    async with _raw_reader(rate) as ws:
        count, window = 0, _Window()
        while window.elapsed() < seconds:
            payload = await ws.recv()
            assert isinstance(payload, bytes)
            count += payload.count(b"\r\nJ")
        return window.result("ceiling 1: raw websocket read (discard)", count, [])


async def raw_websocket_paced(seconds: float, rate: float, windows: int) -> list[Result]:
    """The input side's latency floor: a raw reader of the simulator at `rate`, latency from
    each live record's source time (in ms, as the bridge stamps it) to the moment its payload
    was read, in `windows` consecutive windows of `seconds`."""
    catalog = default_catalog()
    src_field = {  # each type's source time, as the bridge's plan finds it
        name: compile_plan(catalog.get(name), TransformOptions(), catalog).src_field  # type: ignore[arg-type]
        for name in TYPES
    }
    outcome: list[Result] = []
    async with _raw_reader(rate) as ws:
        until = time.monotonic() + 1.0  # past the snapshot
        while time.monotonic() < until:
            await ws.recv()
        for _ in range(windows):
            samples: list[float] = []
            count, window = 0, _Window()
            while window.elapsed() < seconds:
                payload = await ws.recv()
                now_ms = time.time_ns() / 1e6
                assert isinstance(payload, bytes)
                for frame in iter_messages(payload, framed=True):
                    doc = orjson.loads(frame.body)
                    field = src_field.get(doc["header"]["mTyp"])
                    src = doc["message"].get(field) if field else None
                    count += 1
                    if isinstance(src, int):
                        samples.append(now_ms - src // 1_000_000)
            name = f"floor: raw websocket read at {rate / 1000:g}k records/s"
            outcome.append(window.result(name, count, samples))
    return outcome


RAW_VALUE = b"x" * 300  # pre-serialized, about a record's size
RAW_KEYS = [f"KEY-{i}-NMS-EQT".encode() for i in range(2000)]


def _raw_sink(
    bootstrap: str, name: str, queue_max_messages: int = 100_000
) -> tuple[KafkaSink, str]:
    """The bridge's sink on a new 3-partition topic, connected, with the topic's metadata and a
    producer id (the first record waits ~1 s for all that: no measurement should)."""
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415

    topic = f"bench.{name}.{time.time_ns()}"
    ensure_topics(AdminClient({"bootstrap.servers": bootstrap}), [TopicSpec(topic, 3)])
    sink = KafkaSink({"bootstrap.servers": bootstrap}, queue_max_messages=queue_max_messages)
    sink.start()
    try:
        sink.send(OutRecord(topic, b"warm-up", RAW_VALUE))
        sink.flush(30)
    except BaseException:
        sink.close()
        raise
    return sink, topic


def raw_produce(bootstrap: str, count: int) -> Result:
    sink, topic = _raw_sink(bootstrap, "raw", queue_max_messages=200_000)
    value, keys = RAW_VALUE, RAW_KEYS
    try:
        delivered = _window(sink.stats)
        started, steal = time.monotonic(), Steal()
        for i in range(count):
            sink.send(OutRecord(topic, keys[i % len(keys)], value, src_ns=time.time_ns()))
            while sink.overflowing:  # the queue is full: wait for room (no conflation here)
                time.sleep(0.001)
                sink.pump()
        sink.flush(120)
        elapsed = time.monotonic() - started
        rate = (sink.stats.delivered - delivered) / elapsed
        p50, p99 = quantiles(sink.stats.latency_samples or [])
        return Result(
            "ceiling 2: raw produce (pre-serialized)", rate, p50, p99, steal=steal.fraction()
        )
    finally:
        sink.close()


def raw_produce_paced(bootstrap: str, seconds: float, rate: float, windows: int) -> list[Result]:
    """The latency floor: what the broker and this machine add with no bridge in the way.

    Pre-serialized ~300-byte values with headers like the bridge's, through the bridge's own
    sink at `rate` records/s (in ~1 ms steps, as the simulator sends), each stamped with the
    time it is produced (in ms, as the bridge stamps the source time); latency to the delivery
    report, measured as for the bridge, in `windows` consecutive windows of `seconds`.
    """
    sink, topic = _raw_sink(bootstrap, "floor")
    value, keys = RAW_VALUE, RAW_KEYS
    outcome: list[Result] = []
    sent = 0
    started = 0.0

    def produce_for(span: float) -> None:
        nonlocal sent
        until = time.monotonic() + span
        while (now := time.monotonic()) < until:
            for _ in range(int((now - started) * rate) - sent):
                now_ns = time.time_ns()
                headers: list[tuple[str, str | bytes | None]] = [
                    ("mlink.msg", "OptionNbboQuote"),
                    ("mlink.seq", str(sent)),
                    ("mlink.sent", str(now_ns)),
                    ("mlink.src_ts", str(now_ns)),
                    ("bridge.recv_ns", str(now_ns)),
                    ("bridge.epoch", "1"),
                ]
                key = keys[sent % len(keys)]
                sink.send(OutRecord(topic, key, value, headers, now_ns // 1_000_000, now_ns))
                sent += 1
            time.sleep(0.001)

    try:
        started = time.monotonic()
        produce_for(0.5)
        for _ in range(windows):
            delivered, window = _window(sink.stats), _Window()
            produce_for(seconds)
            done = sink.stats.delivered - delivered
            name = f"floor: raw produce at {rate / 1000:g}k records/s"
            outcome.append(window.result(name, done, sink.stats.latency_samples or []))
        return outcome
    finally:
        sink.close()


async def bridge(
    bootstrap: str,
    seconds: float,
    rate: float,
    name: str,
    *,
    path: str = "/mlink/jsonf",
    windows: int = 1,
) -> list[Result]:
    """One bridge against its own simulator; `windows` consecutive measurements of `seconds`."""
    sim = _SimulatorProcess(rate)
    prefix = f"bench{time.time_ns()}."
    try:
        env = {
            "MLINK_URL": sim.url(path),
            "MLINK_API_KEY": "demo-key",
            "BRIDGE_SUBSCRIPTIONS": json.dumps([{"msgName": t, "activeLatency": 0} for t in TYPES]),
            "BRIDGE_TOPIC_PREFIX": prefix,
            "BRIDGE_TOPIC_PARTITIONS": "3",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BRIDGE_HTTP_PORT": "0",
            "LOG_LEVEL": "WARNING",
        }
        stop = asyncio.Event()
        parts: list[tuple[Pipeline, KafkaSink, Connector]] = []
        outcome: list[Result] = []

        async def measure() -> None:
            while not parts or not all(v == "live" for v in parts[0][0].states.values()):
                await asyncio.sleep(0.1)
            sink = parts[0][1]
            await asyncio.sleep(1.0)  # past the snapshot's deliveries
            for _ in range(windows):
                delivered, window = _window(sink.stats), _Window()
                await asyncio.sleep(seconds)
                done = sink.stats.delivered - delivered
                outcome.append(window.result(name, done, sink.stats.latency_samples or []))
            stop.set()

        watcher = asyncio.create_task(measure())
        await run_bridge(load_settings(env), stop=stop, on_pipeline=lambda *p: parts.append(p))
        watcher.cancel()
        return outcome
    finally:
        sim.stop()


def transform_encode(count: int = 60_000) -> Result:
    catalog = default_catalog()
    market = Market(catalog, msg_names=TYPES, tickers=100)
    bodies = [
        (obj.msg_name, orjson.dumps(obj.message)) for obj in (market.step() for _ in range(count))
    ]
    messages = [(name, orjson.loads(body)) for name, body in bodies]
    histories = {
        name: SchemaHistory(compile_plan(catalog.get(name), TransformOptions(), catalog))  # type: ignore[arg-type]
        for name in TYPES
    }
    started = time.perf_counter()
    for name, message in messages:
        # As the bridge does: the key and the value in one C call when it can, else in Python.
        history = histories[name]
        encode_wire = history.current.encode_wire
        if encode_wire is not None:
            history.plan.key_of(message).encode()
            if encode_wire(message, b"") is not None:
                continue
        record = history.plan.apply(message)
        history.current.encode(record.value, b"")
    elapsed = time.perf_counter() - started
    how = "C" if all(h.current.encode_wire for h in histories.values()) else "Python"
    return Result(f"transform + Avro encode stage ({how}, one core)", count / elapsed)


def pin_layout(cores: list[int]) -> tuple[set[int], set[int], set[int]] | None:
    """Where the simulator, the broker and this process run: each on its own cores with three
    cores or more; with two, the simulator and the broker share the first; None with one."""
    if len(cores) < 2:
        return None
    if len(cores) == 2:
        return {cores[0]}, {cores[0]}, {cores[1]}
    return {cores[0]}, {cores[1]}, set(cores[2:])


def pin_processes() -> str:
    """With two cores or more: the simulator, the broker and this process (the raw reader, the
    raw producer or the bridge, with librdkafka's threads) on separate cores where there are
    three, else the simulator and the broker share one. This process then has the same cores to
    itself in every measurement, as a bridge has in a deployment where Kafka runs elsewhere; the
    bridge's lines say how much of a core it used."""
    layout = pin_layout(sorted(os.sched_getaffinity(0)))
    if layout is None:
        return "not pinned: one core"
    simulator, broker, rest = layout
    _SimulatorProcess.cores, _SimulatorProcess.broker_cores = simulator, broker
    os.sched_setaffinity(0, rest)  # threads and processes started later inherit it
    if simulator == broker:
        where = f"simulator and broker on core {min(simulator)}"
    else:
        where = f"simulator on core {min(simulator)}, broker on core {min(broker)}"
    return f"pinned: {where}; reader, producer or bridge on {sorted(rest)}"


def pin_threads(pid: int, cores: set[int]) -> None:
    """Every thread of a running process (its later threads inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task), cores)


def source_limited(result: Result) -> bool:
    """Whether a saturated bridge run was held back by its source: the simulator's core
    (almost) fully busy while the bridge left part of its own core unused."""
    busy, used = result.source_busy, result.cpu
    return busy is not None and used is not None and busy >= 0.95 and used < 0.95


def bracketed_ratios(bridges: list[float], ceilings: list[float], produce: float) -> list[float]:
    """Each bridge rate over the lower ceiling around it: ceiling 1 (raw websocket read) is
    measured before and after every bridge run and the two are averaged, because the machine's
    speed drifts within a run; ceiling 2 (raw produce) once."""
    return [
        rate / min((before + after) / 2, produce)
        for rate, before, after in zip(bridges, ceilings, ceilings[1:], strict=False)
    ]


def _spread(values: list[float], form: str) -> str:
    """The median, then every figure behind it: "median 61% of 59%, 61%, 64%"."""
    if not values:
        return "none measured"
    every = ", ".join(form.format(v) for v in values)
    return f"median {form.format(median(values))} of {every}"


async def run_bench(seconds: float, rate: float, pin: bool = True, runs: int = 3) -> int:
    if pin:
        print(pin_processes())
    calibration = time.perf_counter()
    for _ in range(2000):
        sum(range(1000))
    loop_us = (time.perf_counter() - calibration) / 2000 * 1e6
    print(f"machine speed: sum(range(1000)) takes {loop_us:.1f} µs (a typical laptop: ~8 µs)")
    lines: list[Result] = []

    def show(result: Result) -> Result:
        lines.append(result)
        print(result.line(), flush=True)
        return result

    stage = show(transform_encode())
    with EmbeddedBroker() as broker:
        if pin and _SimulatorProcess.broker_cores and broker.pid is not None:
            pin_threads(broker.pid, _SimulatorProcess.broker_cores)
        produce = show(await asyncio.to_thread(raw_produce, broker.bootstrap, 100_000))
        # Ceiling 1 and the saturated bridge in turn, so each bridge run has a ceiling
        # measured just before and just after it.
        ceilings = [show(await raw_websocket(seconds, rate))]
        saturated: list[Result] = []
        for _ in range(runs):
            saturated += [show(r) for r in await bridge(broker.bootstrap, seconds, rate, SAT)]
            ceilings.append(show(await raw_websocket(seconds, rate)))
        read_floor = [show(r) for r in await raw_websocket_paced(seconds, AT_RATE, runs)]
        floor = [
            show(r)
            for r in await asyncio.to_thread(
                raw_produce_paced, broker.bootstrap, seconds, AT_RATE, runs
            )
        ]
        at_10k = [
            show(r) for r in await bridge(broker.bootstrap, seconds, AT_RATE, AT_10K, windows=runs)
        ]
        for r in await bridge(broker.bootstrap, seconds, rate, PROTO, path="/mlink/proto"):
            show(r)
    ratios = bracketed_ratios([r.rate for r in saturated], [r.rate for r in ceilings], produce.rate)
    p99s = [r.p99_ms for r in at_10k if r.p99_ms is not None]
    floors = [r.p99_ms for r in floor if r.p99_ms is not None]
    read_floors = [r.p99_ms for r in read_floor if r.p99_ms is not None]
    print(
        f"\nbridge / lower ceiling: {_spread(ratios, '{:.0%}')} (target >= 60%)"
        f"\ntransform+encode {stage.rate:,.0f}/s (target >= 150k/s on one core)"
        f"\np99 at 10k/s offered: {_spread(p99s, '{:.1f}')} ms (target < 20 ms)"
        f"\n  without the bridge (floors): simulator -> raw reader, p99 "
        f"{_spread(read_floors, '{:.1f}')} ms; raw producer -> broker ack, p99 "
        f"{_spread(floors, '{:.1f}')} ms"
    )
    source_bound = [r for r in saturated if source_limited(r)]
    if source_bound:
        print(
            f"in {len(source_bound)} of {len(saturated)} saturated bridge runs the bridge had "
            f"room on its core ({', '.join(f'{r.cpu:.0%}' for r in source_bound)} used) while "
            "the simulator's core was busy: the source side set those rates"
        )
    noisy = [r.name for r in lines if (r.steal or 0) > STEAL_NOTE]
    if noisy:
        print(
            f"the host took more than {STEAL_NOTE:.0%} of the CPU (steal) during "
            f"{len(noisy)} of {len(lines)} measurements ({', '.join(sorted(set(noisy)))}): "
            "those figures are low by at least that much, and their tails longer"
        )
    return 0
