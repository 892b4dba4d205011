"""Benchmark: message latency and catch-up across servers, Causeway against Synapse, on loopback.

Three servers federate over TLS on loopback (``harness.federating``): Causeway (the given
binary), Synapse A and Synapse B. The baseline is Synapse B to Synapse A; the figures measured
are Causeway to Synapse A and Synapse A to Causeway, under the same load:

  (a) one at a time: a user of the sending server sends N messages in a room of the sending
      server that a user of the receiving server joined, each after the last one arrived; the
      latency is from the send request to the receiving user's /sync returning it: p50/p99;
  (b) burst: B messages sent back to back; the latency of each, and the time until the last
      arrived;
  (c) catch-up: the receiving server is stopped, C messages are sent, the receiving server is
      started again: the time from its start until the last message is in its /messages, until
      all of them are (within a minute more), and how many arrived (Synapse retries a stopped
      peer on its own schedule, shortened here to seconds, and then sends only the latest
      event of the room: the receiver fetches the rest, Causeway when /messages pages back into
      the gap; Causeway tries again at once when the peer is heard from, and sends everything).

  (d) a big room: a room of Synapse A with M members (users of Synapse A), joined by a user of
      Synapse B (the baseline) and by a user of Causeway: the time until the join request
      returns, until the joining server lists every member, and the joining server's peak
      resident memory during the join (its peak is reset before) and how much it grew.

Figures are printed as a table with the ratio to the baseline, and written as JSON.

Run: scripts/bench-federation [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import aiohttp

import harness


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


class User:
    def __init__(self, session: aiohttp.ClientSession, server: harness.ServerProcess,
                 data: dict[str, Any]) -> None:
        self.session = session
        self.server = server
        self.user_id = data["user_id"]
        self.headers = {"Authorization": f"Bearer {data['access_token']}"}
        self.since: str | None = None
        self.txn = 0

    async def call(self, method: str, path: str, body: Any = None,
                   params: dict[str, str] | None = None) -> Any:
        url = f"{self.server.base_url}/_matrix/client/v3{path}"
        async with self.session.request(method, url, json=body, params=params,
                                        headers=self.headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise harness.ServerError(f"{method} {path}: {resp.status} {data}")
            return data

    async def send(self, room: str, body: str) -> None:
        self.txn += 1
        await self.call("PUT", f"/rooms/{room}/send/m.room.message/b{self.txn}",
                        {"msgtype": "m.text", "body": body})

    async def sync_bodies(self, room: str, timeout_ms: int) -> list[str]:
        params = {"timeout": str(timeout_ms)}
        if self.since:
            params["since"] = self.since
        data = await self.call("GET", "/sync", params=params)
        self.since = data.get("next_batch", self.since)
        events = data.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get(
            "events", [])
        return [e.get("content", {}).get("body", "") for e in events
                if e.get("type") == "m.room.message"]

    async def last_bodies(self, room: str, limit: int) -> list[str]:
        data = await self.call("GET", f"/rooms/{room}/messages",
                               params={"dir": "b", "limit": str(limit)})
        return [e.get("content", {}).get("body", "") for e in data.get("chunk", [])
                if e.get("type") == "m.room.message"]


async def make_user(session: aiohttp.ClientSession, server: harness.ServerProcess,
                    name: str) -> User:
    data = await harness.register_user(session, server.base_url, name, "bench password")
    return User(session, server, data)


async def shared_room(sender: User, receiver: User) -> str:
    created = await sender.call("POST", "/createRoom",
                                {"preset": "public_chat", "room_version": "10"})
    room = created["room_id"]
    await receiver.call("POST", f"/join/{room}", {},
                        params={"via": sender.server.server_name})
    # The receiver's sync starts after the join.
    await receiver.sync_bodies(room, 0)
    return room


async def one_at_a_time(sender: User, receiver: User, room: str, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        body = f"one {i} {time.monotonic()}"
        start = time.monotonic()
        await sender.send(room, body)
        deadline = start + 30
        while time.monotonic() < deadline:
            if body in await receiver.sync_bodies(room, 10_000):
                latencies.append(time.monotonic() - start)
                break
    return latencies


async def burst(sender: User, receiver: User, room: str, count: int) -> dict[str, Any]:
    bodies = [f"burst {i} {time.monotonic()}" for i in range(count)]
    sent_at: dict[str, float] = {}
    arrived: dict[str, float] = {}
    start = time.monotonic()

    async def listen() -> None:
        deadline = time.monotonic() + 120
        while len(arrived) < count and time.monotonic() < deadline:
            for body in await receiver.sync_bodies(room, 10_000):
                if body in sent_at and body not in arrived:
                    arrived[body] = time.monotonic()

    listener = asyncio.create_task(listen())
    for body in bodies:
        sent_at[body] = time.monotonic()
        await sender.send(room, body)
    await listener
    latencies = [arrived[b] - sent_at[b] for b in bodies if b in arrived]
    last = max(arrived.values(), default=None)
    return {
        "p50_ms": ms(pct(latencies, 50)),
        "p99_ms": ms(pct(latencies, 99)),
        "all_arrived_s": None if last is None or len(arrived) < count else round(last - start, 2),
        "arrived": len(arrived),
    }


async def catch_up(sender: User, receiver: User, room: str, count: int) -> dict[str, Any]:
    receiving = receiver.server
    receiving.stop()
    for i in range(count):
        await sender.send(room, f"missed {i}")
    started = time.monotonic()
    receiving.start(timeout=60)
    ready = time.monotonic()
    target = f"missed {count - 1}"
    arrived = None
    while time.monotonic() - ready < 300:
        if target in await receiver.last_bodies(room, 20):
            arrived = time.monotonic()
            break
        await asyncio.sleep(0.25)
    got = 0
    complete = None
    if arrived is not None:
        # The last one can arrive before all the others are stored (a receiver that answers
        # a transaction before it stores it): count until all are there, for a while.
        while time.monotonic() - arrived < 60:
            got = await count_missed(receiver, room, count)
            if got == count:
                complete = time.monotonic()
                break
            await asyncio.sleep(1)
    return {
        "start_s": round(ready - started, 2),
        "last_arrived_s": None if arrived is None else round(arrived - ready, 2),
        "all_arrived_s": None if complete is None else round(complete - ready, 2),
        "arrived": got,
    }


async def count_missed(receiver: User, room: str, count: int) -> int:
    """How many of the missed messages the receiver shows, paging back from the end."""
    seen: set[str] = set()
    token = None
    for _ in range(200):
        params = {"dir": "b", "limit": "100"}
        if token:
            params["from"] = token
        page = await receiver.call("GET", f"/rooms/{room}/messages", params=params)
        seen.update(e.get("content", {}).get("body", "") for e in page.get("chunk", []))
        token = page.get("end")
        if not token:
            break
    return sum(1 for i in range(count) if f"missed {i}" in seen)


async def pair(label: str, sender: User, receiver: User, sizes: argparse.Namespace,
               catch: bool) -> dict[str, Any]:
    room = await shared_room(sender, receiver)
    one = await one_at_a_time(sender, receiver, room, sizes.one)
    result: dict[str, Any] = {
        "one_p50_ms": ms(pct(one, 50)),
        "one_p99_ms": ms(pct(one, 99)),
        "one_arrived": len(one),
    }
    bursts = await burst(sender, receiver, room, sizes.burst)
    result.update({f"burst_{k}": v for k, v in bursts.items()})
    if catch:
        caught = await catch_up(sender, receiver, room, sizes.catch_up)
        result.update({f"catch_up_{k}": v for k, v in caught.items()})
    print(f"  {label}: {result}", flush=True)
    return result


async def big_room(session: aiohttp.ClientSession, owner: User, members: int) -> str:
    """A public room of `owner`'s with `members` more users of its server joined."""
    created = await owner.call("POST", "/createRoom",
                               {"preset": "public_chat", "room_version": "10"})
    room = created["room_id"]
    gate = asyncio.Semaphore(16)

    async def member(n: int) -> None:
        async with gate:
            user = await make_user(session, owner.server, f"member{n}")
            await user.call("POST", f"/join/{room}", {})

    start = time.monotonic()
    await asyncio.gather(*(member(n) for n in range(members)))
    print(f"  {members} members joined the big room in {time.monotonic() - start:.0f} s",
          flush=True)
    return room


def reset_peak(pid: int | None) -> None:
    """Resets the peak resident set size of a process (VmHWM), where Linux lets it."""
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


async def join_big_room(joiner: User, room: str, via: str, total: int) -> dict[str, Any]:
    """Joins the big room: seconds until the join returns and until every member is listed,
    and the joining server's memory."""
    pid = joiner.server.pid
    reset_peak(pid)
    before = harness.read_proc_status(pid, "VmRSS") if pid else None
    start = time.monotonic()
    await joiner.call("POST", f"/join/{room}", {}, params={"via": via})
    joined = time.monotonic() - start
    listed = None
    while time.monotonic() - start < 600:
        members = await joiner.call("GET", f"/rooms/{room}/joined_members")
        if len(members.get("joined", {})) >= total:
            listed = time.monotonic() - start
            break
        await asyncio.sleep(0.25)
    peak = harness.read_proc_status(pid, "VmHWM") if pid else None
    return {
        "join_s": round(joined, 2),
        "all_listed_s": None if listed is None else round(listed, 2),
        "peak_rss_mb": None if peak is None else round(peak / 1024, 1),
        "rss_growth_mb": None if peak is None or before is None else round((peak - before) / 1024, 1),
    }


def table(results: dict[str, dict[str, Any]]) -> None:
    base = next(iter(results.values()))
    keys = list(base)
    names = list(results)
    print("\n" + "figure".ljust(24) + "".join(n.rjust(26) for n in names) + "  ratio to baseline")
    for key in keys:
        row = key.ljust(24) + "".join(str(results[n].get(key)).rjust(26) for n in names)
        ratios = []
        for n in names[1:]:
            a, b = results[n].get(key), base.get(key)
            ratios.append(f"{a / b:.2f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-")
        print(row + "  " + " / ".join(ratios))


async def run(args: argparse.Namespace) -> int:
    causeway = harness.Causeway(args.causeway, log_filter="warn")
    synapse_a = harness.Synapse(args.synapse_venv, log_level="WARNING")
    synapse_b = harness.Synapse(args.synapse_venv, log_level="WARNING")
    work = harness.make_workdir("bench-federation-")
    harness.federating([causeway, synapse_a, synapse_b], Path(work) / "tls")
    results: dict[str, dict[str, Any]] = {}
    with causeway, synapse_a, synapse_b:
        for server in (synapse_a, synapse_b):
            server.start(timeout=60)
        causeway.start()
        async with aiohttp.ClientSession() as session:
            on_a = await make_user(session, synapse_a, "alice")
            on_b = await make_user(session, synapse_b, "bob")
            on_c = await make_user(session, causeway, "carol")
            print("measuring", flush=True)
            results["Synapse B -> Synapse A"] = await pair(
                "Synapse B -> Synapse A", on_b, on_a, args, catch=True)
            results["Causeway -> Synapse A"] = await pair(
                "Causeway -> Synapse A", on_c, on_a, args, catch=True)
            results["Synapse A -> Causeway"] = await pair(
                "Synapse A -> Causeway", on_a, on_c, args, catch=True)
            if args.members:
                print(f"a room of {args.members} members on Synapse A", flush=True)
                room = await big_room(session, on_a, args.members)
                joins: dict[str, dict[str, Any]] = {}
                # Each joiner adds one member: the first is waited for as the room had it.
                total = args.members + 1
                for label, joiner in (("Synapse B joins", on_b), ("Causeway joins", on_c)):
                    total += 1
                    joins[label] = await join_big_room(joiner, room, synapse_a.server_name, total)
                    print(f"  {label}: {joins[label]}", flush=True)
                print()
                table(joins)
                results.update(joins)
    table({k: v for k, v in results.items() if "joins" not in k})
    out = Path(args.output)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {out}")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--causeway", default=str(harness.REPO / "target" / "release" / "causeway"))
    parser.add_argument("--synapse-venv", default=str(harness.REPO / ".venv" / "synapse"))
    parser.add_argument("--one", type=int, default=50, help="messages sent one at a time")
    parser.add_argument("--burst", type=int, default=100, help="messages of the burst")
    parser.add_argument("--catch-up", type=int, default=1000, help="messages missed while down")
    parser.add_argument("--members", type=int, default=5000,
                        help="members of the big room joined across servers (0: no such room)")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--output", default=str(harness.HERE / ".work" / "bench_federation.json"))
    args = parser.parse_args()
    if args.quick:
        args.one, args.burst, args.catch_up, args.members = 10, 20, 50, 100
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    harness.run_async_test(lambda: run(args))


if __name__ == "__main__":
    main()
