"""Benchmark: Causeway's memory under an XMPP connection flood, and a legitimate peer served through it.

Causeway (the given binary, normally the release build) serves gw.test on 127.0.0.5 next to
Prosody (prosody.test on 127.0.0.2, secure mode as in test_xmpp_prosody.py). After the idle
figure is read, at once:

  - `--idle` (2,000) connections that open TCP and never send a byte, spread over source
    addresses 127.0.1.x so that the per-address cap is not what stops them;
  - `--slow` (200) slow-loris connections that send a stream header one byte every
    `--slow-interval` seconds;
  - one peer streaming one endless start tag (`<message a0='x' a1='x' ...`) as fast as it can.

While they are open, bob@prosody.test writes to alice@gw.test: the message must arrive in
Alice's Matrix sync (an invite to the direct room, then the message). Reported: Causeway's
resident memory idle, its peak (VmHWM) during the flood, the peak per open connection, and how
long the endless start tag
lasted before Causeway cut it off (bytes sent). Unauthenticated connections are held until the
authentication deadline (20 s), so the message goes through while all of them are open.

Run: scripts/bench-xmpp-resources [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

import harness
import test_xmpp_prosody as xp

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
          b"xmlns:stream='http://etherx.jabber.org/streams' from='flood.test' to='gw.test' "
          b"version='1.0'>")


class FloodCauseway(xp.GatewayCauseway):
    """Causeway as gw.test, warnings only, with the default connection caps."""

    def config_text(self) -> str:
        return super().config_text().replace('filter = "info,causeway_xmpp=debug"', 'filter = "warn"')


async def idle_connections(count: int, opened: list[Any]) -> None:
    for i in range(count):
        source = f"127.0.1.{i // 50 + 1}"
        try:
            _, writer = await asyncio.open_connection(xp.GATEWAY_IP, 5269, local_addr=(source, 0))
            opened.append(writer)
        except OSError:
            pass


async def slow_loris(count: int, interval: float, stop: asyncio.Event, opened: list[Any]) -> None:
    writers = []
    for i in range(count):
        source = f"127.0.2.{i // 50 + 1}"
        try:
            _, writer = await asyncio.open_connection(xp.GATEWAY_IP, 5269, local_addr=(source, 0))
            writers.append(writer)
            opened.append(writer)
        except OSError:
            pass
    position = 0
    while not stop.is_set() and position < len(HEADER):
        for writer in writers:
            if not writer.is_closing():
                try:
                    writer.write(HEADER[position:position + 1])
                except (ConnectionError, RuntimeError):
                    pass
        position += 1
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass


async def endless_start_tag(result: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection(xp.GATEWAY_IP, 5269, local_addr=("127.0.3.1", 0))
    writer.write(HEADER)
    await writer.drain()
    sent = len(HEADER)
    chunk = b"".join(b" a%d='x'" % i for i in range(200))
    writer.write(b"<message")
    started = time.monotonic()
    closed_by_peer = b""
    try:
        while time.monotonic() - started < 60:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.001)
                if data:
                    closed_by_peer += data
                if not data or b"</stream:stream>" in closed_by_peer:
                    break
            except asyncio.TimeoutError:
                pass
    except (ConnectionError, OSError):
        pass
    result["endless_bytes_sent"] = sent
    result["endless_answer"] = closed_by_peer.decode(errors="replace")[-300:]
    writer.close()


async def legitimate_message(gateway: FloodCauseway, ca: str, result: dict[str, Any]) -> None:
    import bridge_scenario

    async with aiohttp.ClientSession() as http:
        alice = await harness.register_user(http, gateway.base_url, "alice", "alice's password")
        auth = {"Authorization": f"Bearer {alice['access_token']}"}
        async with http.get(f"{gateway.base_url}/_matrix/client/v3/sync", headers=auth,
                            params={"timeout": "0"}) as response:
            since = (await response.json())["next_batch"]
        bob = bridge_scenario.XmppUser("bob@prosody.test/bench", "bobpw")
        await bob.connect(ca, xp.PROSODY_IP)
        sent = time.monotonic()
        bob.send("<message to='alice@gw.test' type='chat' id='through-the-flood'>"
                 "<body>through the flood</body></message>")
        deadline = sent + 60
        arrived = None
        while time.monotonic() < deadline and arrived is None:
            async with http.get(f"{gateway.base_url}/_matrix/client/v3/sync", headers=auth,
                                params={"timeout": "5000", "since": since}) as response:
                body = await response.json()
            since = body.get("next_batch", since)
            for room in body.get("rooms", {}).get("invite", {}):
                async with http.post(f"{gateway.base_url}/_matrix/client/v3/join/{room}",
                                     headers=auth, json={}) as response:
                    await response.read()
            for room in body.get("rooms", {}).get("join", {}).values():
                for event in room.get("timeline", {}).get("events", []):
                    if event.get("content", {}).get("body") == "through the flood":
                        arrived = time.monotonic() - sent
        result["legitimate_message_seconds"] = arrived
        await bob.disconnect()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = harness.make_workdir("bench-xmpp-resources-")
    xp.make_certificates(work)
    prosody = xp.Prosody(work)
    gateway = FloodCauseway(args.causeway, work, direct_tls=False)
    result: dict[str, Any] = {"idle": args.idle, "slow": args.slow}
    opened: list[Any] = []
    try:
        prosody.start()
        gateway.start()
        await asyncio.sleep(args.settle)
        result["rss_idle_kib"] = gateway.rss_kb()
        result["hwm_idle_kib"] = gateway.hwm_kb()
        stop = asyncio.Event()
        await idle_connections(args.idle, opened)
        slow = asyncio.create_task(slow_loris(args.slow, args.slow_interval, stop, opened))
        endless = asyncio.create_task(endless_start_tag(result))
        await asyncio.sleep(1)
        result["opened"] = len(opened)
        await legitimate_message(gateway, str(work / "ca.crt"), result)
        await endless
        result["rss_flood_kib"] = gateway.rss_kb()
        result["hwm_flood_kib"] = gateway.hwm_kb()
        stop.set()
        await slow
    finally:
        for writer in opened:
            writer.close()
        gateway.stop()
        prosody.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--causeway", default=str(harness.REPO / "target" / "release" / "causeway"))
    parser.add_argument("--quick", action="store_true", help="200 idle and 20 slow connections")
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--slow-interval", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.idle, args.slow = 200, 20
    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(run(args))
    mib = lambda kib: "-" if kib is None else f"{kib / 1024:.1f} MiB"  # noqa: E731
    print(f"\nconnections opened at once: {result.get('opened')} "
          f"({args.idle} idle, {args.slow} slow-loris, 1 endless start tag)")
    print(f"Causeway resident memory idle:        {mib(result.get('rss_idle_kib'))}")
    print(f"Causeway peak (VmHWM) during flood:   {mib(result.get('hwm_flood_kib'))}")
    if result.get("hwm_flood_kib") and result.get("rss_idle_kib") and result.get("opened"):
        per = (result["hwm_flood_kib"] - result["rss_idle_kib"]) / result["opened"]
        print(f"peak above idle per open connection:  {per:.1f} KiB")
        print(f"peak / idle:                          "
              f"{result['hwm_flood_kib'] / result['rss_idle_kib']:.2f}x")
    print(f"endless start tag: cut off after {result.get('endless_bytes_sent'):,} bytes sent; "
          f"answer ends {result.get('endless_answer', '')[-120:]!r}")
    arrival = result.get("legitimate_message_seconds")
    print("legitimate message: " + ("did not arrive" if arrival is None
                                    else f"arrived in {arrival * 1000:.0f} ms, while the flood "
                                    "connections were open (they wait for the 20 s deadline)"))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if arrival is not None else 1


if __name__ == "__main__":
    sys.exit(main())
