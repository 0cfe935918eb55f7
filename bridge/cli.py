"""`mlink-bridge` commands (also `python -m bridge`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException

from bridge import __version__
from bridge.app import run_bridge
from bridge.errors import BridgeError, ConfigError
from bridge.mlink.catalog import default_catalog
from bridge.ops.logs import configure_logging, redactor
from bridge.settings import Settings, load_settings, unknown_variables
from bridge.simulator.market import DEFAULT_TYPES
from bridge.simulator.server import Faults, Simulator, SimulatorConfig


def _simulate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="run an MLink-compatible server on localhost")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="TOKEN",
        help="accepted apiKey or apiKey.password (repeatable; default demo-key)",
    )
    p.add_argument("--rate", type=float, default=200.0, help="live updates per second")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--types",
        type=_served_types,
        default="all",
        help="message types to serve: 'all' (every catalog type), 'default' "
        f"({', '.join(DEFAULT_TYPES)}), or a comma-separated list",
    )
    p.add_argument("--tickers", type=_positive_int, default=12)
    p.add_argument("--expiries", type=_positive_int, default=2)
    p.add_argument("--strikes", type=_positive_int, default=4)
    p.add_argument("--delete-rate", type=_probability, default=0.002)
    p.add_argument(
        "--truth", type=Path, help="write every data record sent to this JSON-lines file"
    )
    f = p.add_argument_group("fault injection")
    f.add_argument("--drop-after", type=int, help="drop TCP (no close frame) after N records")
    f.add_argument("--close-1011-after", type=int, help="close with 1011 after N records")
    f.add_argument("--goodnight-after", type=int, help="send GoodNight after N records")
    f.add_argument("--stall-after", type=int, help="stop sending and answering pings after N")
    f.add_argument("--fault-connections", type=int, default=1, help="connections hit (default 1)")
    f.add_argument("--reject-logons", type=int, default=0, help="fail the first N logons")
    f.add_argument("--malformed-rate", type=_probability, default=0.0)
    f.add_argument("--nan-rate", type=_probability, default=0.0)
    f.add_argument("--oversized-rate", type=_probability, default=0.0)
    f.add_argument("--unknown-type-rate", type=_probability, default=0.0)
    f.add_argument("--oversize-bytes", type=int, default=900_000)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def _served_types(text: str) -> tuple[str, ...]:
    catalog = default_catalog()
    if text == "all":
        return tuple(catalog.names())
    if text == "default":
        return DEFAULT_TYPES
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in catalog]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown message types {unknown}; known: {', '.join(catalog.names())}"
        )
    return tuple(names)


def _simulator_config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_keys or ["demo-key"]),
        rate=args.rate,
        seed=args.seed,
        msg_names=args.types,
        tickers=args.tickers,
        expiries=args.expiries,
        strikes=args.strikes,
        delete_rate=args.delete_rate,
        truth=args.truth,
        faults=Faults(
            drop_after=args.drop_after,
            close_1011_after=args.close_1011_after,
            goodnight_after=args.goodnight_after,
            stall_after=args.stall_after,
            connections=args.fault_connections,
            reject_logons=args.reject_logons,
            malformed_rate=args.malformed_rate,
            nan_rate=args.nan_rate,
            oversized_rate=args.oversized_rate,
            unknown_type_rate=args.unknown_type_rate,
            oversize_bytes=args.oversize_bytes,
        ),
    )


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _simulate(config: SimulatorConfig) -> int:
    async with Simulator(config) as sim:
        # The market's objects live as long as the process: out of the collector's way, so
        # a full collection (~40 ms with them) does not stall the stream it simulates.
        gc.freeze()
        print(
            f"MLink simulator on {sim.url('/mlink/json')} and {sim.url('/mlink/jsonf')}; "
            f"{sim.market.size()} live objects over {', '.join(sim.market.names())}; "
            f"{config.rate:g} updates/s. Ctrl-C stops.",
            flush=True,
        )
        await _until_signal()
    return 0


async def _demo(args: argparse.Namespace) -> int:
    from bridge.demo import run_demo  # noqa: PLC0415 - needs the dev extras (the broker)

    return await run_demo(args.seconds, args.rate)


def _tail(args: argparse.Namespace) -> int:
    from bridge.app import registry_client  # noqa: PLC0415
    from bridge.tail import tail_topic  # noqa: PLC0415

    try:
        settings = load_settings()
        topic = _topic_named(settings, args.name)
    except ConfigError as exc:
        print(f"mlink-bridge: configuration problem:\n{exc}", file=sys.stderr)
        return 2
    config = dict(settings.kafka_properties)
    bootstrap = config.pop("bootstrap.servers", "localhost:9092")
    registry = registry_client(settings) if settings.schema_registry_url else None
    try:
        for line in tail_topic(
            bootstrap, topic, settings.schemas_topic, args.n, registry=registry, config=config
        ):
            print(line)
    except KafkaException as exc:  # unreachable, or a configuration librdkafka refuses
        print(f"mlink-bridge tail: Kafka: {_kafka_text(exc)}", file=sys.stderr)
        return 1
    return 0


def _kafka_text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    text = error.str() if isinstance(error, KafkaError) else str(error)
    return redactor().redact(text)


def _topic_named(settings: Settings, name: str) -> str:
    """A subscription label, a message type or a topic name -> the topic."""
    given = settings.bridge_subscriptions or settings.bridge_subscriptions_file
    subs = settings.subscriptions() if given else []
    for sub in subs:
        if name in (sub.name, sub.msg_name):
            return settings.topic_for(sub, sub.msg_name)
    spec = default_catalog().get(name)
    return f"{settings.bridge_topic_prefix}{spec.name}" if spec is not None else name


def _topics() -> int:
    from bridge.app import topic_specs  # noqa: PLC0415
    from bridge.sink.topics import TopicError, admin_client, ensure_topics  # noqa: PLC0415

    try:
        settings = load_settings()
        specs = topic_specs(settings, settings.subscriptions(), default_catalog())
        report = ensure_topics(
            admin_client(settings.kafka_properties),
            specs,
            create=settings.bridge_create_topics,
            allow_non_compacted=settings.bridge_allow_non_compacted,
        )
    except (ConfigError, TopicError) as exc:
        print(f"mlink-bridge topics: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KafkaException as exc:  # unreachable, or a configuration librdkafka refuses
        print(f"mlink-bridge topics: Kafka: {_kafka_text(exc)}", file=sys.stderr)
        return 1
    for name in report.created:
        print(f"created  {name}")
    for name in report.verified:
        print(f"verified {name}")
    return 0


def _schemas() -> int:
    import json  # noqa: PLC0415

    from bridge.app import view_names  # noqa: PLC0415
    from bridge.sink.avro import avro_schema  # noqa: PLC0415
    from transforms import TransformOptions, compile_plan  # noqa: PLC0415

    try:
        settings = load_settings()
        subs = settings.subscriptions()
    except ConfigError as exc:
        print(f"mlink-bridge schemas: {exc}", file=sys.stderr)
        return 2
    catalog = default_catalog()
    for sub in subs:
        spec = catalog.get(sub.msg_name)
        if spec is None:
            print(f"mlink-bridge schemas: unknown msgName {sub.msg_name!r}", file=sys.stderr)
            return 2
        options = TransformOptions(view=view_names(sub.view), rename=sub.rename, drop=sub.drop)
        schema = avro_schema(compile_plan(spec, options, catalog))
        topic = settings.topic_for(sub, spec.name)
        print(f"# {sub.name} -> {topic} (subject {topic}-value)")
        print(json.dumps(schema, indent=2))
    return 0


def _run() -> int:
    for name in unknown_variables():
        logging.getLogger("mlink.settings").warning(
            "%s is not a variable the bridge reads (misspelt?): ignored", name
        )
    try:
        settings = load_settings()
        return asyncio.run(run_bridge(settings))
    except ConfigError as exc:
        print(f"mlink-bridge: configuration problem:\n{exc}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"mlink-bridge: {type(exc).__name__}: {redactor().redact(str(exc))}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlink-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlink-bridge {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="default: LOG_LEVEL, else INFO",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "console"],
        help="default: LOG_FORMAT, else json for run and check, console for the rest",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _simulate_parser(sub)
    sub.add_parser("run", help="the connector: MLink -> Kafka, configured by the environment")
    sub.add_parser("topics", help="create or verify the compacted topics for the configuration")
    bench = sub.add_parser("bench", help="throughput and latency beside raw ceilings")
    bench.add_argument("--seconds", type=float, default=10.0, help="each measurement window")
    bench.add_argument("--rate", type=float, default=150_000, help="simulator updates/s offered")
    bench.add_argument(
        "--runs", type=int, default=3, help="saturated runs, and windows at 10k/s (medians)"
    )
    bench.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the simulator to its own core (pinned by default with 2+ cores)",
    )
    sub.add_parser("schemas", help="print the Avro schemas the bridge will write")
    sub.add_parser(
        "check",
        help="verify the configuration and reach MLink, Kafka and the registry (read-only)",
    )
    tail = sub.add_parser("tail", help="print the decoded latest records of a topic")
    tail.add_argument(
        "name", help="a subscription label, a message type (StockBookQuote) or a topic name"
    )
    tail.add_argument("-n", type=_positive_int, default=10, help="how many keys (10)")
    demo = sub.add_parser("demo", help="the simulator and a live view of data flowing")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = never)")
    demo.add_argument("--rate", type=float, default=500.0, help="simulated updates per second")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = args.command in ("bench", "demo")  # the figures and the live view, not lifecycles
    level = args.log_level or os.environ.get("LOG_LEVEL", "WARNING" if quiet else "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        print(f"mlink-bridge: LOG_LEVEL: unknown level {level!r}", file=sys.stderr)
        return 2
    service = args.command in ("run", "check")
    fmt = args.log_format or os.environ.get("LOG_FORMAT") or ("json" if service else "console")
    if fmt not in ("json", "console"):
        print(f"mlink-bridge: LOG_FORMAT: must be json or console, not {fmt!r}", file=sys.stderr)
        return 2
    configure_logging(level, fmt)
    with contextlib.suppress(ConfigError):  # a bad configuration is reported by the command
        for secret in load_settings().secret_values():
            redactor().add_secret(secret)
    if args.command == "simulate":
        return asyncio.run(_simulate(_simulator_config(args)))
    if args.command == "demo":
        return asyncio.run(_demo(args))
    if args.command == "run":
        return _run()
    if args.command == "tail":
        return _tail(args)
    if args.command == "topics":
        return _topics()
    if args.command == "bench":
        from bridge.bench import run_bench  # noqa: PLC0415 - needs the dev extras

        return asyncio.run(
            run_bench(args.seconds, args.rate, pin=not args.no_pin, runs=max(1, args.runs))
        )
    if args.command == "schemas":
        return _schemas()
    if args.command == "check":
        from bridge.ops.check import run_check  # noqa: PLC0415

        return asyncio.run(run_check())
    return 2
