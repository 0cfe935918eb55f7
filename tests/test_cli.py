"""The commands as a user runs them: real processes, real sockets on 127.0.0.1, bounded waits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import websockets

from bridge.cli import _topic_named
from bridge.embedded import free_port
from bridge.settings import load_settings

pytestmark = pytest.mark.integration


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the simulator exited early"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listened on {port} within {timeout}s")


def test_simulate_serves_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bridge",
            "--log-level",
            "WARNING",
            "simulate",
            "--port",
            str(port),
            "--api-key",
            "k1",
            "--rate",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)

        async def client() -> list[dict[str, object]]:
            url = f"ws://127.0.0.1:{port}/mlink/json"
            async with websockets.connect(
                url, additional_headers={"Authorization": "Bearer k1"}
            ) as ws:
                msg = {
                    "header": {"mTyp": "MLinkStream"},
                    "message": {"queryLabel": "t", "activeLatency": 0, "msgName": "StockPrint"},
                }
                await ws.send(json.dumps(msg))
                return [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(8)]

        got = asyncio.run(client())
        assert got[0]["message"] == {"state": "LoggedOn"}
        assert any(m["header"]["mTyp"] == "StockPrint" for m in got)  # type: ignore[index]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    assert f"127.0.0.1:{port}/mlink/json" in out.decode()


def test_demo_shows_data_flowing_and_stops_by_itself() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "--log-level", "WARNING", "demo", "--seconds", "5"],
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "mlink.StockBookQuote" in out
    assert "[live]" in out
    assert "what a consumer reads back" in out
    assert '"pkey":{"ticker"' in out  # decoded back from Kafka
    assert "demo stopped (exit code 0)" in out


def test_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"], capture_output=True, check=True, timeout=30
    )
    assert out.stdout.decode().startswith("mlink-bridge ")
    bad = subprocess.run(
        [sys.executable, "-m", "bridge", "nope"], capture_output=True, timeout=30, check=False
    )
    assert bad.returncode == 2
    assert b"invalid choice" in bad.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--types", "Nope"],
        ["simulate", "--tickers", "0"],
        ["simulate", "--nan-rate", "2"],
        ["--log-level", "chatty", "simulate"],
    ],
)
def test_bad_flags_get_a_usage_error_not_a_traceback(argv: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", *argv], capture_output=True, timeout=30, check=False
    )
    assert out.returncode == 2
    assert b"Traceback" not in out.stderr
    assert b"usage:" in out.stderr


def test_tail_finds_the_topic_by_label_message_type_or_name() -> None:
    subs = '[{"msgName": "StockPrint", "label": "prints", "topic": "custom.prints"}]'
    settings = load_settings({"BRIDGE_SUBSCRIPTIONS": subs, "BRIDGE_TOPIC_PREFIX": "p."})
    assert _topic_named(settings, "prints") == "custom.prints"
    assert _topic_named(settings, "StockPrint") == "custom.prints"
    assert _topic_named(settings, "StockBookQuote") == "p.StockBookQuote"
    assert _topic_named(settings, "some.topic") == "some.topic"


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["topics"], 1, b"mlink-bridge topics: Kafka: "),
        (["tail", "StockPrint"], 1, b"mlink-bridge tail: Kafka: "),
        (["check"], 1, b"FAIL"),
    ],
)
def test_a_misspelt_kafka_setting_is_a_clear_error_not_a_traceback(
    argv: list[str], code: int, says: bytes
) -> None:
    env = {
        **os.environ,
        "BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockPrint"}]',
        "KAFKA_BOOTSTRAP_SERVER": "127.0.0.1:1",  # no such librdkafka property
        "MLINK_URL": "ws://127.0.0.1:1/mlink/json",
        "MLINK_API_KEY": "k",
        "MLINK_RECONNECT_MAX": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--log-level", "ERROR", *argv],
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == code, out.stderr[-2000:]
    assert b"Traceback" not in out.stderr
    assert says in out.stdout + out.stderr
    assert b"bootstrap.server" in out.stdout + out.stderr  # it names the setting


def test_check_names_a_misspelt_variable() -> None:
    env = {
        **os.environ,
        "BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockPrint"}]',
        "BRIDGE_CREATE_TOPIC": "false",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "MLINK_URL": "ws://127.0.0.1:1/mlink/json",
        "MLINK_API_KEY": "k",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "--log-level", "ERROR", "check"],
        capture_output=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert out.returncode == 1
    assert b"BRIDGE_CREATE_TOPIC is not a variable the bridge reads (misspelt?)" in out.stdout
