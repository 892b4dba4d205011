"""Interop test: Causeway federating with a real Synapse on loopback, matrix-nio as the clients.

Both servers serve federation over TLS (a private CA, ``localhost:<port>`` names) and know where
the other is. Covered:

* a Synapse user joins a room created on Causeway (room version 10) by its id: Synapse asks
  Causeway for a join template, sends the join, and reads the state; messages go both ways and
  arrive in order;
* a Causeway user joins a room created on Synapse (version 12, Synapse's default) by its alias:
  Causeway resolves the alias on Synapse, joins through it, and messages go both ways;
* a state change (the topic) made on either side reaches the other;
* typing notifications and read receipts go both ways;
* media uploaded on either side is downloaded by the other side's client;
* device keys are queried and one-time keys claimed across servers, and to-device messages go
  both ways (what encryption between the servers' users rests on);
* a Causeway user leaves the Synapse room, and Synapse sees the leave;
* invites both ways: each signed by the invitee's server, shown with the room's stripped state
  in the invitee's sync, accepted (joining through the inviting server) or rejected (a leave
  through the inviting server);
* a Causeway user joins a Synapse room with 500 earlier messages and pages back through all of
  them in order (backfill from Synapse);
* profiles, presence, redactions and the public room directory across servers, both ways;
* knocks both ways: a user of one server knocks on a room of the other, is shown knocking there,
  and is let in with an invite;
* restricted rooms both ways: a user of one server joins a room of the other that lets in the
  members of a space, once in the space, the room's server vouching for the join;
* durability: Causeway killed (SIGKILL) during a burst from Synapse gets all of it once back,
  in order; restarted while Synapse is down, it delivers what it had queued, in order.

Run: python interop-tests/test_federation_synapse.py --causeway target/debug/causeway
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
from nio import (AsyncClient, JoinResponse, RoomCreateResponse, RoomPreset, RoomSendResponse,
                 RoomVisibility)

import harness

PASSWORD = "federation test password"
WAIT = 45.0
# The messages sent in a room before a Causeway user joins, then reads back (backfill).
HISTORY = 500


class FederationTest:
    def __init__(self, causeway: harness.Causeway, synapse: harness.Synapse) -> None:
        self.causeway = causeway
        self.synapse = synapse
        self.c = harness.Checks("test_federation_synapse")
        self.session: aiohttp.ClientSession | None = None
        self.clients: list[AsyncClient] = []

    async def user(self, server: harness.ServerProcess, name: str) -> AsyncClient:
        assert self.session is not None
        registered = await harness.register_user(self.session, server.base_url, name, PASSWORD)
        client = AsyncClient(server.base_url, registered["user_id"])
        client.access_token = registered["access_token"]
        client.user_id = registered["user_id"]
        client.device_id = registered.get("device_id")
        self.clients.append(client)
        return client

    async def texts(self, client: AsyncClient, room_id: str) -> list[str]:
        """The bodies of the latest messages of a room, oldest first, as the client sees them."""
        assert self.session is not None
        url = f"{client.homeserver}/_matrix/client/v3/rooms/{room_id}/messages"
        async with self.session.get(
            url,
            params={"dir": "b", "limit": "50"},
            headers={"Authorization": f"Bearer {client.access_token}"},
        ) as resp:
            data = await resp.json(content_type=None)
        if resp.status != 200:
            return []
        return [
            event["content"].get("body", "")
            for event in reversed(data.get("chunk", []))
            if event.get("type") == "m.room.message"
        ]

    async def wait_for_text(self, client: AsyncClient, room_id: str, text: str) -> float | None:
        """Seconds until ``text`` is among the room's messages for ``client``; None if never."""
        start = time.monotonic()
        while time.monotonic() - start < WAIT:
            if text in await self.texts(client, room_id):
                return time.monotonic() - start
            await asyncio.sleep(0.2)
        return None

    async def state_content(self, client: AsyncClient, room_id: str, kind: str,
                            key: str = "") -> dict[str, Any] | None:
        assert self.session is not None
        url = f"{client.homeserver}/_matrix/client/v3/rooms/{room_id}/state/{kind}/{key}"
        async with self.session.get(
            url, headers={"Authorization": f"Bearer {client.access_token}"}
        ) as resp:
            if resp.status != 200:
                return None
            return await resp.json(content_type=None)

    async def wait_for_state(self, client: AsyncClient, room_id: str, kind: str, key: str,
                             check: Any) -> bool:
        start = time.monotonic()
        while time.monotonic() - start < WAIT:
            content = await self.state_content(client, room_id, kind, key)
            if content is not None and check(content):
                return True
            await asyncio.sleep(0.2)
        return False

    async def wait_for_invite(self, client: AsyncClient, room_id: str, name: str) -> bool:
        """Whether the client's sync shows an invite to the room with its name, in time."""
        assert self.session is not None
        start = time.monotonic()
        while time.monotonic() - start < WAIT:
            async with self.session.get(
                f"{client.homeserver}/_matrix/client/v3/sync",
                params={"timeout": "0"},
                headers={"Authorization": f"Bearer {client.access_token}"},
            ) as resp:
                data = await resp.json(content_type=None)
            invite = data.get("rooms", {}).get("invite", {}).get(room_id)
            if invite:
                events = invite.get("invite_state", {}).get("events", [])
                if any(e.get("type") == "m.room.name" and e.get("content", {}).get("name") == name
                       for e in events):
                    return True
            await asyncio.sleep(0.2)
        return False

    async def wait_for_ephemeral(self, client: AsyncClient, room_id: str, check: Any) -> bool:
        """Whether an ephemeral event of the room in the client's syncs passes ``check``, in time."""
        assert self.session is not None
        since = None
        start = time.monotonic()
        while time.monotonic() - start < WAIT:
            params = {"timeout": "1000"}
            if since:
                params["since"] = since
            async with self.session.get(
                f"{client.homeserver}/_matrix/client/v3/sync",
                params=params,
                headers={"Authorization": f"Bearer {client.access_token}"},
            ) as resp:
                data = await resp.json(content_type=None)
            since = data.get("next_batch", since)
            room = data.get("rooms", {}).get("join", {}).get(room_id, {})
            if any(check(event) for event in room.get("ephemeral", {}).get("events", [])):
                return True
        return False

    async def call(self, client: AsyncClient, method: str, path: str, body: Any = None,
                   params: dict[str, str] | None = None) -> tuple[int, Any]:
        """A client API request of `client`: its status and JSON answer."""
        assert self.session is not None
        async with self.session.request(
            method, f"{client.homeserver}/_matrix/client/v3{path}", json=body, params=params,
            headers={"Authorization": f"Bearer {client.access_token}"},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def eventually(self, check: Any) -> bool:
        """Whether the async `check` holds within the wait."""
        start = time.monotonic()
        while time.monotonic() - start < WAIT:
            if await check():
                return True
            await asyncio.sleep(0.3)
        return False

    async def send(self, client: AsyncClient, room_id: str, text: str) -> None:
        sent = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text})
        self.c.require(isinstance(sent, RoomSendResponse), f"{client.user_id} sends {text!r}",
                       repr(sent))

    async def run(self) -> int:
        async with aiohttp.ClientSession() as session:
            self.session = session
            try:
                await self.scenarios()
            finally:
                for client in self.clients:
                    await client.close()
        return self.c.summary()

    async def scenarios(self) -> None:
        c = self.c
        alice = await self.user(self.causeway, "alice")
        bob = await self.user(self.synapse, "bob")
        carol = await self.user(self.synapse, "carol")
        rooms: dict[str, str] = {}

        async def synapse_user_joins_causeway_room() -> None:
            created = await alice.room_create(
                name="Causeway lounge", preset=RoomPreset.public_chat, room_version="10")
            c.require(isinstance(created, RoomCreateResponse), "alice creates a room on Causeway",
                      repr(created))
            room = created.room_id
            rooms["causeway"] = room
            await self.send(alice, room, "before bob")
            # (matrix-nio's join names no server; Synapse needs one, as clients give with `via`.)
            assert self.session is not None
            async with self.session.post(
                f"{bob.homeserver}/_matrix/client/v3/join/{room}",
                params={"via": self.causeway.server_name},
                headers={"Authorization": f"Bearer {bob.access_token}"},
                json={},
            ) as resp:
                joined = await resp.json(content_type=None)
            c.require(resp.status == 200 and joined.get("room_id") == room,
                      "bob (Synapse) joins it by its id, through Causeway",
                      f"{resp.status} {joined}\n{self.causeway.log_tail(30)}")
            name = await self.state_content(bob, room, "m.room.name")
            c.equal((name or {}).get("name"), "Causeway lounge", "Synapse has the room's state")
            members = await alice.joined_members(room)
            c.check(bob.user_id in [m.user_id for m in getattr(members, "members", [])],
                    "Causeway lists bob among the members", repr(members))

        async def messages_both_ways_causeway_room() -> None:
            room = rooms["causeway"]
            await self.send(alice, room, "hello from causeway")
            took = await self.wait_for_text(bob, room, "hello from causeway")
            c.check(took is not None, "bob (Synapse) receives alice's message",
                    self.causeway.log_tail(20))
            await self.send(bob, room, "hello from synapse")
            took = await self.wait_for_text(alice, room, "hello from synapse")
            c.check(took is not None, "alice (Causeway) receives bob's message",
                    self.causeway.log_tail(20))
            for i in range(5):
                await self.send(alice, room, f"burst {i}")
            took = await self.wait_for_text(bob, room, "burst 4")
            c.check(took is not None, "a burst reaches Synapse")
            on_synapse = [t for t in await self.texts(bob, room) if t.startswith("burst")]
            c.equal(on_synapse, [f"burst {i}" for i in range(5)], "in order on Synapse")
            await alice.room_put_state(room, "m.room.topic", {"topic": "set on Causeway"})
            c.check(
                await self.wait_for_state(bob, room, "m.room.topic", "",
                                          lambda content: content.get("topic") == "set on Causeway"),
                "the topic set on Causeway reaches Synapse")

        async def causeway_user_joins_synapse_room() -> None:
            created = await carol.room_create(
                name="Synapse hall", alias="hall", preset=RoomPreset.public_chat)
            c.require(isinstance(created, RoomCreateResponse), "carol creates a room on Synapse",
                      repr(created))
            room = created.room_id
            rooms["synapse"] = room
            await self.send(carol, room, "before alice")
            alias = f"#hall:{self.synapse.server_name}"
            joined = await alice.join(alias)
            c.require(isinstance(joined, JoinResponse), "alice (Causeway) joins it by its alias",
                      f"{joined!r}\n{self.causeway.log_tail(30)}")
            c.equal(joined.room_id, room, "the alias names carol's room")
            name = await self.state_content(alice, room, "m.room.name")
            c.equal((name or {}).get("name"), "Synapse hall", "Causeway has the room's state")
            version = await self.state_content(alice, room, "m.room.create")
            c.equal((version or {}).get("room_version"), "12", "a version 12 room")

        async def messages_both_ways_synapse_room() -> None:
            room = rooms["synapse"]
            await self.send(carol, room, "hello from carol")
            took = await self.wait_for_text(alice, room, "hello from carol")
            c.check(took is not None, "alice (Causeway) receives carol's message",
                    self.causeway.log_tail(20))
            await self.send(alice, room, "hello from alice")
            took = await self.wait_for_text(carol, room, "hello from alice")
            c.check(took is not None, "carol (Synapse) receives alice's message",
                    self.causeway.log_tail(20))
            await carol.room_put_state(room, "m.room.topic", {"topic": "set on Synapse"})
            c.check(
                await self.wait_for_state(alice, room, "m.room.topic", "",
                                          lambda content: content.get("topic") == "set on Synapse"),
                "the topic set on Synapse reaches Causeway")
            left = await alice.room_leave(room)
            c.check(type(left).__name__ == "RoomLeaveResponse", "alice leaves", repr(left))
            c.check(
                await self.wait_for_state(carol, room, "m.room.member", alice.user_id,
                                          lambda content: content.get("membership") == "leave"),
                "Synapse sees alice's leave")

        async def invites_both_ways() -> None:
            # Causeway invites a Synapse user: Synapse signs the invite, bob sees it and joins.
            created = await alice.room_create(name="Causeway private", preset=RoomPreset.private_chat)
            c.require(isinstance(created, RoomCreateResponse), "alice creates a private room")
            room = created.room_id
            invited = await alice.room_invite(room, bob.user_id)
            c.require(type(invited).__name__ == "RoomInviteResponse",
                      "alice (Causeway) invites bob (Synapse)",
                      f"{invited!r}\n{self.causeway.log_tail(20)}")
            c.check(await self.wait_for_invite(bob, room, "Causeway private"),
                    "bob's sync on Synapse shows the invite with the room's name")
            joined = await bob.join(room)
            c.require(isinstance(joined, JoinResponse), "bob accepts the invite", repr(joined))
            await self.send(bob, room, "thanks for the invite")
            c.check(await self.wait_for_text(alice, room, "thanks for the invite") is not None,
                    "bob's message reaches alice")

            # Synapse invites a Causeway user: Causeway signs, alice sees it and rejects.
            created = await carol.room_create(name="Synapse private", preset=RoomPreset.private_chat)
            c.require(isinstance(created, RoomCreateResponse), "carol creates a private room")
            rejected_room = created.room_id
            invited = await carol.room_invite(rejected_room, alice.user_id)
            c.require(type(invited).__name__ == "RoomInviteResponse",
                      "carol (Synapse) invites alice (Causeway)",
                      f"{invited!r}\n{self.causeway.log_tail(20)}")
            c.check(await self.wait_for_invite(alice, rejected_room, "Synapse private"),
                    "alice's sync on Causeway shows the invite with the room's name")
            left = await alice.room_leave(rejected_room)
            c.check(type(left).__name__ == "RoomLeaveResponse", "alice rejects it", repr(left))
            c.check(
                await self.wait_for_state(carol, rejected_room, "m.room.member", alice.user_id,
                                          lambda content: content.get("membership") == "leave"),
                "Synapse sees the rejection")

            # And accepts another one, joining through Synapse without naming it.
            created = await carol.room_create(name="Synapse second", preset=RoomPreset.private_chat)
            second = created.room_id
            await carol.room_invite(second, alice.user_id)
            c.check(await self.wait_for_invite(alice, second, "Synapse second"),
                    "alice sees the second invite")
            joined = await alice.join(second)
            c.require(isinstance(joined, JoinResponse), "alice accepts it",
                      f"{joined!r}\n{self.causeway.log_tail(20)}")
            await self.send(carol, second, "welcome alice")
            c.check(await self.wait_for_text(alice, second, "welcome alice") is not None,
                    "carol's message reaches alice in the room she was invited to")

        async def typing_and_receipts_both_ways() -> None:
            room = rooms["causeway"]
            await alice.room_typing(room, True, timeout=20000)
            c.check(await self.wait_for_ephemeral(bob, room, lambda e: e.get("type") == "m.typing"
                                                  and alice.user_id in e["content"].get("user_ids", [])),
                    "Synapse shows alice (Causeway) typing")
            await bob.room_typing(room, True, timeout=20000)
            c.check(await self.wait_for_ephemeral(alice, room, lambda e: e.get("type") == "m.typing"
                                                  and bob.user_id in e["content"].get("user_ids", [])),
                    "Causeway shows bob (Synapse) typing")
            sent = await alice.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "read this"})
            c.require(isinstance(sent, RoomSendResponse), "alice sends a message to be read")
            await self.wait_for_text(bob, room, "read this")
            await bob.room_read_markers(room, sent.event_id, sent.event_id)
            c.check(await self.wait_for_ephemeral(
                alice, room, lambda e: e.get("type") == "m.receipt"
                and bob.user_id in e["content"].get(sent.event_id, {}).get("m.read", {})),
                "bob's read receipt (Synapse) reaches alice (Causeway)")
            bobs = await bob.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "read that"})
            await self.wait_for_text(alice, room, "read that")
            await alice.room_read_markers(room, bobs.event_id, bobs.event_id)
            c.check(await self.wait_for_ephemeral(
                bob, room, lambda e: e.get("type") == "m.receipt"
                and alice.user_id in e["content"].get(bobs.event_id, {}).get("m.read", {})),
                "alice's read receipt (Causeway) reaches bob (Synapse)")

        async def pages_back_through_history() -> None:
            created = await carol.room_create(name="Long history", preset=RoomPreset.public_chat)
            c.require(isinstance(created, RoomCreateResponse), "carol creates a room on Synapse")
            room = created.room_id
            for i in range(HISTORY):
                sent = await carol.room_send(
                    room, "m.room.message", {"msgtype": "m.text", "body": f"history {i}"})
                if not isinstance(sent, RoomSendResponse):
                    c.require(False, f"carol sends message {i}", repr(sent))
            assert self.session is not None
            async with self.session.post(
                f"{alice.homeserver}/_matrix/client/v3/join/{room}",
                params={"via": self.synapse.server_name},
                headers={"Authorization": f"Bearer {alice.access_token}"},
                json={},
            ) as resp:
                c.require(resp.status == 200, "alice (Causeway) joins the room",
                          await resp.text())
            seen: list[str] = []
            token: str | None = None
            pages = 0
            while pages < 100:
                params = {"dir": "b", "limit": "50"}
                if token:
                    params["from"] = token
                async with self.session.get(
                    f"{alice.homeserver}/_matrix/client/v3/rooms/{room}/messages",
                    params=params,
                    headers={"Authorization": f"Bearer {alice.access_token}"},
                ) as resp:
                    page = await resp.json(content_type=None)
                c.require(resp.status == 200, f"page {pages} of /messages", repr(page))
                pages += 1
                seen.extend(e["content"].get("body", "") for e in page.get("chunk", [])
                            if e.get("type") == "m.room.message")
                token = page.get("end")
                if not token:
                    break
            seen.reverse()
            c.equal(len(seen), HISTORY, f"alice pages back through all {HISTORY} earlier messages")
            c.check(seen == [f"history {i}" for i in range(HISTORY)], "in order, each once",
                    f"first {seen[:3]}, last {seen[-3:]}")

        async def media_both_ways() -> None:
            assert self.session is not None
            for uploader, reader, label in ((alice, bob, "Causeway to Synapse"),
                                            (bob, alice, "Synapse to Causeway")):
                data = os.urandom(3000) + label.encode()
                async with self.session.post(
                    f"{uploader.homeserver}/_matrix/media/v3/upload",
                    params={"filename": "file.bin"},
                    headers={"Authorization": f"Bearer {uploader.access_token}",
                             "Content-Type": "application/octet-stream"},
                    data=data,
                ) as resp:
                    uploaded = await resp.json(content_type=None)
                c.require(resp.status == 200, f"upload ({label})", repr(uploaded))
                server_name, media_id = uploaded["content_uri"][len("mxc://"):].split("/", 1)
                async with self.session.get(
                    f"{reader.homeserver}/_matrix/client/v1/media/download/{server_name}/{media_id}",
                    headers={"Authorization": f"Bearer {reader.access_token}"},
                ) as resp:
                    body = await resp.read()
                c.check(resp.status == 200 and body == data,
                        f"media goes {label}", f"{resp.status} {body[:200]!r}")

        async def keys_and_to_device_both_ways() -> None:
            assert self.session is not None

            async def call(client: AsyncClient, method: str, path: str, body: Any) -> Any:
                async with self.session.request(
                    method, f"{client.homeserver}/_matrix/client/v3{path}", json=body,
                    headers={"Authorization": f"Bearer {client.access_token}"},
                ) as resp:
                    data = await resp.json(content_type=None)
                c.require(resp.status == 200, f"{client.user_id} {method} {path}", repr(data))
                return data

            for client in (alice, bob):
                device = client.device_id
                await call(client, "POST", "/keys/upload", {
                    "device_keys": {
                        "user_id": client.user_id, "device_id": device,
                        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                        "keys": {f"curve25519:{device}": f"curve-{device}",
                                 f"ed25519:{device}": f"ed-{device}"},
                        "signatures": {client.user_id: {f"ed25519:{device}": "sig"}},
                    },
                    "one_time_keys": {
                        f"signed_curve25519:{device}{i}": {"key": f"otk-{device}-{i}",
                                                           "signatures": {}}
                        for i in range(2)
                    },
                })
            for asker, owner, label in ((alice, bob, "Causeway asks Synapse"),
                                        (bob, alice, "Synapse asks Causeway")):
                query = await call(asker, "POST", "/keys/query",
                                   {"device_keys": {owner.user_id: []}})
                keys = query.get("device_keys", {}).get(owner.user_id, {}).get(owner.device_id, {})
                c.equal(keys.get("keys", {}).get(f"ed25519:{owner.device_id}"),
                        f"ed-{owner.device_id}", f"device keys: {label}")
                claim = await call(asker, "POST", "/keys/claim", {
                    "one_time_keys": {owner.user_id: {owner.device_id: "signed_curve25519"}}})
                claimed = claim.get("one_time_keys", {}).get(owner.user_id, {}).get(owner.device_id, {})
                c.check(any(str(k.get("key", "")).startswith(f"otk-{owner.device_id}")
                            for k in claimed.values()), f"one-time key claimed: {label}",
                        repr(claim))
            for sender, receiver, label in ((alice, bob, "Causeway to Synapse"),
                                            (bob, alice, "Synapse to Causeway")):
                since = (await call(receiver, "GET", "/sync?timeout=0", None))["next_batch"]
                await call(sender, "PUT", f"/sendToDevice/m.test.federation/{label.replace(' ', '-')}",
                           {"messages": {receiver.user_id: {receiver.device_id: {"said": label}}}})
                got = False
                start = time.monotonic()
                while not got and time.monotonic() - start < WAIT:
                    data = await call(receiver, "GET", f"/sync?timeout=1000&since={since}", None)
                    since = data.get("next_batch", since)
                    got = any(e.get("content", {}).get("said") == label
                              and e.get("sender") == sender.user_id
                              for e in data.get("to_device", {}).get("events", []))
                c.check(got, f"a to-device message goes {label}")

        async def profiles_presence_redactions_and_directory() -> None:
            room = rooms["causeway"]
            # Profiles, asked of each user's server.
            for client, name in ((alice, "Alice of Causeway"), (bob, "Bob of Synapse")):
                status, _ = await self.call(client, "PUT", f"/profile/{client.user_id}/displayname",
                                            {"displayname": name})
                c.require(status == 200, f"{client.user_id} sets a display name")
            for asker, owner, name in ((bob, alice, "Alice of Causeway"),
                                       (alice, bob, "Bob of Synapse")):
                status, profile = await self.call(asker, "GET", f"/profile/{owner.user_id}")
                c.check(status == 200 and profile.get("displayname") == name,
                        f"{asker.user_id} reads {owner.user_id}'s profile", f"{status} {profile}")
            # Presence, both ways.
            status, _ = await self.call(alice, "PUT", f"/presence/{alice.user_id}/status",
                                        {"presence": "unavailable", "status_msg": "in a meeting"})
            c.require(status == 200, "alice sets her presence")
            status, _ = await self.call(bob, "PUT", f"/presence/{bob.user_id}/status",
                                        {"presence": "online", "status_msg": "around"})
            c.require(status == 200, "bob sets his presence")

            async def presence_of(asker: AsyncClient, owner: AsyncClient, state: str,
                                  message: str) -> bool:
                status, data = await self.call(asker, "GET", f"/presence/{owner.user_id}/status")
                return (status == 200 and data.get("presence") == state
                        and data.get("status_msg") == message)

            c.check(await self.eventually(lambda: presence_of(bob, alice, "unavailable",
                                                              "in a meeting")),
                    "Synapse shows alice's presence (Causeway)")
            c.check(await self.eventually(lambda: presence_of(alice, bob, "online", "around")),
                    "Causeway shows bob's presence (Synapse)")
            # Redactions, each by the event's sender, both ways.
            for sender, reader in ((alice, bob), (bob, alice)):
                text = f"{sender.user_id} takes this back"
                sent = await sender.room_send(room, "m.room.message",
                                              {"msgtype": "m.text", "body": text})
                c.require(isinstance(sent, RoomSendResponse), f"{sender.user_id} sends")
                await self.wait_for_text(reader, room, text)
                redacted = await sender.room_redact(room, sent.event_id, reason="oops")
                c.require(type(redacted).__name__ == "RoomRedactResponse",
                          f"{sender.user_id} redacts it", repr(redacted))

                async def gone(reader: AsyncClient = reader, event_id: str = sent.event_id) -> bool:
                    status, event = await self.call(reader, "GET", f"/rooms/{room}/event/{event_id}")
                    return status == 200 and event.get("content") == {}

                c.check(await self.eventually(gone),
                        f"the redaction by {sender.user_id} reaches the other server")
            # The public room directories.
            status, _ = await self.call(alice, "PUT", f"/directory/list/room/{room}",
                                        {"visibility": "public"})
            c.require(status == 200, "alice publishes her room")
            status, listed = await self.call(bob, "GET", "/publicRooms",
                                             params={"server": self.causeway.server_name})
            c.check(status == 200 and any(r.get("room_id") == room and r.get("name") == "Causeway lounge"
                                          for r in listed.get("chunk", [])),
                    "Synapse reads Causeway's directory", f"{status} {listed}")
            created = await carol.room_create(name="Synapse square", preset=RoomPreset.public_chat,
                                              visibility=RoomVisibility.public)
            c.require(isinstance(created, RoomCreateResponse), "carol creates a public room")
            found: list[Any] = []

            async def listed_on_synapse() -> bool:
                # (Synapse updates its directory's statistics a moment after the room is made.)
                status, listed = await self.call(alice, "POST", "/publicRooms",
                                                 {"filter": {"generic_search_term": "square"}},
                                                 params={"server": self.synapse.server_name})
                found[:] = [status, listed]
                return status == 200 and [r.get("room_id") for r in listed.get("chunk", [])] \
                    == [created.room_id]

            c.check(await self.eventually(listed_on_synapse),
                    "Causeway reads Synapse's directory, searched", repr(found))

        async def knocks_both_ways() -> None:
            knock_rule = [{"type": "m.room.join_rules", "state_key": "",
                           "content": {"join_rule": "knock"}}]
            for owner, knocker, via, label in (
                    (alice, carol, self.causeway.server_name, "Synapse user on a Causeway room"),
                    (carol, alice, self.synapse.server_name, "Causeway user on a Synapse room")):
                created = await owner.room_create(name=f"Door {label}", room_version="10",
                                                  initial_state=knock_rule)
                c.require(isinstance(created, RoomCreateResponse), f"a knock room ({label})",
                          repr(created))
                room = created.room_id
                status, answer = await self.call(knocker, "POST", f"/knock/{room}",
                                                 {"reason": "may I?"}, params={"via": via})
                c.check(status == 200 and answer.get("room_id") == room,
                        f"the knock is taken ({label})", f"{status} {answer}")

                async def knocking(owner: AsyncClient = owner, room: str = room,
                                   knocker: AsyncClient = knocker) -> bool:
                    content = await self.state_content(owner, room, "m.room.member",
                                                       knocker.user_id)
                    return (content or {}).get("membership") == "knock"

                c.check(await self.eventually(knocking), f"the room's owner sees it ({label})")
                status, synced = await self.call(knocker, "GET", "/sync", params={"timeout": "0"})
                knock_state = (synced.get("rooms", {}).get("knock", {}).get(room, {})
                               .get("knock_state", {}).get("events", []))
                c.check(any(e.get("type") == "m.room.name"
                            and e.get("content", {}).get("name") == f"Door {label}"
                            and set(e) <= {"type", "state_key", "content", "sender"}
                            for e in knock_state),
                        f"the knocker's sync shows the room, stripped ({label})", repr(knock_state))
                invited = await owner.room_invite(room, knocker.user_id)
                c.require(type(invited).__name__ == "RoomInviteResponse",
                          f"the owner lets the knocker in ({label})", repr(invited))
                since = synced.get("next_batch", "")

                async def invite_shown(knocker: AsyncClient = knocker, room: str = room,
                                       label: str = label) -> bool:
                    # (Incremental: Synapse answers the same initial sync from a cache.)
                    nonlocal since
                    status, data = await self.call(knocker, "GET", "/sync",
                                                   params={"timeout": "1000", "since": since})
                    since = data.get("next_batch", since)
                    events = (data.get("rooms", {}).get("invite", {}).get(room, {})
                              .get("invite_state", {}).get("events", []))
                    return any(e.get("type") == "m.room.name"
                               and e.get("content", {}).get("name") == f"Door {label}"
                               for e in events)

                c.check(await self.eventually(invite_shown),
                        f"the invite reaches the knocker ({label})")
                joined = await knocker.join(room)
                c.check(isinstance(joined, JoinResponse), f"the knocker joins ({label})",
                        repr(joined))

        async def restricted_rooms_both_ways() -> None:
            for owner, joiner, via, label in (
                    (alice, bob, self.causeway.server_name, "Synapse user, Causeway room"),
                    (carol, alice, self.synapse.server_name, "Causeway user, Synapse room")):
                space = await owner.room_create(name=f"Space {label}", preset=RoomPreset.public_chat,
                                                room_version="10")
                c.require(isinstance(space, RoomCreateResponse), f"a space ({label})", repr(space))
                allow = [{"type": "m.room.join_rules", "state_key": "",
                          "content": {"join_rule": "restricted", "allow": [
                              {"type": "m.room_membership", "room_id": space.room_id}]}}]
                room = await owner.room_create(name=f"Members of {label}", room_version="10",
                                               initial_state=allow)
                c.require(isinstance(room, RoomCreateResponse), f"a restricted room ({label})",
                          repr(room))
                status, answer = await self.call(joiner, "POST", f"/join/{room.room_id}", {},
                                                 params={"via": via})
                c.check(status == 403, f"not in the space, the join is refused ({label})",
                        f"{status} {answer}")
                status, answer = await self.call(joiner, "POST", f"/join/{space.room_id}", {},
                                                 params={"via": via})
                c.require(status == 200, f"the joiner joins the space ({label})",
                          f"{status} {answer}")
                status, answer = await self.call(joiner, "POST", f"/join/{room.room_id}", {},
                                                 params={"via": via})
                c.check(status == 200, f"a member of the space joins the room ({label})",
                        f"{status} {answer}")
                member = await self.state_content(owner, room.room_id, "m.room.member",
                                                  joiner.user_id)
                c.check((member or {}).get("membership") == "join"
                        and (member or {}).get("join_authorised_via_users_server") == owner.user_id,
                        f"the owner's server vouched for the join ({label})", repr(member))

        async def shown_in_order(client: AsyncClient, room: str, sent: list[str]) -> bool:
            """Whether the client's /messages shows every one of `sent`, once, in order."""
            prefix = sent[0].rsplit(" ", 1)[0]
            seen = [text for text in await self.texts(client, room)
                    if text.rsplit(" ", 1)[0] == prefix]
            return seen == sent

        async def durability() -> None:
            room = rooms["causeway"]
            # Causeway killed (SIGKILL) in the middle of a burst from Synapse: what Synapse sent
            # arrives once Causeway is back, each once, in order.
            burst = [f"while-killed {i}" for i in range(40)]

            async def send_burst() -> None:
                for text in burst:
                    await self.send(bob, room, text)

            sending = asyncio.create_task(send_burst())
            await asyncio.sleep(0.5)
            self.causeway.kill()
            await sending
            self.causeway.start()
            c.check(await self.eventually(lambda: shown_in_order(alice, room, burst)),
                    "killed during an inbound burst, Causeway gets all of it in order",
                    repr(await self.texts(alice, room)))
            # Causeway restarted while Synapse is down: what it acknowledged to alice reaches
            # Synapse, in order, once Synapse is back.
            self.synapse.stop()
            queued = [f"queued {i}" for i in range(20)]
            for text in queued:
                await self.send(alice, room, text)
            self.causeway.stop()
            self.causeway.start()
            self.synapse.start(timeout=60)
            # (Synapse speaking again is how Causeway learns it is back before its backoff ends.)
            await self.send(bob, room, "back again")
            c.check(await self.eventually(lambda: shown_in_order(bob, room, queued)),
                    "restarted while Synapse was down, Causeway delivers what it queued, in order",
                    repr(await self.texts(bob, room)))

        await c.step("a Synapse user joins a Causeway room", synapse_user_joins_causeway_room)
        await c.step("messages both ways in the Causeway room", messages_both_ways_causeway_room,
                     needs=("a Synapse user joins a Causeway room",))
        await c.step("typing and read receipts both ways", typing_and_receipts_both_ways,
                     needs=("a Synapse user joins a Causeway room",))
        await c.step("a Causeway user joins a Synapse room by alias",
                     causeway_user_joins_synapse_room)
        await c.step("messages both ways in the Synapse room", messages_both_ways_synapse_room,
                     needs=("a Causeway user joins a Synapse room by alias",))
        await c.step("invites both ways, accepted and rejected", invites_both_ways)
        await c.step("media both ways", media_both_ways)
        await c.step("device keys, one-time keys and to-device messages both ways",
                     keys_and_to_device_both_ways,
                     needs=("a Synapse user joins a Causeway room",))
        await c.step(f"a Causeway user pages back through {HISTORY} messages it never had",
                     pages_back_through_history)
        await c.step("profiles, presence, redactions and directories both ways",
                     profiles_presence_redactions_and_directory,
                     needs=("a Synapse user joins a Causeway room",))
        await c.step("knocks both ways", knocks_both_ways)
        await c.step("restricted rooms both ways", restricted_rooms_both_ways)
        # Last: it stops and starts both servers.
        await c.step("durability: Causeway killed during a burst, restarted while Synapse is down",
                     durability, needs=("a Synapse user joins a Causeway room",))


async def main() -> int:
    async def run(causeway: harness.Causeway, synapse: harness.Synapse, work: Path) -> int:
        return await FederationTest(causeway, synapse).run()

    return await harness.with_synapse_peer(__doc__.splitlines()[0], run, "federation-",
                                           presence=True)


if __name__ == "__main__":
    harness.run_async_test(main)
