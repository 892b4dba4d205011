"""Shutdown with clients waiting, and what the default log level writes.

- Three clients wait in /sync long-polls (timeout 60 s, the server's maximum). Causeway gets
  SIGTERM: every sync is answered at once (200, nothing new, the position it had, so the client
  loses nothing), and the process exits cleanly well before the long-polls would have run out.
  A message sent just before the signal is there after the restart, and a sync from the old
  position delivers it.
- With the default filter ("info"), a room with messages writes Causeway's own lines and no
  INFO lines of the libraries it uses (the authorization rules wrote two per event before).

Run: python interop-tests/test_shutdown.py --causeway target/debug/causeway
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from typing import Any

import aiohttp

import harness

# The long-polls would hold a graceful shutdown for this long.
LONG_POLL_MS = 60_000
# Well under the long-poll, well over what a loaded machine needs to stop.
EXIT_WITHIN_S = 20.0


async def main_async(args: Any) -> int:
    c = harness.Checks("shutdown")
    server = harness.server_from_args(args)
    if not isinstance(server, harness.Causeway):
        print("this test needs Causeway (it sends it signals); nothing to do against Synapse")
        return 0
    server.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = server.base_url
            alice = await harness.register_user(http, base, "alice", "alice's password")
            auth = {"Authorization": f"Bearer {alice['access_token']}"}
            async with http.post(f"{base}/_matrix/client/v3/createRoom", headers=auth,
                                 json={"name": "shutdown"}) as response:
                room = (await response.json())["room_id"]
            for i in range(3):
                async with http.put(
                        f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}",
                        headers=auth, json={"msgtype": "m.text", "body": f"hello {i}"}) as response:
                    c.equal(response.status, 200, f"message {i} is sent")
            async with http.get(f"{base}/_matrix/client/v3/sync", headers=auth,
                                params={"timeout": "0"}) as response:
                since = (await response.json())["next_batch"]

            async def long_poll() -> tuple[int, Any]:
                async with http.get(f"{base}/_matrix/client/v3/sync", headers=auth,
                                    params={"timeout": str(LONG_POLL_MS), "since": since}) as resp:
                    return resp.status, await resp.json(content_type=None)

            async def step_shutdown() -> None:
                polls = [asyncio.create_task(long_poll()) for _ in range(3)]
                await asyncio.sleep(1.0)
                c.require(not any(p.done() for p in polls), "three syncs are waiting",
                          repr([p.result() for p in polls if p.done()]))
                async with http.put(
                        f"{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/last",
                        headers=auth, json={"msgtype": "m.text", "body": "just before"}) as resp:
                    c.equal(resp.status, 200, "a message is sent just before the signal")
                # That message woke them; wait in new long-polls from the old position's end.
                answers = await asyncio.gather(*polls)
                new_since = answers[0][1].get("next_batch")
                polls = [asyncio.create_task(long_poll_from(new_since)) for _ in range(3)]
                await asyncio.sleep(1.0)
                c.require(not any(p.done() for p in polls), "three new syncs are waiting")
                assert server.proc is not None
                started = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
                answered = await asyncio.wait_for(asyncio.gather(*polls), EXIT_WITHIN_S)
                c.check(all(status == 200 for status, _ in answered),
                        "SIGTERM answers every waiting sync with 200", repr(answered))
                c.check(all(body.get("next_batch") == new_since for _, body in answered),
                        "with nothing new and the position it had", repr(answered))
                try:
                    code = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: server.proc.wait(EXIT_WITHIN_S))
                except Exception:  # noqa: BLE001 - a timeout is the failure reported here
                    code = None
                elapsed = time.monotonic() - started
                c.equal(code, 0, f"Causeway exits cleanly, long before the {LONG_POLL_MS // 1000} s "
                        f"long-polls would end (after {elapsed:.1f} s)")
                server.start()
                async with http.get(f"{base}/_matrix/client/v3/sync", headers=auth,
                                    params={"timeout": "0", "since": since}) as resp:
                    body = await resp.json()
                events = body.get("rooms", {}).get("join", {}).get(room, {}).get(
                    "timeline", {}).get("events", [])
                c.check(any(e.get("content", {}).get("body") == "just before" for e in events),
                        "after the restart, a sync from the old position has the last message",
                        repr(body)[:2000])

            async def long_poll_from(position: str) -> tuple[int, Any]:
                async with http.get(f"{base}/_matrix/client/v3/sync", headers=auth,
                                    params={"timeout": str(LONG_POLL_MS), "since": position}) as resp:
                    return resp.status, await resp.json(content_type=None)

            await c.step("SIGTERM with syncs waiting", step_shutdown)

            async def step_logs() -> None:
                log = re.sub(r"\x1b\[[0-9;]*m", "", server.log_path.read_text(errors="replace"))
                ours = [line for line in log.splitlines() if " INFO causeway" in line]
                theirs = [line for line in log.splitlines()
                          if re.search(r" INFO (?!causeway)[a-z_]+", line)]
                c.check(bool(ours), "the default level writes Causeway's own INFO lines")
                c.check(not theirs, "and no INFO lines of the libraries it uses",
                        "\n".join(theirs[:10]))

            await c.step("the default log level", step_logs)
    finally:
        server.stop()
        if c.failures:
            print(server.log_tail(60))
    return c.summary()


def main() -> None:
    args = harness.test_argparser(__doc__.splitlines()[0]).parse_args()
    harness.run_async_test(lambda: main_async(args))


if __name__ == "__main__":
    main()
