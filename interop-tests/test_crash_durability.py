"""Crash test: no acknowledged message is lost when Causeway is killed (SIGKILL) under load.

Each round: 10 concurrent senders PUT messages with unique bodies into one room and record every
body that was answered 200 with an event_id; after about 2 s the server is SIGKILLed mid-load and
started again on the same data directory. Then the whole room history is read back with
/messages (dir=b, paginated to the end) and every acknowledged event must be there, exactly once,
with the event id that was acknowledged, and each sender's messages in the order it sent them.
A resend of an acknowledged transaction id after the restart must answer the same event id and
must not add an event. The access token must survive the restart.

Run: python interop-tests/test_crash_durability.py --causeway target/debug/causeway
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp

import harness


class Load:
    def __init__(self, base_url: str, token: str, room_id: str, round_no: int) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.room_id = room_id
        self.round_no = round_no
        self.stop = asyncio.Event()
        # body -> (event_id, txn_id, worker, seq)
        self.acked: dict[str, tuple[str, str, int, int]] = {}
        self.attempted: set[str] = set()
        self.in_flight = 0
        self.errors: list[str] = []
        self.unexpected: list[str] = []
        self.last_ack = 0.0

    async def sender(self, session: aiohttp.ClientSession, worker: int) -> None:
        tag = uuid.uuid4().hex[:8]
        seq = 0
        while not self.stop.is_set():
            seq += 1
            txn = f"r{self.round_no}-w{worker}-{seq}-{tag}"
            body = f"durable {txn}"
            url = (f"{self.base_url}/_matrix/client/v3/rooms/{quote(self.room_id, safe='')}"
                   f"/send/m.room.message/{txn}")
            self.attempted.add(body)
            while True:  # retries only on rate limiting, with the same txn id
                self.in_flight += 1
                try:
                    async with session.put(url, json={"msgtype": "m.text", "body": body},
                                           headers=self.headers) as resp:
                        data = await resp.json(content_type=None)
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
                    self.errors.append(f"{type(err).__name__}: {err}")
                    return  # the server is gone: this sender is done for the round
                finally:
                    self.in_flight -= 1
                if status == 429:
                    await asyncio.sleep(data.get("retry_after_ms", 100) / 1000)
                    continue
                break
            if status == 200 and isinstance(data, dict) and isinstance(data.get("event_id"), str):
                self.acked[body] = (data["event_id"], txn, worker, seq)
                self.last_ack = time.monotonic()
            else:
                self.unexpected.append(f"PUT {url} -> {status} {data}")
                return


async def read_history(session: aiohttp.ClientSession, base: str, headers: dict[str, str],
                       room_id: str) -> tuple[list[dict[str, Any]], str]:
    """All events of the room, oldest first, by back-pagination from the latest sync token."""
    async with session.get(f"{base}/_matrix/client/v3/sync", params={"timeout": "0"},
                           headers=headers) as resp:
        sync = await resp.json(content_type=None)
        if resp.status != 200:
            raise AssertionError(f"GET /sync -> {resp.status} {sync}")
    token = sync["next_batch"]
    events: list[dict[str, Any]] = []
    url = f"{base}/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages"
    for _ in range(10000):
        async with session.get(url, params={"dir": "b", "from": token, "limit": "100"},
                               headers=headers) as resp:
            page = await resp.json(content_type=None)
            if resp.status != 200:
                raise AssertionError(f"GET {url}?dir=b&from={token} -> {resp.status} {page}")
        chunk = page.get("chunk", [])
        events.extend(chunk)
        if not chunk or "end" not in page or page["end"] == token:
            break
        token = page["end"]
    events.reverse()
    return events, sync["next_batch"]


async def run(server: harness.ServerProcess, rounds: int, senders: int, load_seconds: float) -> int:
    c = harness.Checks("test_crash_durability")
    state: dict[str, Any] = {}
    all_acked: dict[str, tuple[str, str, int, int]] = {}
    all_attempted: set[str] = set()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        base = server.base_url

        async def setup() -> None:
            reg = await harness.register_user(session, base, "durable", "durable password")
            state["token"] = reg["access_token"]
            state["headers"] = {"Authorization": f"Bearer {reg['access_token']}"}
            state["user_id"] = reg["user_id"]
            async with session.post(f"{base}/_matrix/client/v3/createRoom",
                                    json={"name": "durability", "preset": "private_chat"},
                                    headers=state["headers"]) as resp:
                data = await resp.json(content_type=None)
                c.require(resp.status == 200 and "room_id" in data, "createRoom answers a room id",
                          f"POST /createRoom -> {resp.status} {data}")
            state["room_id"] = data["room_id"]

        await c.step("setup", setup)

        for round_no in range(1, rounds + 1):
            async def crash_round(round_no: int = round_no) -> None:
                load = Load(base, state["token"], state["room_id"], round_no)
                tasks = [asyncio.create_task(load.sender(session, w)) for w in range(senders)]
                await asyncio.sleep(load_seconds)
                in_flight = load.in_flight
                since_last_ack = time.monotonic() - load.last_ack
                server.kill()  # SIGKILL while the senders are still sending
                load.stop.set()
                await asyncio.gather(*tasks)
                all_acked.update(load.acked)
                all_attempted.update(load.attempted)
                print(f"  round {round_no}: {len(load.acked)} acknowledged, "
                      f"{len(load.attempted) - len(load.acked)} unanswered, "
                      f"{in_flight} in flight at the kill")
                c.check(not load.unexpected, "every send before the kill answered 200 with an event_id",
                        "\n".join(load.unexpected[:5]))
                c.require(len(load.acked) >= 20,
                          f"the load got at least 20 acknowledgements ({len(load.acked)})")
                c.check(in_flight > 0 and since_last_ack < 0.5,
                        "the server was killed mid-load (requests in flight, recent acknowledgements)",
                        f"in flight {in_flight}, last ack {since_last_ack:.2f} s before the kill")

                server.start()
                async with session.get(f"{base}/_matrix/client/v3/account/whoami",
                                       headers=state["headers"]) as resp:
                    who = await resp.json(content_type=None)
                c.require(resp.status == 200 and who.get("user_id") == state["user_id"],
                          "the access token still works after the restart",
                          f"GET /account/whoami -> {resp.status} {who}")

                events, _ = await read_history(session, base, state["headers"], state["room_id"])
                msgs = [e for e in events if e.get("type") == "m.room.message"]
                by_body: dict[str, list[str]] = {}
                for e in msgs:
                    by_body.setdefault(e.get("content", {}).get("body", ""), []).append(e["event_id"])
                lost = [b for b in all_acked if b not in by_body]
                c.check(not lost,
                        f"all {len(all_acked)} acknowledged messages are in the history after the restart",
                        f"{len(lost)} lost, e.g. {lost[:5]} (event ids "
                        f"{[all_acked[b][0] for b in lost[:5]]})")
                dups = {b: ids for b, ids in by_body.items() if len(ids) > 1}
                c.check(not dups, "no message appears twice", f"{list(dups.items())[:5]}")
                wrong_id = [(b, all_acked[b][0], by_body[b]) for b in all_acked
                            if b in by_body and by_body[b][0] != all_acked[b][0]]
                c.check(not wrong_id, "each message has the event id that was acknowledged",
                        f"{wrong_id[:5]}")
                strangers = [b for b in by_body if b not in all_attempted]
                c.check(not strangers, "the history holds no message that was never sent",
                        f"{strangers[:5]}")
                unacked_kept = sum(1 for b in by_body if b in all_attempted and b not in all_acked)
                print(f"  history: {len(msgs)} messages ({unacked_kept} sent but unanswered ones kept)")

                # Each sender sent one message at a time: its messages keep that order.
                positions = {e.get("content", {}).get("body", ""): i for i, e in enumerate(msgs)}
                disorder = []
                for w in range(senders):
                    mine = sorted((v[3], positions[b]) for b, v in load.acked.items()
                                  if v[2] == w and b in positions)
                    pos = [p for _, p in mine]
                    if pos != sorted(pos):
                        disorder.append(w)
                c.check(not disorder, "each sender's messages are in the history in sending order",
                        f"senders out of order: {disorder}")

                # Idempotency across the restart: resend the latest acknowledged transaction.
                body, (event_id, txn, _, _) = max(load.acked.items(), key=lambda kv: kv[1][3])
                url = (f"{base}/_matrix/client/v3/rooms/{quote(state['room_id'], safe='')}"
                       f"/send/m.room.message/{txn}")
                async with session.put(url, json={"msgtype": "m.text", "body": body},
                                       headers=state["headers"]) as resp:
                    again = await resp.json(content_type=None)
                c.equal((resp.status, again.get("event_id")), (200, event_id),
                        "resending an acknowledged txn id after the restart answers the same event id",
                        f"PUT {url} -> {resp.status} {again}")
                events2, _ = await read_history(session, base, state["headers"], state["room_id"])
                count = sum(1 for e in events2 if e.get("content", {}).get("body") == body)
                c.equal(count, 1, "the resend added no event")

                # The restarted server takes new messages.
                url = (f"{base}/_matrix/client/v3/rooms/{quote(state['room_id'], safe='')}"
                       f"/send/m.room.message/after-restart-{round_no}")
                async with session.put(url, json={"msgtype": "m.text", "body": f"after {round_no}"},
                                       headers=state["headers"]) as resp:
                    data = await resp.json(content_type=None)
                c.check(resp.status == 200 and "event_id" in data,
                        "a new message after the restart is accepted", f"PUT {url} -> {resp.status} {data}")
                all_attempted.add(f"after {round_no}")
                if resp.status == 200 and "event_id" in data:
                    all_acked[f"after {round_no}"] = (data["event_id"], "", -1, 0)

            if not await c.step(f"crash round {round_no}", crash_round, needs=("setup",)):
                if not server.running():
                    break

    return c.summary()


async def main() -> int:
    parser = harness.test_argparser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="kill/restart cycles (default 2)")
    parser.add_argument("--senders", type=int, default=10, help="concurrent senders (default 10)")
    parser.add_argument("--load-seconds", type=float, default=2.0,
                        help="seconds of load before the kill (default 2)")
    args = parser.parse_args()
    server = harness.server_from_args(args, rate=1_000_000.0)
    with server:
        server.start()
        print(f"{server.kind} ready at {server.base_url} (work dir {server.workdir})")
        code = await run(server, args.rounds, args.senders, args.load_seconds)
        if code != 0:
            print(server.log_tail(30))
            raise SystemExit(code)  # keeps the work directory for inspection
        return code


if __name__ == "__main__":
    harness.run_async_test(main)
