"""Benchmark: messages through the bridge, against server-to-server delivery of the same messages
between two Prosodys, and then between two ejabberds.

Three servers on loopback, in the secure mode of test_xmpp_prosody.py (a test CA, STARTTLS, SASL
EXTERNAL): with Prosody, Prosody for prosody.test (127.0.0.2), a second Prosody for other.test
(127.0.0.3); with ejabberd, ejabberd for ejabberd.test (127.0.0.3) and a second one for
other-ejabberd.test (127.0.0.4); and Causeway (the given binary, normally the release build) for
gw.test (127.0.0.5), fresh for each. Clients: bob on the first server and dave on the second with
slixmpp, @alice:gw.test with aiohttp (sends with PUT, receives with long-polling /sync). Logging is
at warning level everywhere.

For each direction, the same load over the bridge and, as the baseline, between the two servers
of the same kind:

  XMPP → Matrix:  bob@<first> → alice@gw.test        (baseline bob → dave@<second>)
  Matrix → XMPP:  @alice:gw.test → bob@<first>       (baseline dave → bob)

  latency:    N messages one at a time, each sent when the one before arrived; p50 and p99 of
              the time from the sender's send to the receiver's reading it;
  throughput: M messages sent as fast as the sender can; messages per second from the first
              send to the last arrival.

Run: scripts/bench-bridge [--quick] [--server Prosody|ejabberd|all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import aiohttp

import ejabberd
import harness
import test_xmpp_prosody as xp

OTHER_IP = "127.0.0.3"
EJABBERD_OTHER_IP = "127.0.0.4"
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 10000}}, "presence": {"not_types": ["*"]}},
                         separators=(",", ":"))
ALICE = "@alice:gw.test"


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def leaf(dir: Path, name: str) -> None:
    """A certificate for `name` from the CA that xp.make_certificates made."""
    ext = dir / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:{name}\n")
    xp.run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
           "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=dir)
    xp.run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
           "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=dir)


class ProsodyNode:
    """A Prosody serving one domain on its own loopback address, logging warnings only."""

    def __init__(self, work: Path, domain: str, ip: str, users: list[str]) -> None:
        self.dir = work / domain
        self.dir.mkdir(exist_ok=True)
        self.work = work
        self.domain = domain
        self.ip = ip
        self.users = users
        self.config = self.dir / "prosody.cfg.lua"
        self.proc: subprocess.Popen | None = None
        # Lua appended to the configuration (components, for one).
        self.extra = ""

    def start(self) -> None:
        certs = self.dir / "certs"
        certs.mkdir(exist_ok=True)
        for suffix in ("crt", "key"):
            shutil.copy(self.work / f"{self.domain}.{suffix}", certs / f"{self.domain}.{suffix}")
        (self.dir / "data").mkdir(exist_ok=True)
        hosts = self.work / "hosts.test"
        hosts.write_text(f"127.0.0.1 localhost\n{xp.PROSODY_IP} prosody.test conference.prosody.test\n"
                         f"{OTHER_IP} other.test\n"
                         f"{xp.GATEWAY_IP} gw.test muc.gw.test\n")
        self.config.write_text(f"""
run_as_root = true
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.dir}/data"
log = {{ warn = "{self.dir}/prosody.log" }}
interfaces = {{ "{self.ip}" }}
network_settings = {{ nagle = false }}
s2s_require_encryption = true
s2s_secure_auth = true
ssl = {{ cafile = "{self.work}/ca.crt" }}
c2s_require_encryption = true
certificates = "{certs}"
unbound = {{ hoststxt = "{hosts}" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence"; "message"; "iq";
    "s2s_auth_certs";
}}
modules_disabled = {{ "offline" }}
authentication = "internal_hashed"
limits = {{ c2s = {{ rate = "10mb/s" }}; s2sin = {{ rate = "10mb/s" }} }}
VirtualHost "{self.domain}"
{self.extra}""")
        for user in self.users:
            xp.run("prosodyctl", "--config", str(self.config), "register", user, self.domain, "pw")
        self.proc = subprocess.Popen(["prosody", "--config", str(self.config), "-F"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.ip, 5222), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Prosody for {self.domain} did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class BenchCauseway(xp.GatewayCauseway):
    """Causeway with warnings only, open registration, and no rate limits in the way: the
    per-peer stanza rate (500 by default) is lifted, as Prosody has none by default."""

    def config_text(self) -> str:
        return super().config_text().replace(
            'filter = "info,causeway_xmpp=debug"', 'filter = "warn"').replace(
            "system_roots = false\n", "system_roots = false\nmax_stanzas_per_second = 1000000\n") + (
            "".join(f"\n[rate_limits.{name}]\nper_second = 100000.0\nburst = 100000\n"
                      for name in ("login", "registration", "message")))


class Arrivals:
    """When each message body arrived, and futures for bodies still awaited."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}

    def arrive(self, body: str, at: float) -> None:
        self.arrived[body] = at
        waiter = self.waiters.pop(body, None)
        if waiter and not waiter.done():
            waiter.set_result(None)

    def waiter(self, body: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if body in self.arrived:
            future.set_result(None)
        else:
            self.waiters[body] = future
        return future


class XmppClient(Arrivals):
    """A slixmpp client that timestamps the body of every chat message it receives."""

    def __init__(self, jid: str, ip: str) -> None:
        import slixmpp

        self.ip = ip
        self.client = slixmpp.ClientXMPP(jid, "pw")
        super().__init__()
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.client.add_event_handler("message", self.on_message)

        def started(_event: Any) -> None:
            self.client.send_presence()
            if not self.ready.done():
                self.ready.set_result(True)

        self.client.add_event_handler("session_start", started)

    def on_message(self, message: Any) -> None:
        body = message["body"]
        if not body:
            return
        self.arrive(body, time.perf_counter())

    async def connect(self, ca: str) -> None:
        self.client.ca_certs = ca
        self.client.connect(host=self.ip, port=5222)
        await asyncio.wait_for(self.ready, 20)
        await asyncio.sleep(0.3)

    def send(self, to: str, body: str) -> None:
        self.client.send_message(mto=to, mbody=body, mtype="chat")


class MatrixClient(Arrivals):
    """Alice: sends with PUT, and a long-polling /sync loop that timestamps message bodies."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base = base_url
        self.session: aiohttp.ClientSession | None = None
        self.token = ""
        self.since: str | None = None
        self.invites: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.txn = 0

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        registered = await harness.register_user(self.session, self.base, "alice", "alice-password")
        self.token = registered["access_token"]
        self.task = asyncio.create_task(self.sync_loop())

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def sync_loop(self) -> None:
        assert self.session
        while True:
            # A timeline long enough for a whole burst: a limited one would skip messages.
            params = {"timeout": "30000", "filter": SYNC_FILTER}
            if self.since:
                params["since"] = self.since
            async with self.session.get(f"{self.base}/_matrix/client/v3/sync", params=params,
                                        headers=self.headers()) as response:
                body = await response.json(content_type=None)
            now = time.perf_counter()
            self.since = body.get("next_batch", self.since)
            rooms = body.get("rooms", {})
            for room_id in rooms.get("invite", {}):
                self.invites.put_nowait(room_id)
            for room in rooms.get("join", {}).values():
                if room.get("timeline", {}).get("limited") and self.since:
                    print("bench: a sync timeline was limited; messages may be missed", flush=True)
                for event in room.get("timeline", {}).get("events", []):
                    text = event.get("content", {}).get("body")
                    if event.get("type") == "m.room.message" and text and event.get("sender") != ALICE:
                        self.arrive(text, now)

    async def join(self, room: str) -> None:
        assert self.session
        async with self.session.post(f"{self.base}/_matrix/client/v3/join/{quote(room)}",
                                     json={}, headers=self.headers()) as response:
            await response.read()

    async def send(self, room: str, body: str) -> None:
        assert self.session
        self.txn += 1
        url = (f"{self.base}/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/"
               f"b{self.txn}-{uuid.uuid4().hex[:6]}")
        async with self.session.put(url, json={"msgtype": "m.text", "body": body},
                                    headers=self.headers()) as response:
            if response.status != 200:
                raise RuntimeError(f"send: HTTP {response.status} {await response.text()}")

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        if self.session:
            await self.session.close()


async def measure(label: str, send: Callable[[str], Any], waiter: Callable[[str], asyncio.Future],
                  sent_at: dict[str, float], n: int, m: int) -> dict[str, Any]:
    """`n` messages one at a time (their send times in `sent_at`, for the latency), then the
    throughput of `m` sent at once."""
    for i in range(n):
        body = f"{label} latency {i} {uuid.uuid4().hex[:8]}"
        arrived = waiter(body)
        start = time.perf_counter()
        sent_at[body] = start
        await send(body)
        await asyncio.wait_for(arrived, 30)
    bodies = [f"{label} burst {i} {uuid.uuid4().hex[:8]}" for i in range(m)]
    arrivals = [waiter(body) for body in bodies]
    start = time.perf_counter()
    await asyncio.gather(*(send(body) for body in bodies))
    await asyncio.wait_for(asyncio.gather(*arrivals), 300)
    elapsed = time.perf_counter() - start
    return {"throughput": m / elapsed, "burst_seconds": elapsed}


class EjabberdNode:
    """An ejabberd serving one domain, warnings only, with the users of the benchmark."""

    def __init__(self, work: Path, domain: str, ip: str, users: list[str], dist_port: int,
                 other: tuple[str, str]) -> None:
        self.domain = domain
        self.ip = ip
        self.users = users
        self.server = ejabberd.Ejabberd(work, domain=domain, ip=ip, dist_port=dist_port,
                                        loglevel="warning", hosts={other[0]: other[1]})

    def start(self) -> None:
        self.server.write_config()
        self.server.start_again()
        for user in self.users:
            self.server.register(user, "pw")

    def stop(self) -> None:
        self.server.stop()


async def run(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The benchmark with `kind` ("Prosody" or "ejabberd") as the XMPP side: bob on its first
    server, dave on a second one of the same kind for the baseline."""
    work = harness.make_workdir("bench-bridge-")
    xp.make_certificates(work)
    ca = str(work / "ca.crt")
    if kind == "Prosody":
        first, second = "prosody.test", "other.test"
        leaf(work, second)
        servers = [ProsodyNode(work, first, xp.PROSODY_IP, ["bob"]),
                   ProsodyNode(work, second, OTHER_IP, ["dave"])]
        first_ip, second_ip = xp.PROSODY_IP, OTHER_IP
    else:
        first, second = ejabberd.DOMAIN, "other-ejabberd.test"
        first_ip, second_ip = ejabberd.IP, EJABBERD_OTHER_IP
        leaf(work, second)
        servers = [EjabberdNode(work, first, first_ip, ["bob"], 5210, (second, second_ip)),
                   EjabberdNode(work, second, second_ip, ["dave"], 5211, (first, first_ip))]
    gateway = BenchCauseway(args.causeway, work, direct_tls=False, peer_domain=first,
                            peer_ip=first_ip)
    alice = MatrixClient(gateway.base_url)
    bob_jid, dave_jid = f"bob@{first}", f"dave@{second}"
    results: dict[str, Any] = {}
    try:
        for server in servers:
            server.start()
        gateway.start()
        await alice.start()
        bob = XmppClient(f"{bob_jid}/bench", first_ip)
        dave = XmppClient(f"{dave_jid}/bench", second_ip)
        await bob.connect(ca)
        await dave.connect(ca)

        # Warm-up: the direct room, and the streams between the servers, exist before timing.
        bob.send("alice@gw.test", "warm-up")
        room = await asyncio.wait_for(alice.invites.get(), 30)
        await alice.join(room)
        await asyncio.wait_for(alice.waiter("warm-up"), 30)
        arrived = bob.waiter("warm-up back")
        await alice.send(room, "warm-up back")
        await asyncio.wait_for(arrived, 30)
        for sender, receiver, to in ((bob, dave, dave_jid), (dave, bob, bob_jid)):
            arrived = receiver.waiter(f"warm-up {to}")
            sender.send(to, f"warm-up {to}")
            await asyncio.wait_for(arrived, 30)

        async def timed(label: str, send: Callable[[str], Any], receiver: Any) -> dict[str, Any]:
            sent: dict[str, float] = {}
            out = await measure(label, send, receiver.waiter, sent, args.n, args.m)
            out["latencies"] = [receiver.arrived[b] - t for b, t in sent.items()]
            return out

        async def xmpp_send(client: XmppClient, to: str) -> Callable[[str], Any]:
            async def send(body: str) -> None:
                client.send(to, body)
            return send

        async def matrix_send(body: str) -> None:
            await alice.send(room, body)

        results["xmpp_to_matrix"] = await timed("x2m", await xmpp_send(bob, "alice@gw.test"), alice)
        results["xmpp_to_xmpp_forward"] = await timed("x2x", await xmpp_send(bob, dave_jid), dave)
        results["matrix_to_xmpp"] = await timed("m2x", matrix_send, bob)
        results["xmpp_to_xmpp_back"] = await timed("x2x back", await xmpp_send(dave, bob_jid), bob)
        bob.client.disconnect()
        dave.client.disconnect()
        await asyncio.sleep(0.3)
    finally:
        await alice.close()
        gateway.stop()
        for server in servers:
            server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--causeway", default=str(harness.REPO / "target" / "release" / "causeway"),
                        help="the Causeway binary (default: the release build)")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--server", choices=["Prosody", "ejabberd", "all"], default="all",
                        help="the XMPP server of the other side (default: both, one after the other)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    args.n, args.m = (50, 200) if args.quick else (300, 2000)
    logging.basicConfig(level=logging.ERROR)
    kinds = ["Prosody", "ejabberd"] if args.server == "all" else [args.server]
    summary: dict[str, Any] = {}
    for kind in kinds:
        results = asyncio.run(run(args, kind))
        baseline = f"{kind}→{kind}"

        def row(name: str, ours: float | None, base: float | None, unit: str,
                lower_better: bool) -> None:
            ratio = "" if not ours or not base else f"{(base / ours if lower_better else ours / base):.2f}x"
            fmt = (lambda v: "-" if v is None else f"{v:,.1f}")
            print(f"{name:<34} {fmt(ours):>12} {fmt(base):>18} {unit:<6} {ratio:>8}")

        print(f"\n{kind} as the XMPP side; messages: {args.n} one at a time for latency, "
              f"{args.m} at once for throughput")
        print(f"{'':<34} {'via Causeway':>12} {baseline:>18} {'':<6} {'ratio':>8}")
        for name, ours, base in (("XMPP → Matrix", "xmpp_to_matrix", "xmpp_to_xmpp_forward"),
                                 ("Matrix → XMPP", "matrix_to_xmpp", "xmpp_to_xmpp_back")):
            o, b = results[ours], results[base]
            for p in (50, 99):
                row(f"{name} latency p{p}", (pct(o["latencies"], p) or 0) * 1000,
                    (pct(b["latencies"], p) or 0) * 1000, "ms", True)
            row(f"{name} throughput", o["throughput"], b["throughput"], "msg/s", False)
        summary[kind] = {k: {"p50_ms": (pct(v["latencies"], 50) or 0) * 1000,
                             "p99_ms": (pct(v["latencies"], 99) or 0) * 1000,
                             "throughput_per_s": v["throughput"]} for k, v in results.items()}
    print("ratio: how many times better Causeway is (above 1) or worse (below 1) than the baseline")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
