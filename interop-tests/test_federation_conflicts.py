"""Interop test: conflicts across a partition, Causeway and two real Synapses on loopback.

Three servers share a room (version 12) made on Synapse A: its creator, a Causeway user with
power (carol), a Synapse B user with power (dave), a Synapse A user (erin). TCP relays stand
between Causeway and both Synapses (the Synapses reach each other directly), so the test can
cut Causeway off and join it back. While it is cut off:

* on Causeway, carol gives erin power, and frank (a Causeway user) joins the public room;
* on Synapse A, the creator bans erin and lowers carol's power (so carol's change, made at
  the same time, no longer passes);
* on Synapse B, dave bans frank: a join racing a ban.

Joined back, every server gets what it missed (Synapse catching up through the latest events
and Causeway asking for the ones before them). Checked: all three servers end with the same
state (every state event the same, by id): erin and frank banned, the creator's power levels;
neither banned user can post on any server (their own refuses); messages still go every way.

Run: python interop-tests/test_federation_conflicts.py --causeway target/debug/causeway
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

import harness

PASSWORD = "conflicts test password"
WAIT = 90.0


class Relays:
    """TCP relays between servers: `cut()` closes every connection and refuses new ones until
    `heal()`."""

    def __init__(self) -> None:
        self.cut_off = False
        self.open: set[asyncio.StreamWriter] = set()
        self.servers: list[asyncio.base_events.Server] = []

    async def relay(self, listen_port: int, target_port: int) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.cut_off:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
            except OSError:
                writer.transport.abort()
                return
            self.open.update((writer, up_writer))
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            self.open.difference_update((writer, up_writer))

        self.servers.append(await asyncio.start_server(handle, "127.0.0.1", listen_port))

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self.open):
            writer.transport.abort()
        self.open.clear()

    def heal(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        for server in self.servers:
            server.close()


class ConflictsTest:
    def __init__(self, causeway: harness.Causeway, a: harness.Synapse, b: harness.Synapse,
                 relays: Relays) -> None:
        self.causeway = causeway
        self.a = a
        self.b = b
        self.relays = relays
        self.c = harness.Checks("test_federation_conflicts")

    async def run(self) -> int:
        async with aiohttp.ClientSession() as session:
            await self.scenario(session)
        return self.c.summary()

    async def scenario(self, session: aiohttp.ClientSession) -> None:
        c = self.c

        async def user(server: harness.ServerProcess, name: str) -> harness.MatrixUser:
            return await harness.MatrixUser.register(session, server, name, PASSWORD)

        creator = await user(self.a, "creator")
        erin = await user(self.a, "erin")
        carol = await user(self.causeway, "carol")
        frank = await user(self.causeway, "frank")
        dave = await user(self.b, "dave")
        watchers = {"Causeway": carol, "Synapse A": creator, "Synapse B": dave}
        room = ""

        async def membership(watcher: harness.MatrixUser,
                             target: harness.MatrixUser) -> str | None:
            return await watcher.membership(room, target.user_id)

        async def setup() -> None:
            nonlocal room
            status, created = await creator.call("POST", "/createRoom", {
                "preset": "public_chat", "room_version": "12", "name": "Contested",
                "power_level_content_override": {
                    "users": {carol.user_id: 100, dave.user_id: 100}},
            })
            c.require(status == 200, "the creator makes a version 12 room on Synapse A",
                      repr(created))
            room = created["room_id"]
            for joiner in (carol, dave, erin):
                status, joined = await joiner.call(
                    "POST", f"/join/{room}?server_name={self.a.server_name}", {})
                c.require(status == 200, f"{joiner.user_id} joins", repr(joined))

            async def everyone_everywhere() -> bool:
                for watcher in watchers.values():
                    for member in (creator, carol, dave, erin):
                        if await membership(watcher, member) != "join":
                            return False
                return True

            c.require(await harness.eventually(everyone_everywhere, WAIT),
                      "all three servers see the four members", self.causeway.log_tail(20))

        async def partition() -> None:
            self.relays.cut()
            print("  (Causeway cut off)")
            # On Causeway: carol gives erin power; frank joins.
            status, levels = await carol.call("GET", f"/rooms/{room}/state/m.room.power_levels/")
            c.require(status == 200, "carol reads the power levels", repr(levels))
            raised = dict(levels, users=dict(levels.get("users", {}), **{erin.user_id: 100}))
            status, answer = await carol.call(
                "PUT", f"/rooms/{room}/state/m.room.power_levels/", raised)
            c.check(status == 200, "cut off, carol (Causeway) gives erin power", repr(answer))
            status, answer = await frank.call("POST", f"/join/{room}", {})
            c.check(status == 200, "cut off, frank joins on Causeway", repr(answer))
            # On Synapse A: the creator bans erin and lowers carol.
            status, answer = await creator.call("POST", f"/rooms/{room}/ban",
                                                {"user_id": erin.user_id, "reason": "conflict"})
            c.check(status == 200, "meanwhile the creator (Synapse A) bans erin", repr(answer))
            status, levels = await creator.call(
                "GET", f"/rooms/{room}/state/m.room.power_levels/")
            lowered = dict(levels, users=dict(levels.get("users", {}), **{carol.user_id: 50}))
            status, answer = await creator.call(
                "PUT", f"/rooms/{room}/state/m.room.power_levels/", lowered)
            c.check(status == 200, "and lowers carol's power", repr(answer))
            # On Synapse B: dave bans frank.
            status, answer = await dave.call("POST", f"/rooms/{room}/ban",
                                             {"user_id": frank.user_id, "reason": "race"})
            c.check(status == 200, "meanwhile dave (Synapse B) bans frank", repr(answer))
            status, answer = await dave.send(room, "said while Causeway was cut off")
            c.check(status == 200, "dave talks while Causeway is cut off", repr(answer))

            async def synapses_agree() -> bool:
                return (await membership(dave, erin) == "ban"
                        and await membership(creator, frank) == "ban")

            c.require(await harness.eventually(synapses_agree, WAIT),
                      "the two Synapses share their bans")
            c.equal(await membership(carol, erin), "join",
                    "Causeway, cut off, has not seen erin's ban")
            self.relays.heal()
            print("  (Causeway joined back)")

        async def agreement() -> None:
            expected = {
                "erin": "ban",
                "frank": "ban",
            }

            async def agreed() -> bool:
                states = [await watcher.state(room) for watcher in watchers.values()]
                ids = [{key: e["event_id"] for key, e in state.items()} for state in states]
                if any(i != ids[0] for i in ids[1:]) or not ids[0]:
                    return False
                for name, target in (("erin", erin), ("frank", frank)):
                    event = states[0].get(("m.room.member", target.user_id), {})
                    if event.get("content", {}).get("membership") != expected[name]:
                        return False
                return True

            # New events on either side merge the forks.
            await dave.send(room, "dave after the partition")
            await carol.send(room, "carol after the partition")
            ok = await harness.eventually(agreed, WAIT)
            details = []
            for label, watcher in watchers.items():
                state = await watcher.state(room)
                levels = state.get(("m.room.power_levels", ""), {})
                details.append(
                    f"{label}: erin {await membership(watcher, erin)}, frank "
                    f"{await membership(watcher, frank)}, levels "
                    f"{levels.get('content', {}).get('users')} ({levels.get('event_id')})")
            c.check(ok, "joined back, all three servers agree on every state event",
                    "\n".join(details) + "\n" + self.causeway.log_tail(30))
            for label, watcher in watchers.items():
                c.equal(await membership(watcher, erin), "ban", f"{label}: erin is banned")
                c.equal(await membership(watcher, frank), "ban", f"{label}: frank is banned")
                status, levels = await watcher.call(
                    "GET", f"/rooms/{room}/state/m.room.power_levels/")
                users = levels.get("users", {}) if status == 200 else {}
                c.equal(users.get(carol.user_id), 50,
                        f"{label}: the creator's power levels won (carol lowered)")
                c.check(erin.user_id not in users,
                        f"{label}: carol's change, made with power she no longer had, lost",
                        repr(users))

        async def banned_users_post_nowhere() -> None:
            for banned, label in ((erin, "erin (Synapse A)"), (frank, "frank (Causeway)")):
                status, answer = await banned.send(room, f"{label} tries to talk")
                c.check(status == 403 and answer.get("errcode") == "M_FORBIDDEN",
                        f"{label} cannot post: their own server refuses", f"{status} {answer}")
            status, answer = await frank.call("POST", f"/join/{room}", {})
            c.check(status == 403, "frank cannot join again", f"{status} {answer}")
            await asyncio.sleep(2)
            for label, watcher in watchers.items():
                texts = await watcher.texts(room)
                c.check(not any("tries to talk" in t for t in texts),
                        f"{label} shows nothing of the banned users", repr(texts[-5:]))

        async def messages_every_way() -> None:
            await creator.send(room, "the creator after it all")
            for label, watcher in watchers.items():
                async def has_all(watcher: harness.MatrixUser = watcher) -> bool:
                    texts = await watcher.texts(room)
                    return all(t in texts for t in (
                        "dave after the partition", "carol after the partition",
                        "the creator after it all", "said while Causeway was cut off"))
                c.check(await harness.eventually(has_all, WAIT), f"{label} has every message")

        await c.step("three servers share a room", setup)
        await c.step("a partition with conflicting changes on both sides", partition,
                     needs=("three servers share a room",))
        await c.step("joined back, the servers agree", agreement,
                     needs=("a partition with conflicting changes on both sides",))
        await c.step("the banned users can post nowhere", banned_users_post_nowhere,
                     needs=("a partition with conflicting changes on both sides",))
        await c.step("messages still go every way", messages_every_way,
                     needs=("a partition with conflicting changes on both sides",))


async def main() -> int:
    args = harness.synapse_peer_argparser(__doc__.splitlines()[0]).parse_args()
    if args.synapse_venv:
        print("this test needs Causeway and Synapse together; --synapse-venv does not apply")
        return 0
    causeway = harness.Causeway(args.causeway, log_filter="info,causeway_matrix=debug")
    synapse_a = harness.Synapse(args.synapse_peer_venv)
    synapse_b = harness.Synapse(args.synapse_peer_venv)
    work = harness.make_workdir("federation-conflicts-")
    harness.federating([causeway, synapse_a, synapse_b], Path(work) / "tls")
    # Causeway's listener and its way to each Synapse go through relays the test can cut.
    relays = Relays()
    assert causeway.federation_port is not None
    causeway.federation_bind_port = harness.free_port()
    await relays.relay(causeway.federation_port, causeway.federation_bind_port)
    for synapse in (synapse_a, synapse_b):
        assert synapse.federation_port is not None
        port = harness.free_port()
        causeway.peer_ports[synapse.server_name] = port
        await relays.relay(port, synapse.federation_port)
    try:
        with causeway, synapse_a, synapse_b:
            synapse_a.start(timeout=60)
            synapse_b.start(timeout=60)
            causeway.start()
            print(f"causeway {causeway.server_name}, synapse A {synapse_a.server_name}, "
                  f"synapse B {synapse_b.server_name}")
            code = await ConflictsTest(causeway, synapse_a, synapse_b, relays).run()
            if code != 0:
                print(causeway.log_tail(60))
                print(synapse_a.log_tail(30))
                print(synapse_b.log_tail(30))
                raise SystemExit(code)
            return code
    finally:
        relays.close()


if __name__ == "__main__":
    harness.run_async_test(main)
