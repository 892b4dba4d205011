"""Interop test: a version 12 room of Causeway shared with a real Synapse; relations, spaces,
kicks and bans both ways.

Both servers federate over TLS on loopback (as in test_federation_synapse.py). Alice (Causeway)
makes a public version 12 room and gives bob (Synapse) power; carol (Causeway) and dave
(Synapse) join too. Covered:

* the room is version 12 on Synapse too (its id is its create event's), every member seen on
  both servers;
* edits, replies and reactions both ways: each server bundles the other server's edit with the
  message it edits, shows the reply's relation and lists the reactions;
* spaces both ways: a space of either server holding rooms of both is walked by either
  server's user (`/hierarchy`), each server asking the other for what it has no copy of;
* kicks both ways: alice kicks dave, bob kicks carol; each is out on both servers and may join
  again;
* bans both ways: alice bans dave, bob bans carol; each is banned on both servers, cannot join
  or post, and may join again once unbanned.

Run: python interop-tests/test_federation_moderation.py --causeway target/debug/causeway
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

import harness

PASSWORD = "moderation test password"
WAIT = 45.0


async def scenario(causeway: harness.Causeway, synapse: harness.Synapse) -> int:
    c = harness.Checks("test_federation_moderation")
    async with aiohttp.ClientSession() as session:
        alice = await harness.MatrixUser.register(session, causeway, "alice", PASSWORD)
        carol = await harness.MatrixUser.register(session, causeway, "carol", PASSWORD)
        bob = await harness.MatrixUser.register(session, synapse, "bob", PASSWORD)
        dave = await harness.MatrixUser.register(session, synapse, "dave", PASSWORD)
        servers = {"Causeway": alice, "Synapse": bob}
        room = ""

        async def join_room(user: harness.MatrixUser, target: str) -> tuple[int, Any]:
            return await user.call(
                "POST", f"/join/{target}?server_name={causeway.server_name}", {})

        async def join(user: harness.MatrixUser) -> tuple[int, Any]:
            return await join_room(user, room)

        async def everywhere(user: harness.MatrixUser, membership: str) -> bool:
            async def check() -> bool:
                return all([await watcher.membership(room, user.user_id) == membership
                            for watcher in servers.values()])
            return await harness.eventually(check, WAIT)

        async def event_on(watcher: harness.MatrixUser, event_id: str) -> dict[str, Any]:
            async def found() -> bool:
                status, _ = await watcher.call("GET", f"/rooms/{room}/event/{event_id}")
                return status == 200
            await harness.eventually(found, WAIT)
            _, event = await watcher.call("GET", f"/rooms/{room}/event/{event_id}")
            return event

        async def sent(user: harness.MatrixUser, content: dict[str, Any] | str,
                       event_type: str = "m.room.message") -> str:
            status, answer = await user.send(room, content, event_type)
            c.require(status == 200, f"{user.user_id} sends {event_type}", f"{status} {answer}")
            return answer["event_id"]

        async def setup() -> None:
            nonlocal room
            status, created = await alice.call("POST", "/createRoom", {
                "preset": "public_chat", "room_version": "12", "name": "Moderated",
                "power_level_content_override": {"users": {bob.user_id: 100}},
            })
            c.require(status == 200, "alice makes a version 12 room on Causeway", repr(created))
            room = created["room_id"]
            for user in (bob, carol, dave):
                status, answer = await join(user)
                c.require(status == 200, f"{user.user_id} joins", f"{status} {answer}")
            for user in (alice, bob, carol, dave):
                c.check(await everywhere(user, "join"),
                        f"{user.user_id} is a member on both servers")
            status, create = await bob.call("GET", f"/rooms/{room}/state/m.room.create/")
            c.equal(create.get("room_version") if status == 200 else status, "12",
                    "Synapse has it as a version 12 room")

        async def relations_both_ways() -> None:
            for author, other, label in ((bob, alice, "Synapse to Causeway"),
                                         (alice, bob, "Causeway to Synapse")):
                original = await sent(author, f"original ({label})")
                edit = await sent(author, {
                    "msgtype": "m.text", "body": f"* edited ({label})",
                    "m.new_content": {"msgtype": "m.text", "body": f"edited ({label})"},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": original},
                })

                async def bundled(watcher: harness.MatrixUser = other) -> bool:
                    _, event = await watcher.call("GET", f"/rooms/{room}/event/{original}")
                    relations = event.get("unsigned", {}).get("m.relations", {})
                    return relations.get("m.replace", {}).get("event_id") == edit

                c.check(await harness.eventually(bundled, WAIT),
                        f"an edit, {label}: bundled with the message it edits")
                reply = await sent(other, {
                    "msgtype": "m.text", "body": f"> original\n\nreply ({label})",
                    "m.relates_to": {"m.in_reply_to": {"event_id": original}},
                })
                shown = await event_on(author, reply)
                c.equal(shown.get("content", {}).get("m.relates_to", {})
                        .get("m.in_reply_to", {}).get("event_id"), original,
                        f"a reply, {label} and back: shown with what it answers")
                reaction = await sent(author, {"m.relates_to": {
                    "rel_type": "m.annotation", "event_id": reply, "key": "👍"}}, "m.reaction")

                async def listed(watcher: harness.MatrixUser = other) -> bool:
                    status, page = await watcher.call(
                        "GET", f"/_matrix/client/v1/rooms/{room}/relations/{reply}/m.annotation")
                    return status == 200 and any(
                        e.get("event_id") == reaction for e in page.get("chunk", []))

                c.check(await harness.eventually(listed, WAIT),
                        f"a reaction, {label}: listed among the reply's relations")

        async def kicks_both_ways() -> None:
            for moderator, target, label in ((alice, dave, "Causeway kicks a Synapse user"),
                                             (bob, carol, "Synapse kicks a Causeway user")):
                status, answer = await moderator.call(
                    "POST", f"/rooms/{room}/kick", {"user_id": target.user_id, "reason": "out"})
                c.require(status == 200, label, f"{status} {answer}")
                c.check(await everywhere(target, "leave"), f"{label}: out on both servers")
                status, answer = await target.send(room, "still here?")
                c.check(status == 403, f"{label}: they cannot post", f"{status} {answer}")
                status, answer = await join(target)
                c.check(status == 200, f"{label}: they may join again", f"{status} {answer}")
                c.check(await everywhere(target, "join"), f"{label}: back on both servers")

        async def bans_both_ways() -> None:
            for moderator, target, label in ((alice, dave, "Causeway bans a Synapse user"),
                                             (bob, carol, "Synapse bans a Causeway user")):
                status, answer = await moderator.call(
                    "POST", f"/rooms/{room}/ban", {"user_id": target.user_id, "reason": "gone"})
                c.require(status == 200, label, f"{status} {answer}")
                c.check(await everywhere(target, "ban"), f"{label}: banned on both servers")
                status, answer = await target.send(room, "let me in")
                c.check(status == 403, f"{label}: they cannot post", f"{status} {answer}")
                status, answer = await join(target)
                c.check(status == 403, f"{label}: they cannot join", f"{status} {answer}")
                for watcher_label, watcher in servers.items():
                    c.check("let me in" not in await watcher.texts(room),
                            f"{label}: nothing of theirs on {watcher_label}")
                status, answer = await moderator.call(
                    "POST", f"/rooms/{room}/unban", {"user_id": target.user_id})
                c.require(status == 200, f"{label}: unbanned", f"{status} {answer}")
                c.check(await everywhere(target, "leave"), f"{label}: unbanned on both servers")
                status, answer = await join(target)
                c.check(status == 200, f"{label}: they may join again", f"{status} {answer}")

        async def spaces_both_ways() -> None:
            async def made(user: harness.MatrixUser, body: dict[str, Any]) -> str:
                status, created = await user.call("POST", "/createRoom", {
                    "preset": "public_chat", "room_version": "10", **body})
                c.require(status == 200, f"{user.user_id} makes {body.get('name')}",
                          f"{status} {created}")
                return created["room_id"]

            async def holds(user: harness.MatrixUser, space: str, child: str,
                            server: harness.ServerProcess) -> None:
                status, answer = await user.call(
                    "PUT", f"/rooms/{space}/state/m.space.child/{child}",
                    {"via": [server.server_name]})
                c.require(status == 200, f"{user.user_id} adds a room to a space",
                          f"{status} {answer}")

            async def walked(user: harness.MatrixUser, space: str, expected: list[str],
                             label: str) -> None:
                got: list[str] = []

                async def complete() -> bool:
                    nonlocal got
                    status, page = await user.call(
                        "GET", f"/_matrix/client/v1/rooms/{space}/hierarchy")
                    got = [r.get("room_id") for r in page.get("rooms", [])] if status == 200 \
                        else [f"HTTP {status}: {page}"]
                    return got == expected

                c.check(await harness.eventually(complete, WAIT), label,
                        f"expected {expected}\n got      {got}")

            space = await made(alice, {"name": "Space on Causeway",
                                       "creation_content": {"type": "m.space"}})
            on_synapse = await made(bob, {"name": "Room on Synapse"})
            only_here = await made(alice, {"name": "Room only on Causeway"})
            await holds(alice, space, room, causeway)
            await holds(alice, space, on_synapse, synapse)
            await holds(alice, space, only_here, causeway)
            await walked(alice, space, [space, room, on_synapse, only_here],
                         "alice (Causeway) walks her space, Synapse asked for its room")
            # (Synapse shows a space's rooms to its members only: bob joins it first.)
            status, answer = await join_room(bob, space)
            c.require(status == 200, "bob joins the space", f"{status} {answer}")
            await walked(bob, space, [space, room, on_synapse, only_here],
                         "bob (Synapse) walks a space of Causeway, Causeway asked for the room "
                         "Synapse is not in")
            bobs_space = await made(bob, {"name": "Space on Synapse",
                                          "creation_content": {"type": "m.space"}})
            await holds(bob, bobs_space, on_synapse, synapse)
            await holds(bob, bobs_space, room, causeway)
            await walked(alice, bobs_space, [bobs_space, on_synapse, room],
                         "alice (Causeway) walks a space of Synapse, Synapse asked for it")

        await c.step("a version 12 room of Causeway with members of both servers", setup)
        for name, step in (("edits, replies and reactions both ways", relations_both_ways),
                           ("spaces both ways", spaces_both_ways),
                           ("kicks both ways", kicks_both_ways),
                           ("bans both ways", bans_both_ways)):
            await c.step(name, step,
                         needs=("a version 12 room of Causeway with members of both servers",))
    return c.summary()


async def main() -> int:
    async def run(causeway: harness.Causeway, synapse: harness.Synapse, _work: Path) -> int:
        return await scenario(causeway, synapse)

    return await harness.with_synapse_peer(__doc__.splitlines()[0], run, "federation-moderation-")


if __name__ == "__main__":
    harness.run_async_test(main)
