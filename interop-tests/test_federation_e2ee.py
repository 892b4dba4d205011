"""Interop test: encrypted rooms across Causeway and a real Synapse, matrix-nio with its
encryption support (Olm and Megolm) as the clients on both sides.

Both servers serve federation over TLS on loopback and know where the other is. Covered:

* an encrypted room created on Causeway (room version 10) and one created on Synapse (its
  default version), each with a user of the other server invited and joined;
* in both rooms, messages sent from either side are decrypted by the other side's client: the
  sender's client fetched the other user's device keys through its server (`keys/query` asked of
  the other server), claimed one-time keys (`keys/claim`), and sent the room key as a to-device
  message that crossed the federation (`m.direct_to_device`);
* a new device logged in on either side gets the keys of what is sent after it appeared: its
  server told the other server (`m.device_list_update`), the other server told its user's client
  (`device_lists.changed`), and that client shared a new room key with the new device;
* no message is left undecryptable on any device that existed when it was sent.

Run: python interop-tests/test_federation_e2ee.py --causeway target/debug/causeway
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable

import aiohttp
from nio import (AsyncClient, AsyncClientConfig, JoinResponse, LoginResponse, MegolmEvent,
                 RoomCreateResponse, RoomMessageText, RoomSendResponse)

import harness

PASSWORD = "encrypted federation test password"
WAIT = 60.0
ENCRYPTION = {"type": "m.room.encryption", "state_key": "",
              "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


class Device:
    """One encrypting client (one device) and what it has seen."""

    def __init__(self, client: AsyncClient, label: str) -> None:
        self.client = client
        self.label = label
        self.texts: dict[str, list[str]] = {}  # room id -> decrypted bodies, in order
        self.undecrypted: list[tuple[str, str]] = []  # (room id, session id)
        client.add_event_callback(self._on_text, RoomMessageText)
        client.add_event_callback(self._on_undecrypted, MegolmEvent)

    async def _on_text(self, room: Any, event: RoomMessageText) -> None:
        if getattr(event, "decrypted", False):
            self.texts.setdefault(room.room_id, []).append(event.body)

    async def _on_undecrypted(self, room: Any, event: MegolmEvent) -> None:
        self.undecrypted.append((room.room_id, event.session_id))

    async def sync(self) -> None:
        """One round of what a client does: sync, then upload, query and claim keys."""
        client = self.client
        await client.sync(timeout=500)
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())


class E2eeTest:
    def __init__(self, causeway: harness.Causeway, synapse: harness.Synapse, work: Path) -> None:
        self.causeway = causeway
        self.synapse = synapse
        self.work = work
        self.c = harness.Checks("test_federation_e2ee")
        self.session: aiohttp.ClientSession | None = None
        self.devices: list[Device] = []

    def client(self, server: harness.ServerProcess, user_id: str, label: str) -> AsyncClient:
        store = self.work / "stores" / label
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False)
        return AsyncClient(server.base_url, user_id, store_path=str(store), config=config)

    async def user(self, server: harness.ServerProcess, name: str) -> Device:
        assert self.session is not None
        registered = await harness.register_user(self.session, server.base_url, name, PASSWORD)
        client = self.client(server, registered["user_id"], f"{name}-1")
        client.restore_login(registered["user_id"], registered["device_id"],
                             registered["access_token"])
        device = Device(client, f"{name} ({server.server_name})")
        self.devices.append(device)
        return device

    async def new_device(self, server: harness.ServerProcess, first: Device, n: int) -> Device:
        name = first.client.user_id.split(":")[0].lstrip("@")
        client = self.client(server, first.client.user_id, f"{name}-{n}")
        login = await client.login(PASSWORD, device_name=f"{name}'s device {n}")
        self.c.require(isinstance(login, LoginResponse), f"{name} logs in on device {n}",
                       repr(login))
        device = Device(client, f"{name}'s device {n}")
        self.devices.append(device)
        return device

    async def until(self, devices: list[Device], done: Callable[[], bool],
                    timeout: float = WAIT) -> bool:
        """Syncs `devices` round after round until `done()` or the time is up."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            await asyncio.gather(*(device.sync() for device in devices))
            if done():
                return True
        return done()

    async def send(self, device: Device, room: str, text: str) -> None:
        # Keys first: the client shares the room key with every device it knows of.
        await device.sync()
        sent = await device.client.room_send(
            room, "m.room.message", {"msgtype": "m.text", "body": text},
            ignore_unverified_devices=True)
        self.c.require(isinstance(sent, RoomSendResponse), f"{device.label} sends {text!r}",
                       repr(sent))

    async def run(self) -> int:
        async with aiohttp.ClientSession() as session:
            self.session = session
            try:
                await self.scenarios()
            finally:
                for device in self.devices:
                    await device.client.close()
        return self.c.summary()

    async def scenarios(self) -> None:
        c = self.c
        alice = await self.user(self.causeway, "alice")
        bob = await self.user(self.synapse, "bob")
        rooms: dict[str, str] = {}

        async def join(joiner: Device, room: str, via: str) -> None:
            await self.until([joiner], lambda: room in joiner.client.invited_rooms)
            joined = await joiner.client.join(room)
            c.require(isinstance(joined, JoinResponse), f"{joiner.label} joins through {via}",
                      repr(joined))

        async def create(creator: Device, invitee: Device, key: str, **extra: Any) -> None:
            await self.until([creator], lambda: True)
            created = await creator.client.room_create(
                name=f"encrypted on {key}", initial_state=[ENCRYPTION],
                invite=[invitee.client.user_id], **extra)
            c.require(isinstance(created, RoomCreateResponse),
                      f"{creator.label} creates an encrypted room", repr(created))
            rooms[key] = created.room_id
            await join(invitee, created.room_id, key)
            both = [creator, invitee]
            ok = await self.until(both, lambda: all(
                created.room_id in d.client.rooms
                and d.client.rooms[created.room_id].encrypted
                and len(d.client.rooms[created.room_id].users) == 2 for d in both))
            c.require(ok, f"both see the room on {key} as encrypted, with both members")

        async def exchange(room_key: str, first: Device, second: Device) -> None:
            room = rooms[room_key]
            for sender, receiver in ((first, second), (second, first)):
                text = f"secret from {sender.label} in the room on {room_key}"
                await self.send(sender, room, text)
                got = await self.until([receiver, sender],
                                       lambda: text in receiver.texts.get(room, []))
                c.check(got, f"{receiver.label} decrypts {sender.label}'s message "
                        f"(room on {room_key})",
                        f"undecrypted: {receiver.undecrypted}\n{self.causeway.log_tail(20)}")

        async def room_on_causeway() -> None:
            await create(alice, bob, "causeway", room_version="10")
            await exchange("causeway", alice, bob)

        async def room_on_synapse() -> None:
            await create(bob, alice, "synapse")
            await exchange("synapse", bob, alice)

        def knows(watcher: Device, owner: Device, device_id: str) -> bool:
            return any(d.id == device_id for d in
                       watcher.client.device_store.active_user_devices(owner.client.user_id))

        async def new_device_gets_the_keys(owner: Device, server: harness.ServerProcess,
                                           other: Device, names: tuple[str, str, str]) -> Device:
            """`owner` logs in on a new device on `server`; `other`'s client learns of it and
            shares the key of its next message with it. `names`: the owner's, the owner's
            server's and the other's server's."""
            name, here, there = names
            room = rooms["causeway"]
            new = await self.new_device(server, owner, 2)
            await self.until([new], lambda: room in new.client.rooms)
            new_id = new.client.device_id
            seen = await self.until([other, new], lambda: knows(other, owner, new_id))
            c.check(seen, f"{other.label}'s client ({there}) learns of {name}'s new device "
                    f"({here})", self.causeway.log_tail(20))
            text = f"after {name}'s new device"
            await self.send(other, room, text)
            got = await self.until([new, owner, other], lambda: text in new.texts.get(room, [])
                                   and text in owner.texts.get(room, []))
            c.check(got, f"{name}'s new and old devices decrypt the next message of "
                    f"{other.label}", f"new: {new.undecrypted} old: {owner.undecrypted}")
            return new

        async def new_devices_get_the_keys() -> None:
            bob2 = await new_device_gets_the_keys(bob, self.synapse, alice,
                                                  ("bob", "Synapse", "Causeway"))
            await new_device_gets_the_keys(alice, self.causeway, bob,
                                           ("alice", "Causeway", "Synapse"))
            # Bob's second device goes: alice's client learns that too.
            bob2_id = bob2.client.device_id
            await bob2.client.logout()
            gone = await self.until([alice], lambda: not knows(alice, bob, bob2_id))
            c.check(gone, "alice's client (Causeway) learns that bob's device is gone")

        async def nothing_left_undecrypted() -> None:
            for device in (alice, bob):
                c.equal(device.undecrypted, [], f"{device.label}: nothing left undecryptable")

        await c.step("an encrypted room on Causeway, messages decrypted both ways",
                     room_on_causeway)
        await c.step("an encrypted room on Synapse, messages decrypted both ways",
                     room_on_synapse)
        await c.step("new devices on either side get the keys", new_devices_get_the_keys,
                     needs=("an encrypted room on Causeway, messages decrypted both ways",))
        await c.step("no message left undecryptable", nothing_left_undecrypted)


async def main() -> int:
    async def run(causeway: harness.Causeway, synapse: harness.Synapse, work: Path) -> int:
        return await E2eeTest(causeway, synapse, work).run()

    return await harness.with_synapse_peer(__doc__.splitlines()[0], run, "federation-e2ee-")


if __name__ == "__main__":
    harness.run_async_test(main)
