"""How fast the simulator can feed a client: the ceiling every bridge benchmark sits under.

Starts `mlink-bridge simulate` as its own process, asks for every served type with
activeLatency 0, and counts what a raw reader (parses nothing, discards everything) receives
for a few seconds, once per wire form.

    .venv/bin/python benchmarks/simulator_rate.py [--seconds 5] [--rate 150000] [--tickers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time

import websockets

from bridge.embedded import free_port, wait_for_port

TYPES = ("StockBookQuote", "StockPrint", "OptionNbboQuote")


async def read(url: str, seconds: float, framed: bool) -> tuple[float, float]:
    headers = {"Authorization": "Bearer demo-key"}
    async with websockets.connect(
        url, additional_headers=headers, max_size=None, compression=None
    ) as ws:
        for name in TYPES:
            message = {"queryLabel": name, "activeLatency": 0, "msgName": name}
            await ws.send(json.dumps({"header": {"mTyp": "MLinkStream"}, "message": message}))
        count = nbytes = 0
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            payload = await ws.recv()
            assert isinstance(payload, bytes)
            nbytes += len(payload)
            count += payload.count(b"\r\nJ") if framed else 1
        return count / elapsed, nbytes / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=float, default=150_000)
    parser.add_argument("--tickers", type=int, default=100)
    args = parser.parse_args()
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
            "--rate",
            str(args.rate),
            "--tickers",
            str(args.tickers),
            "--types",
            ",".join(TYPES),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        if not wait_for_port(port, proc):
            print("the simulator did not start", file=sys.stderr)
            return 1
        for path, framed in (("/mlink/jsonf", True), ("/mlink/json", False)):
            rate, throughput = asyncio.run(
                read(f"ws://127.0.0.1:{port}{path}", args.seconds, framed)
            )
            print(f"{path:<13} {rate:>9,.0f} records/s  {throughput / 1e6:6.1f} MB/s")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
