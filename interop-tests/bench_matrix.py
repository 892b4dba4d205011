"""Benchmark: Causeway against Synapse under the same client load, on loopback.

Each server runs alone, in its own temporary directory (Causeway: the given release binary with
its default SQLite store; Synapse: SQLite, presence off unless --synapse-presence). The same
aiohttp client load is driven against each:

  (a) sequential sends: N messages from one client, one at a time: sends/s, p50/p99 latency;
  (b) concurrent sends: S senders (own users, one room), T messages in total: sends/s, p50/p99;
  (c) send-to-sync delivery: L clients long-poll /sync (timeout=30000, since token) in one room;
      one sender sends M messages spaced D ms apart, each carrying its send time; a delivery
      latency is the time a listener's /sync returns with that message minus its send time;
      p50/p99 over all (listener, message) pairs, and the number never delivered;
  (d) memory: VmRSS of the server process idle after start and registration, and after the load
      (plus VmHWM, the peak), and the server's CPU seconds for each phase.

Results are printed side by side (Causeway | Synapse | ratio) and written as JSON.

Run: scripts/bench [--quick] [--only causeway|synapse]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

import harness

SYNC_FILTER = json.dumps(
    {"room": {"timeline": {"limit": 200}, "state": {"lazy_load_members": True}},
     "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
    separators=(",", ":"),
)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


class BenchError(RuntimeError):
    pass


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, user_id: str, token: str) -> None:
        self.session = session
        self.base = base
        self.user_id = user_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.txn = 0

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        async with self.session.request(method, self.base + path, headers=self.headers, **kw) as r:
            data = await r.json(content_type=None)
            if r.status != 200:
                raise BenchError(f"{method} {path} -> {r.status} {data}")
            return data

    async def send(self, room_id: str, content: dict[str, Any]) -> str:
        self.txn += 1
        path = (f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/"
                f"b{self.txn}-{time.monotonic_ns()}")
        return (await self.call("PUT", path, json=content))["event_id"]


async def gather_limited(n: int, coros: list[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def bench_server(server: harness.ServerProcess, opts: argparse.Namespace,
                       res: dict[str, Any]) -> dict[str, Any]:
    """Runs the phases, filling ``res`` as it goes (so a failure keeps the earlier figures)."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=90)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        base = server.base_url
        t0 = time.monotonic()

        async def reg(name: str) -> Client:
            r = await harness.register_user(session, base, name, f"{name} password")
            return Client(session, base, r["user_id"], r["access_token"])

        names = (["sender"] + [f"conc{i}" for i in range(opts.conc_senders)]
                 + [f"listen{i}" for i in range(opts.listeners)])
        clients = await gather_limited(4, [reg(n) for n in names])
        sender = clients[0]
        conc = clients[1 : 1 + opts.conc_senders]
        listeners = clients[1 + opts.conc_senders :]

        async def make_room(name: str, members: list[Client]) -> str:
            room = await sender.call("POST", "/_matrix/client/v3/createRoom",
                                     json={"name": name, "preset": "public_chat"})
            room_id = room["room_id"]
            await gather_limited(4, [m.call("POST", f"/_matrix/client/v3/join/{quote(room_id, safe='')}",
                                            json={}) for m in members])
            return room_id

        load_room = await make_room("bench load", conc)
        delivery_room = await make_room("bench delivery", listeners)
        res["setup_seconds"] = round(time.monotonic() - t0, 2)
        print(f"  [{server.kind}] {len(clients)} users registered, 2 rooms joined "
              f"({res['setup_seconds']} s)", flush=True)

        await asyncio.sleep(opts.settle)
        res["rss_idle_kb"] = server.rss_kb()

        # (a) sequential sends
        cpu0 = server.cpu_seconds()
        pcpu0 = time.process_time()
        lat: list[float] = []
        start = time.perf_counter()
        for i in range(opts.seq):
            t = time.perf_counter()
            await sender.send(load_room, {"msgtype": "m.text", "body": f"sequential {i}"})
            lat.append(time.perf_counter() - t)
        wall = time.perf_counter() - start
        res["sequential"] = {
            "messages": opts.seq, "seconds": round(wall, 3), "sends_per_s": round(opts.seq / wall, 1),
            "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)),
            "server_cpu_s": _delta(cpu0, server.cpu_seconds()),
            "client_cpu_s": round(time.process_time() - pcpu0, 2),
        }
        print(f"  [{server.kind}] (a) sequential: {res['sequential']}", flush=True)

        # (b) concurrent senders
        per = opts.conc_total // max(1, len(conc))
        lat_b: list[float] = []

        async def worker(c: Client, w: int) -> None:
            for i in range(per):
                t = time.perf_counter()
                await c.send(load_room, {"msgtype": "m.text", "body": f"concurrent {w}/{i}"})
                lat_b.append(time.perf_counter() - t)

        cpu0 = server.cpu_seconds()
        pcpu0 = time.process_time()
        start = time.perf_counter()
        await asyncio.gather(*(worker(c, w) for w, c in enumerate(conc)))
        wall = time.perf_counter() - start
        total = per * len(conc)
        res["concurrent"] = {
            "senders": len(conc), "messages": total, "seconds": round(wall, 3),
            "sends_per_s": round(total / wall, 1),
            "p50_ms": ms(pct(lat_b, 50)), "p99_ms": ms(pct(lat_b, 99)),
            "server_cpu_s": _delta(cpu0, server.cpu_seconds()),
            "client_cpu_s": round(time.process_time() - pcpu0, 2),
        }
        print(f"  [{server.kind}] (b) concurrent: {res['concurrent']}", flush=True)

        # (c) send-to-sync delivery
        res["delivery"] = await delivery(server, sender, listeners, delivery_room, opts)
        print(f"  [{server.kind}] (c) delivery: {res['delivery']}", flush=True)

        await asyncio.sleep(opts.settle)
        res["rss_after_kb"] = server.rss_kb()
        res["rss_peak_kb"] = server.hwm_kb()
        res["cpu_total_s"] = server.cpu_seconds()
        print(f"  [{server.kind}] (d) RSS idle {res['rss_idle_kb']} kB, after load "
              f"{res['rss_after_kb']} kB, peak {res['rss_peak_kb']} kB", flush=True)
    return res


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 2)


async def delivery(server: harness.ServerProcess, sender: Client, listeners: list[Client],
                   room_id: str, opts: argparse.Namespace) -> dict[str, Any]:
    n_msgs = opts.delivery_messages
    received: list[dict[int, float]] = [{} for _ in listeners]
    sent_at: dict[int, float] = {}
    stop = asyncio.Event()
    all_done = asyncio.Event()
    done_count = 0
    polling = [asyncio.Event() for _ in listeners]
    filter_mode = {"value": "inline"}
    stats = {"syncs": 0, "limited": 0, "errors": 0}

    async def sync(c: Client, params: dict[str, str]) -> dict[str, Any]:
        if filter_mode["value"] == "inline":
            params = {**params, "filter": SYNC_FILTER}
        async with c.session.get(c.base + "/_matrix/client/v3/sync", params=params,
                                 headers=c.headers) as r:
            data = await r.json(content_type=None)
            if r.status == 400 and filter_mode["value"] == "inline" and "filter" in params:
                filter_mode["value"] = "none"  # the server does not take inline filters
                return await sync(c, {k: v for k, v in params.items() if k != "filter"})
            if r.status != 200:
                raise BenchError(f"GET /sync -> {r.status} {data}")
            return data

    # Initial syncs (sequentially: the first decides whether inline filters work).
    tokens = []
    for c in listeners:
        tokens.append((await sync(c, {"timeout": "0"}))["next_batch"])

    async def listen(i: int, c: Client, since: str) -> None:
        nonlocal done_count
        mine = received[i]
        while not stop.is_set():
            polling[i].set()
            try:
                data = await sync(c, {"since": since, "timeout": "30000"})
            except (BenchError, aiohttp.ClientError, asyncio.TimeoutError):
                stats["errors"] += 1
                await asyncio.sleep(0.05)
                continue
            now = time.perf_counter()
            stats["syncs"] += 1
            since = data["next_batch"]
            room = data.get("rooms", {}).get("join", {}).get(room_id)
            if not room:
                continue
            tl = room.get("timeline", {})
            if tl.get("limited"):
                stats["limited"] += 1
            for ev in tl.get("events", []):
                seq = ev.get("content", {}).get("bench_seq")
                if isinstance(seq, int) and seq not in mine:
                    mine[seq] = now
            if len(mine) == n_msgs:
                done_count += 1
                if done_count == len(listeners):
                    all_done.set()
                return

    tasks = [asyncio.create_task(listen(i, c, tokens[i])) for i, c in enumerate(listeners)]
    await asyncio.gather(*(p.wait() for p in polling))
    await asyncio.sleep(0.5)  # let every long-poll reach the server

    cpu0 = server.cpu_seconds()
    pcpu0 = time.process_time()
    send_lat: list[float] = []

    async def send_one(seq: int) -> None:
        t = time.perf_counter()
        sent_at[seq] = t
        # Event JSON allows no floats: the send time travels as integer microseconds.
        await sender.send(room_id, {"msgtype": "m.text", "body": f"delivery {seq} sent at {t:.6f}",
                                    "bench_seq": seq, "bench_ts_us": int(t * 1_000_000)})
        send_lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    sends = []
    for seq in range(n_msgs):
        # Fixed schedule: the offered load is the same whatever the server's answer time.
        delay = start + seq * opts.spacing_ms / 1000 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sends.append(asyncio.create_task(send_one(seq)))
    await asyncio.gather(*sends)
    try:
        await asyncio.wait_for(all_done.wait(), timeout=opts.delivery_grace)
    except asyncio.TimeoutError:
        pass
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    lat = [got[seq] - sent_at[seq] for got in received for seq in got if seq in sent_at]
    expected = n_msgs * len(listeners)
    return {
        "listeners": len(listeners), "messages": n_msgs, "spacing_ms": opts.spacing_ms,
        "pairs_expected": expected, "pairs_delivered": len(lat), "missing": expected - len(lat),
        "p50_ms": ms(pct(lat, 50)), "p99_ms": ms(pct(lat, 99)), "max_ms": ms(max(lat) if lat else None),
        "send_p50_ms": ms(pct(send_lat, 50)), "send_p99_ms": ms(pct(send_lat, 99)),
        "sync_filter": filter_mode["value"], "sync_responses": stats["syncs"],
        "limited_timelines": stats["limited"], "sync_errors": stats["errors"],
        "seconds": round(time.perf_counter() - start, 3),
        "server_cpu_s": _delta(cpu0, server.cpu_seconds()),
        "client_cpu_s": round(time.process_time() - pcpu0, 2),
    }


def synapse_version(venv: str) -> str:
    py = Path(venv) / "bin" / "python"
    out = subprocess.run([str(py), "-c", "import synapse; print(synapse.__version__)"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


ROWS = [
    # (label, path, higher is better)
    ("(a) sequential sends/s", ("sequential", "sends_per_s"), True),
    ("(a) sequential p50 ms", ("sequential", "p50_ms"), False),
    ("(a) sequential p99 ms", ("sequential", "p99_ms"), False),
    ("(a) server CPU s", ("sequential", "server_cpu_s"), False),
    ("(b) concurrent sends/s", ("concurrent", "sends_per_s"), True),
    ("(b) concurrent p50 ms", ("concurrent", "p50_ms"), False),
    ("(b) concurrent p99 ms", ("concurrent", "p99_ms"), False),
    ("(b) server CPU s", ("concurrent", "server_cpu_s"), False),
    ("(c) delivery p50 ms", ("delivery", "p50_ms"), False),
    ("(c) delivery p99 ms", ("delivery", "p99_ms"), False),
    ("(c) delivery max ms", ("delivery", "max_ms"), False),
    ("(c) pairs missing", ("delivery", "missing"), False),
    ("(c) send p50 ms", ("delivery", "send_p50_ms"), False),
    ("(c) server CPU s", ("delivery", "server_cpu_s"), False),
    ("(c) load-driver CPU s", ("delivery", "client_cpu_s"), False),
    ("(d) RSS idle MiB", ("rss_idle_kb",), False),
    ("(d) RSS after load MiB", ("rss_after_kb",), False),
    ("(d) RSS peak MiB", ("rss_peak_kb",), False),
]


def lookup(res: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    cur: Any = res
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    if path[-1].endswith("_kb") and isinstance(cur, (int, float)):
        return round(cur / 1024, 1)
    return cur


def table(results: dict[str, dict[str, Any]]) -> str:
    cw, sy = results.get("causeway"), results.get("synapse")
    lines = [f"{'metric':<26} {'Causeway':>12} {'Synapse':>12} {'ratio C/S':>10}",
             "-" * 63]
    for label, path, _higher in ROWS:
        a, b = lookup(cw, path), lookup(sy, path)
        ratio = f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
        fa = "-" if a is None else f"{a:g}"
        fb = "-" if b is None else f"{b:g}"
        lines.append(f"{label:<26} {fa:>12} {fb:>12} {ratio:>10}")
    lines.append("ratio C/S = Causeway's figure divided by Synapse's "
                 "(for sends/s higher is better; for ms, CPU and MiB lower is better)")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--causeway", default=str(harness.REPO / "target" / "release" / "causeway"))
    parser.add_argument("--synapse-venv", default=str(harness.REPO / ".venv" / "synapse"))
    parser.add_argument("--only", choices=("causeway", "synapse"), help="benchmark one server only")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (seq 200, concurrent 400, 10 listeners x 50 messages)")
    parser.add_argument("--seq", type=int, help="(a) sequential messages (default 1000)")
    parser.add_argument("--conc-senders", type=int, default=10, help="(b) senders (default 10)")
    parser.add_argument("--conc-total", type=int, help="(b) messages in total (default 2000)")
    parser.add_argument("--listeners", type=int, help="(c) /sync listeners (default 50)")
    parser.add_argument("--delivery-messages", type=int, help="(c) messages (default 200)")
    parser.add_argument("--spacing-ms", type=float, default=20.0, help="(c) spacing (default 20)")
    parser.add_argument("--delivery-grace", type=float, default=30.0,
                        help="(c) seconds to wait for deliveries after the last send (default 30)")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before RSS readings")
    parser.add_argument("--synapse-presence", action="store_true", help="leave Synapse presence on")
    parser.add_argument("--json", help="results file (default interop-tests/.work/bench/<time>.json)")
    opts = parser.parse_args()
    q = opts.quick
    opts.seq = opts.seq or (200 if q else 1000)
    opts.conc_total = opts.conc_total or (400 if q else 2000)
    opts.listeners = opts.listeners or (10 if q else 50)
    opts.delivery_messages = opts.delivery_messages or (50 if q else 200)

    targets = [opts.only] if opts.only else ["causeway", "synapse"]
    results: dict[str, dict[str, Any]] = {}
    failed = False
    for kind in targets:
        if kind == "causeway":
            server: harness.ServerProcess = harness.Causeway(opts.causeway, rate=1_000_000.0,
                                                             log_filter="warn")
            version = f"{Path(opts.causeway).resolve()}"
        else:
            server = harness.Synapse(opts.synapse_venv, presence=opts.synapse_presence,
                                     log_level="WARNING")
            version = f"Synapse {synapse_version(opts.synapse_venv)}"
        print(f"== {kind}: {version}", flush=True)
        with server:
            res: dict[str, Any] = {"server": kind, "version": version}
            results[kind] = res
            try:
                t = time.monotonic()
                server.start(timeout=60)
                res["start_seconds"] = round(time.monotonic() - t, 2)
                await bench_server(server, opts, res)
            except (BenchError, harness.ServerError, aiohttp.ClientError) as err:
                print(f"  [{kind}] FAILED: {err}\n{server.log_tail(20)}", flush=True)
                res["error"] = str(err)
                failed = True

    print()
    print(table(results))
    out = Path(opts.json) if opts.json else (
        harness.HERE / ".work" / "bench" / time.strftime("bench-%Y%m%d-%H%M%S.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {k: getattr(opts, k) for k in ("seq", "conc_senders", "conc_total", "listeners",
                                            "delivery_messages", "spacing_ms", "synapse_presence")}
    out.write_text(json.dumps({"params": params, "results": results,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    print(f"\nJSON results: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
