"""Benchmark: Matrix rooms as MUCs, against Prosody's own MUC (mod_muc) in the same run.

Two Prosodys on loopback in the secure mode of test_xmpp_prosody.py: prosody.test (127.0.0.2,
with its MUC component conference.prosody.test, the baseline) and other.test (127.0.0.3), and
Causeway (the given binary, normally the release build) for gw.test (127.0.0.5) with its MUC
service muc.gw.test. Occupants are slixmpp clients, half on each Prosody; Matrix members are
accounts of Causeway, each with a long-polling /sync. Logging is at warning level everywhere.

  delivery:  a room with M Matrix members and X XMPP occupants (on two XMPP servers) on
             Causeway, and a room of Prosody with the same X occupants; N messages one at a
             time from one occupant; p50 and p99 of the time until a recipient has it (every
             recipient of every message), and of the time until the last recipient has it.
  join:      an XMPP user joins each room asking for 20 messages of history: the time until its
             own presence, and until the subject (the occupant list and history are in before
             it); then the same in a Causeway room of B members (Prosody has no counterpart:
             B clients would have to be connected to it).
  memory:    resident memory of Causeway and of Prosody before and after the X occupants join
             (per occupant), and after R new rooms are made, one occupant in each (per room).
  portal:    the M Matrix members join Prosody's room through its portal on Causeway
             (`#_xmpp_bench=40conference.prosody.test:gw.test`), each an occupant of their
             own: the time of the first join (the portal made) and of the others; then N
             messages one at a time from the same occupant to the X occupants and the M
             members, against Prosody's delivery to the X occupants alone (above).

Run: scripts/bench-muc [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp

import harness
import test_xmpp_prosody as xp
from bench_bridge import OTHER_IP, Arrivals, BenchCauseway, ProsodyNode, leaf, pct

MUC = "http://jabber.org/protocol/muc"
CAUSEWAY_ROOM = "bench@muc.gw.test"
PROSODY_ROOM = "bench@conference.prosody.test"
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 1000}}, "presence": {"not_types": ["*"]}},
                         separators=(",", ":"))


class MucCauseway(BenchCauseway):
    """The benchmark's Causeway, with the quotas of remote domains lifted too: every occupant
    comes from two domains."""

    def config_text(self) -> str:
        return super().config_text() + "".join(
            f"\n[rate_limits.{name}]\nper_second = 100000.0\nburst = 100000\n"
            for name in ("remote_events", "remote_accounts", "remote_rooms")) + (
            f'\n[[xmpp.routes]]\ndomain = "other.test"\naddress = "{OTHER_IP}:5269"\n'
            f'\n[[xmpp.routes]]\ndomain = "conference.prosody.test"\naddress = "{xp.PROSODY_IP}:5269"\n')


class Occupant(Arrivals):
    """A slixmpp client that timestamps groupchat bodies and room presence."""

    def __init__(self, jid: str, ip: str) -> None:
        import slixmpp
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        super().__init__()
        self.ip = ip
        self.client = slixmpp.ClientXMPP(jid, "pw")
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.client.register_handler(Callback(
            "groupchat", MatchXPath("{jabber:client}message"), self.on_message))
        self.client.register_handler(Callback(
            "room presence", MatchXPath("{jabber:client}presence"), self.on_presence))

        def started(_event: Any) -> None:
            self.client.send_presence()
            if not self.ready.done():
                self.ready.set_result(True)

        self.client.add_event_handler("session_start", started)

    def mark(self, key: str) -> None:
        self.arrive(key, time.perf_counter())

    def on_message(self, stanza: Any) -> None:
        room = str(stanza["from"].bare)
        if stanza.xml.find("{jabber:client}subject") is not None:
            self.mark(f"subject {room}")
        body = stanza["body"]
        if body:
            self.mark(body)

    def on_presence(self, stanza: Any) -> None:
        x = stanza.xml.find(f"{{{MUC}#user}}x")
        if x is not None and any(s.get("code") == "110" for s in x.findall(f"{{{MUC}#user}}status")):
            self.mark(f"self {stanza['from'].bare}")

    async def connect(self, ca: str) -> None:
        self.client.ca_certs = ca
        self.client.connect(host=self.ip, port=5222)
        await asyncio.wait_for(self.ready, 30)

    async def join(self, room: str, nick: str, history: int = 0) -> tuple[float, float]:
        """Joins; the seconds until its own presence and until the subject."""
        me, subject = self.waiter(f"self {room}"), self.waiter(f"subject {room}")
        start = time.perf_counter()
        self.client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>"
                             f"<history maxstanzas='{history}'/></x></presence>")
        await asyncio.wait_for(me, 120)
        at_self = time.perf_counter() - start
        await asyncio.wait_for(subject, 120)
        return at_self, time.perf_counter() - start

    def say(self, room: str, body: str) -> None:
        self.client.send_message(mto=room, mbody=body, mtype="groupchat")


class Member(Arrivals):
    """A Matrix account of Causeway with a long-polling /sync that timestamps bodies."""

    def __init__(self, session: aiohttp.ClientSession, base: str, name: str) -> None:
        super().__init__()
        self.session = session
        self.base = base
        self.name = name
        self.token = ""
        self.since: str | None = None
        self.task: asyncio.Task | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def register(self) -> None:
        registered = await harness.register_user(self.session, self.base, self.name, "member-password")
        self.token = registered["access_token"]

    async def post(self, path: str, body: Any) -> Any:
        async with self.session.post(f"{self.base}{path}", json=body, headers=self.headers()) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise RuntimeError(f"{path}: HTTP {r.status} {data}")
            return data

    def listen(self) -> None:
        self.task = asyncio.create_task(self.sync_loop())

    async def sync_loop(self) -> None:
        while True:
            params = {"timeout": "30000", "filter": SYNC_FILTER}
            if self.since:
                params["since"] = self.since
            try:
                async with self.session.get(f"{self.base}/_matrix/client/v3/sync", params=params,
                                            headers=self.headers()) as response:
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.2)
                continue
            now = time.perf_counter()
            self.since = body.get("next_batch", self.since)
            for room in body.get("rooms", {}).get("join", {}).values():
                for event in room.get("timeline", {}).get("events", []):
                    text = event.get("content", {}).get("body")
                    if event.get("type") == "m.room.message" and text and text not in self.arrived:
                        self.arrive(text, now)

    def stop(self) -> None:
        if self.task:
            self.task.cancel()


async def in_batches(coroutines: list[Any], size: int = 16) -> None:
    for i in range(0, len(coroutines), size):
        await asyncio.gather(*coroutines[i:i + size])


def rss_kb(pid: int | None) -> int:
    return (harness.read_proc_status(pid, "VmRSS") or 0) if pid else 0


async def settled_rss_kb(pid: int | None, wait: float = 30) -> int:
    """Resident memory once it stops moving: what the allocator gives back after a burst (the
    password hashing of many registrations, for one) is not counted against what follows."""
    last = rss_kb(pid)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = rss_kb(pid)
        if abs(now - last) <= max(last // 200, 64):
            return now
        last = now
    return last


async def delivery(label: str, sender: Occupant, room: str, recipients: list[Any], n: int) -> dict[str, Any]:
    """`n` messages one at a time; every recipient's latency, and the last one's per message."""
    each: list[float] = []
    last: list[float] = []
    for i in range(n):
        body = f"{label} {i} {uuid.uuid4().hex[:8]}"
        waiters = [r.waiter(body) for r in recipients]
        start = time.perf_counter()
        sender.say(room, body)
        await asyncio.wait_for(asyncio.gather(*waiters), 60)
        times = [r.arrived[body] - start for r in recipients]
        each.extend(times)
        last.append(max(times))
    return {"each": each, "last": last}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = harness.make_workdir("bench-muc-")
    xp.make_certificates(work)
    leaf(work, "other.test")
    leaf(work, "conference.prosody.test")
    ca = str(work / "ca.crt")
    half = args.occupants // 2
    first_users = ["bob", "carol"] + [f"occ{i}" for i in range(1, half)]
    second_users = [f"occ{i}" for i in range(half, args.occupants)]
    prosody = ProsodyNode(work, "prosody.test", xp.PROSODY_IP, first_users)
    prosody.extra = ('Component "conference.prosody.test" "muc"\n'
                     "    max_history_messages = 100\n    muc_room_default_history_length = 20\n"
                     "    muc_room_default_persistent = true\n    muc_room_locking = false\n")
    other = ProsodyNode(work, "other.test", OTHER_IP, second_users)
    gateway = MucCauseway(args.causeway, work, direct_tls=False)
    results: dict[str, Any] = {}
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300),
                                    connector=aiohttp.TCPConnector(limit=0))
    members: list[Member] = []
    occupants: list[Occupant] = []
    try:
        import shutil
        for suffix in ("crt", "key"):
            (work / "prosody.test" / "certs").mkdir(parents=True, exist_ok=True)
            shutil.copy(work / f"conference.prosody.test.{suffix}",
                        work / "prosody.test" / "certs" / f"conference.prosody.test.{suffix}")
        prosody.start()
        other.start()
        gateway.start()
        owner = Member(session, gateway.base_url, "owner")
        await owner.register()
        created = await owner.post("/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "room_alias_name": "bench", "topic": "Benchmark"})
        room_id = created["room_id"]
        members = [Member(session, gateway.base_url, f"m{i}") for i in range(args.members)]
        await in_batches([m.register() for m in members])
        await in_batches([m.post(f"/_matrix/client/v3/join/{quote(room_id)}", {}) for m in members])
        for member in members:
            member.listen()

        bob = Occupant("bob@prosody.test/bench", xp.PROSODY_IP)
        occupants = [bob] + [Occupant(f"{u}@prosody.test/bench", xp.PROSODY_IP) for u in first_users[2:]] \
            + [Occupant(f"{u}@other.test/bench", OTHER_IP) for u in second_users]
        await in_batches([o.connect(ca) for o in occupants])
        # Occupants on both servers, in both rooms; memory before and after.
        causeway_before = await settled_rss_kb(gateway.pid)
        prosody_before = await settled_rss_kb(prosody.proc.pid if prosody.proc else None)
        await in_batches([o.join(CAUSEWAY_ROOM, f"o{i}") for i, o in enumerate(occupants)], 8)
        causeway_after = await settled_rss_kb(gateway.pid)
        await in_batches([o.join(PROSODY_ROOM, f"o{i}") for i, o in enumerate(occupants)], 8)
        prosody_after = await settled_rss_kb(prosody.proc.pid if prosody.proc else None)
        results["memory_per_occupant_kb"] = {
            "causeway": (causeway_after - causeway_before) / len(occupants),
            "prosody": (prosody_after - prosody_before) / len(occupants),
        }
        # Warm-up, then the timed messages.
        await delivery("warm-up", bob, CAUSEWAY_ROOM, occupants + members, 2)
        await delivery("warm-up", bob, PROSODY_ROOM, occupants, 2)
        results["delivery_causeway"] = await delivery("causeway", bob, CAUSEWAY_ROOM,
                                                      occupants + members, args.n)
        results["delivery_prosody"] = await delivery("prosody", bob, PROSODY_ROOM, occupants, args.n)

        # The same members in Prosody's room, through its portal.
        portal = quote("#_xmpp_bench=40conference.prosody.test:gw.test")
        start = time.perf_counter()
        await members[0].post(f"/_matrix/client/v3/join/{portal}", {})
        first = time.perf_counter() - start
        joins: list[float] = []

        async def portal_join(member: Member) -> None:
            began = time.perf_counter()
            await member.post(f"/_matrix/client/v3/join/{portal}", {})
            joins.append(time.perf_counter() - began)

        await in_batches([portal_join(m) for m in members[1:]], 8)
        results["portal_join_first"] = first
        results["portal_joins"] = joins
        await delivery("warm-up", bob, PROSODY_ROOM, occupants + members, 2)
        results["delivery_portal"] = await delivery("portal", bob, PROSODY_ROOM,
                                                    occupants + members, args.n)

        carol = Occupant("carol@prosody.test/bench", xp.PROSODY_IP)
        await carol.connect(ca)
        results["join_causeway"] = await carol.join(CAUSEWAY_ROOM, "carol", 20)
        results["join_prosody"] = await carol.join(PROSODY_ROOM, "carol", 20)
        # A bigger room.
        more = [Member(session, gateway.base_url, f"m{i}")
                for i in range(args.members, args.big - args.occupants)]
        await in_batches([m.register() for m in more])
        big = await owner.post("/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "room_alias_name": "big", "topic": "Big"})
        await in_batches([m.post(f"/_matrix/client/v3/join/{quote(big['room_id'])}", {})
                          for m in members + more])
        results["big_members"] = len(members) + len(more) + 1
        results["join_big"] = await carol.join("big@muc.gw.test", "carol", 20)
        # Memory per room: R new rooms, one occupant in each. A room of Prosody is made by
        # its first occupant; a room of Causeway is a Matrix room (made by its owner), which
        # the occupant then joins: both are counted.
        causeway_before = await settled_rss_kb(gateway.pid)
        prosody_before = await settled_rss_kb(prosody.proc.pid if prosody.proc else None)
        for i in range(args.rooms):
            await owner.post("/_matrix/client/v3/createRoom", {
                "preset": "public_chat", "room_alias_name": f"r{i}"})
        for i in range(args.rooms):
            await carol.join(f"r{i}@muc.gw.test", "carol", 0)
        causeway_after = await settled_rss_kb(gateway.pid)
        for i in range(args.rooms):
            await carol.join(f"r{i}@conference.prosody.test", "carol", 0)
        prosody_after = await settled_rss_kb(prosody.proc.pid if prosody.proc else None)
        results["memory_per_room_kb"] = {
            "causeway": (causeway_after - causeway_before) / args.rooms,
            "prosody": (prosody_after - prosody_before) / args.rooms,
        }
        results["rss_kb"] = {"causeway": causeway_after, "prosody": prosody_after}
        for occupant in occupants + [carol]:
            occupant.client.disconnect()
        await asyncio.sleep(0.3)
    finally:
        for member in members:
            member.stop()
        await session.close()
        gateway.stop()
        prosody.stop()
        other.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--causeway", default=str(harness.REPO / "target" / "release" / "causeway"),
                        help="the Causeway binary (default: the release build)")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.members, args.occupants, args.n, args.big, args.rooms = 20, 6, 10, 100, 20
    else:
        args.members, args.occupants, args.n, args.big, args.rooms = 200, 50, 50, 1000, 300
    logging.basicConfig(level=logging.ERROR)
    results = asyncio.run(run(args))
    ms = (lambda v: "-" if v is None else f"{v * 1000:,.1f}")

    def row(name: str, ours: float | None, base: float | None, unit: str, show: Any) -> None:
        ratio = "" if not ours or not base else f"{ours / base:.2f}x"
        print(f"{name:<44} {show(ours):>12} {show(base):>12} {unit:<5} {ratio:>8}")

    dc, dp = results["delivery_causeway"], results["delivery_prosody"]
    print(f"\nMUC benchmark: {args.members} Matrix members and {args.occupants} XMPP occupants on two "
          f"Prosodys (Causeway), the same occupants (Prosody's MUC); {args.n} messages one at a time")
    print(f"{'':<44} {'Causeway':>12} {'Prosody':>12} {'':<5} {'ratio':>8}")
    row("delivery to a recipient, p50", pct(dc["each"], 50), pct(dp["each"], 50), "ms", ms)
    row("delivery to a recipient, p99", pct(dc["each"], 99), pct(dp["each"], 99), "ms", ms)
    row("delivery to the last recipient, p50", pct(dc["last"], 50), pct(dp["last"], 50), "ms", ms)
    row("delivery to the last recipient, p99", pct(dc["last"], 99), pct(dp["last"], 99), "ms", ms)
    def part(d: dict[str, Any], occupants: bool) -> list[float]:
        """The latencies of the XMPP occupants (the first of each message's recipients) or of
        the Matrix members."""
        step = args.occupants + args.members
        return [t for i in range(0, len(d["each"]), step)
                for t in (d["each"][i:i + args.occupants] if occupants
                          else d["each"][i + args.occupants:i + step])]

    for name, d in (("room", dc), ("portal", results["delivery_portal"])):
        row(f"{name}: to the XMPP occupants, p50", pct(part(d, True), 50), pct(dp["each"], 50), "ms", ms)
        row(f"{name}: to the Matrix members, p50", pct(part(d, False), 50), None, "ms", ms)
    dt = results["delivery_portal"]
    row("portal: delivery to a recipient, p50", pct(dt["each"], 50), pct(dp["each"], 50), "ms", ms)
    row("portal: delivery to a recipient, p99", pct(dt["each"], 99), pct(dp["each"], 99), "ms", ms)
    row("portal: delivery to the last recipient, p50", pct(dt["last"], 50), pct(dp["last"], 50), "ms", ms)
    row("portal: delivery to the last recipient, p99", pct(dt["last"], 99), pct(dp["last"], 99), "ms", ms)
    row("portal: first join (the portal made)", results["portal_join_first"], None, "ms", ms)
    row("portal: join, p50", pct(results["portal_joins"], 50), None, "ms", ms)
    row("join: own presence", results["join_causeway"][0], results["join_prosody"][0], "ms", ms)
    row("join: occupants, history and subject", results["join_causeway"][1],
        results["join_prosody"][1], "ms", ms)
    row(f"join a room of {results['big_members']} members: own presence", results["join_big"][0],
        None, "ms", ms)
    row(f"join a room of {results['big_members']} members: all in", results["join_big"][1], None, "ms", ms)
    kb = (lambda v: "-" if v is None else f"{v:,.1f}")
    row("memory per occupant", results["memory_per_occupant_kb"]["causeway"],
        results["memory_per_occupant_kb"]["prosody"], "KiB", kb)
    row("memory per room (one occupant)", results["memory_per_room_kb"]["causeway"],
        results["memory_per_room_kb"]["prosody"], "KiB", kb)
    row("resident memory at the end", results["rss_kb"]["causeway"], results["rss_kb"]["prosody"], "KiB", kb)
    print("(ratios are Causeway / Prosody: below 1 is better for Causeway; Causeway's recipients "
          "include the Matrix members, Prosody's only the occupants; in the portal rows the "
          "Matrix members are occupants of Prosody's room too, each through Causeway)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
