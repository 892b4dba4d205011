"""Interop test: the matrix-nio client library against a fresh Causeway.

Covers what an ordinary client does: registration (the spec's UIA flow and nio's one-shot form),
login, profile, room creation with name and topic, invite seen through sync, join, a message
exchange read back through sync and through /messages in both directions of pagination, media
upload/download (bytes, content type, filename), a thumbnail of a PNG, and the errors a client
meets: a wrong password (M_FORBIDDEN), joining a private room uninvited (M_FORBIDDEN) and an
unknown access token (M_UNKNOWN_TOKEN).

Run: python interop-tests/test_matrix_nio.py --causeway target/debug/causeway
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import zlib
from typing import Any, Callable

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    DownloadResponse,
    JoinError,
    JoinResponse,
    LoginError,
    LoginResponse,
    MessageDirection,
    ProfileGetResponse,
    RegisterResponse,
    ResizingMethod,
    RoomCreateResponse,
    RoomGetStateEventResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    ThumbnailResponse,
    UploadResponse,
)

import harness

PASSWORD_A = "correct horse battery staple"
PASSWORD_B = "tr0ub4dor&3 but longer"


def make_png(width: int, height: int) -> bytes:
    """A valid RGB PNG with a colour gradient, built with zlib and struct only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes(((x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1), 128))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of a PNG or JPEG, or None if it is neither."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return ("image/png", w, h)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return ("image/jpeg", w, h)
            i += 2 + length
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ("image/webp", 0, 0)
    return None


def new_client(server: harness.ServerProcess, user: str = "") -> tuple[AsyncClient, harness.HttpRecorder]:
    config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=2, request_timeout=60)
    client = AsyncClient(server.base_url, user, config=config)
    return client, harness.HttpRecorder(client)


class NioTest:
    def __init__(self, server: harness.ServerProcess) -> None:
        self.server = server
        self.hs = server.server_name
        self.c = harness.Checks("test_matrix_nio")
        self.alice, self.alice_http = new_client(server)
        self.bob, self.bob_http = new_client(server)
        self.clients = [self.alice, self.bob]
        self.room_id = ""
        self.sent: list[tuple[str, str, str]] = []  # (sender, body, event_id) in sending order
        self.tokens_before_exchange: dict[str, str] = {}
        self.sync_next_batch: dict[str, str] = {}
        self.sync_prev_batch: dict[str, str | None] = {}

    # -- helpers ----------------------------------------------------------------------------
    def http(self, client: AsyncClient) -> harness.HttpRecorder:
        return self.alice_http if client is self.alice else self.bob_http

    def ok(self, resp: Any, cls: type, what: str, client: AsyncClient, quiet: bool = False) -> None:
        """Require a successful nio response of the given class; show the exchange if not."""
        self.c.require(
            isinstance(resp, cls),
            what,
            f"nio returned {type(resp).__name__}: {getattr(resp, 'message', '')} "
            f"{getattr(resp, 'status_code', '')}\n{self.http(client).of(resp)}",
            quiet=quiet,
        )

    async def sync_until(
        self,
        client: AsyncClient,
        since: str | None,
        done: Callable[[list[SyncResponse]], bool],
        timeout: float = 15.0,
    ) -> list[SyncResponse]:
        """Incremental syncs from ``since`` until ``done(responses)`` holds."""
        responses: list[SyncResponse] = []
        deadline = time.monotonic() + timeout
        token = since
        while True:
            resp = await client.sync(timeout=1000, since=token)
            self.ok(resp, SyncResponse, "sync answers with a valid sync response", client, quiet=True)
            responses.append(resp)
            token = resp.next_batch
            if done(responses):
                return responses
            if time.monotonic() > deadline:
                return responses

    def timeline(self, responses: list[SyncResponse], room_id: str) -> list[Any]:
        events: list[Any] = []
        for r in responses:
            joined = r.rooms.join.get(room_id)
            if joined:
                events.extend(joined.timeline.events)
        return events

    # -- steps ------------------------------------------------------------------------------
    async def register(self) -> None:
        c = self.c
        # alice: the spec's two-round UIA flow by hand, then a password login through nio.
        async with aiohttp.ClientSession() as http:
            url = f"{self.server.base_url}/_matrix/client/v3/register"
            async with http.post(url, json={"username": "alice", "password": PASSWORD_A}) as r:
                body = await r.json(content_type=None)
                c.equal(r.status, 401, "register without auth answers 401 (user-interactive auth)",
                        f"body: {body}")
                flows = [f.get("stages") for f in body.get("flows", [])] if isinstance(body, dict) else []
                c.check(["m.login.dummy"] in flows, "401 offers the flow [m.login.dummy]",
                        f"flows: {flows}")
                c.check(isinstance(body.get("session"), str) and body["session"] != "",
                        "401 carries a session id", f"body: {body}")
            session = body.get("session") if isinstance(body, dict) else None
            auth = {"type": "m.login.dummy", **({"session": session} if session else {})}
            async with http.post(url, json={"username": "alice", "password": PASSWORD_A,
                                            "auth": auth}) as r:
                reg = await r.json(content_type=None)
                c.require(r.status == 200, "register with m.login.dummy answers 200",
                          f"HTTP {r.status}: {reg}")
            c.equal(reg.get("user_id"), f"@alice:{self.hs}", "registered user id is @alice:<server>")
            c.check(bool(reg.get("access_token")), "registration returns an access token", str(reg))

        self.alice.user = f"@alice:{self.hs}"
        resp = await self.alice.login(PASSWORD_A, device_name="nio interop")
        self.ok(resp, LoginResponse, "alice logs in with her password", self.alice)
        c.equal(resp.user_id, f"@alice:{self.hs}", "login answers alice's user id")
        c.check(bool(resp.device_id), "login answers a device id")

        # bob: nio's one-shot registration (auth dict in the first request).
        resp = await self.bob.register("bob", PASSWORD_B, device_name="nio interop")
        self.ok(resp, RegisterResponse, "bob registers through nio", self.bob)
        c.equal(resp.user_id, f"@bob:{self.hs}", "bob's user id is @bob:<server>")
        c.check(bool(self.bob.access_token), "nio holds bob's access token")

        other, other_http = new_client(self.server)
        try:
            resp = await other.register("bob", "another password")
            c.equal(getattr(resp, "status_code", None), "M_USER_IN_USE",
                    "registering a taken user name answers M_USER_IN_USE", other_http.of(resp))
        finally:
            await other.close()

    async def profile(self) -> None:
        c = self.c
        resp = await self.alice.set_displayname("Alice Liddell")
        c.check(type(resp).__name__ == "ProfileSetDisplayNameResponse", "alice sets her displayname",
                self.alice_http.of(resp))
        self.avatar = f"mxc://{self.hs}/aliceavatar0001"
        resp = await self.alice.set_avatar(self.avatar)
        c.check(type(resp).__name__ == "ProfileSetAvatarResponse", "alice sets her avatar_url",
                self.alice_http.of(resp))
        resp = await self.bob.get_profile(f"@alice:{self.hs}")
        self.ok(resp, ProfileGetResponse, "bob reads alice's profile", self.bob)
        c.equal(resp.displayname, "Alice Liddell", "profile displayname", self.bob_http.of(resp))
        c.equal(resp.avatar_url, self.avatar, "profile avatar_url", self.bob_http.of(resp))

    async def room(self) -> None:
        c = self.c
        resp = await self.alice.room_create(
            name="Causeway interop", topic="Testing with matrix-nio", preset=RoomPreset.private_chat
        )
        self.ok(resp, RoomCreateResponse, "alice creates a room with a name and topic", self.alice)
        self.room_id = resp.room_id
        c.check(self.room_id.startswith("!"), "room id starts with '!'", self.room_id)

        for etype, key, expected in (
            ("m.room.name", "name", "Causeway interop"),
            ("m.room.topic", "topic", "Testing with matrix-nio"),
        ):
            r = await self.alice.room_get_state_event(self.room_id, etype)
            self.ok(r, RoomGetStateEventResponse, f"alice reads the {etype} state event", self.alice)
            c.equal(r.content.get(key), expected, f"{etype} content.{key}", self.alice_http.of(r))

        r = await self.alice.room_get_state_event(self.room_id, "m.room.member", f"@alice:{self.hs}")
        self.ok(r, RoomGetStateEventResponse, "alice reads her own m.room.member event", self.alice)
        c.equal(r.content.get("membership"), "join", "alice's membership is join")
        c.equal(r.content.get("displayname"), "Alice Liddell",
                "alice's member event carries the displayname set before the room existed",
                self.alice_http.of(r))
        c.equal(r.content.get("avatar_url"), self.avatar,
                "alice's member event carries her avatar_url", self.alice_http.of(r))

        # bob's starting point, before the invite exists.
        first = await self.bob.sync(timeout=0)
        self.ok(first, SyncResponse, "bob's initial sync", self.bob)
        self.c.check(self.room_id not in first.rooms.invite and self.room_id not in first.rooms.join,
                     "bob does not see the room before he is invited")

        resp = await self.alice.room_invite(self.room_id, f"@bob:{self.hs}")
        self.ok(resp, RoomInviteResponse, "alice invites bob", self.alice)

        syncs = await self.sync_until(self.bob, first.next_batch,
                                      lambda rs: any(self.room_id in r.rooms.invite for r in rs))
        invites = [r.rooms.invite[self.room_id] for r in syncs if self.room_id in r.rooms.invite]
        c.require(bool(invites), "bob sees the invite through sync",
                  f"rooms in bob's syncs: {[list(r.rooms.invite) + list(r.rooms.join) for r in syncs]}"
                  f"\n{self.bob_http.last()}")
        state = invites[-1].invite_state
        member = [e for e in state if getattr(e, "state_key", None) == f"@bob:{self.hs}"]
        c.check(bool(member) and getattr(member[0], "membership", None) == "invite",
                "invite_state holds bob's m.room.member invite", f"invite_state: {state}")
        c.check(bool(member) and getattr(member[0], "sender", None) == f"@alice:{self.hs}",
                "the invite's sender is alice", f"invite_state: {state}")
        names = [getattr(e, "name", None) for e in state if type(e).__name__ == "InviteNameEvent"]
        c.equal(names, ["Causeway interop"], "invite_state carries the room name (stripped state)")

        resp = await self.bob.join(self.room_id)
        self.ok(resp, JoinResponse, "bob joins the room he was invited to", self.bob)
        c.equal(resp.room_id, self.room_id, "join answers the room id")

        syncs = await self.sync_until(
            self.alice, None,
            lambda rs: any(getattr(e, "state_key", None) == f"@bob:{self.hs}"
                           and getattr(e, "membership", None) == "join"
                           for e in self.timeline(rs, self.room_id)))
        joins = [e for e in self.timeline(syncs, self.room_id)
                 if getattr(e, "state_key", None) == f"@bob:{self.hs}"
                 and getattr(e, "membership", None) == "join"]
        c.check(bool(joins), "alice sees bob's join in the room timeline", self.alice_http.last())

        r = await self.bob.room_get_state_event(self.room_id, "m.room.member", f"@bob:{self.hs}")
        self.ok(r, RoomGetStateEventResponse, "bob reads his own member event", self.bob)
        c.equal(r.content.get("membership"), "join", "bob's membership is join", self.bob_http.of(r))

    async def profile_propagation(self) -> None:
        c = self.c
        before = await self.bob.sync(timeout=0)
        self.ok(before, SyncResponse, "bob syncs before alice renames herself", self.bob)
        resp = await self.alice.set_displayname("Alice in Causeway")
        c.check(type(resp).__name__ == "ProfileSetDisplayNameResponse",
                "alice changes her displayname while in the room", self.alice_http.of(resp))
        # The propagation may happen after the profile request has answered: poll for 10 s.
        deadline = time.monotonic() + 10
        while True:
            r = await self.bob.room_get_state_event(self.room_id, "m.room.member", f"@alice:{self.hs}")
            self.ok(r, RoomGetStateEventResponse, "bob reads alice's member event", self.bob, quiet=True)
            if r.content.get("displayname") == "Alice in Causeway" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        c.equal(r.content.get("displayname"), "Alice in Causeway",
                "alice's member event in the joined room carries the new displayname",
                self.bob_http.of(r))
        c.equal(r.content.get("membership"), "join", "alice is still joined after the change")
        syncs = await self.sync_until(
            self.bob, before.next_batch,
            lambda rs: any(getattr(e, "state_key", None) == f"@alice:{self.hs}"
                           and e.source.get("content", {}).get("displayname") == "Alice in Causeway"
                           for e in self.timeline(rs, self.room_id)))
        seen = [e for e in self.timeline(syncs, self.room_id)
                if getattr(e, "state_key", None) == f"@alice:{self.hs}"]
        c.check(any(e.source.get("content", {}).get("displayname") == "Alice in Causeway"
                    for e in seen),
                "bob's sync shows alice's member event with the new displayname",
                f"alice member events in bob's sync: {seen}\n{self.bob_http.last()}")

    async def messages(self) -> None:
        c = self.c
        for client in self.clients:
            s = await client.sync(timeout=0)
            self.ok(s, SyncResponse, f"{client.user_id} syncs before the exchange", client)
            self.tokens_before_exchange[client.user_id] = s.next_batch

        order = [self.alice, self.bob, self.alice, self.alice, self.bob, self.bob, self.alice, self.bob]
        for i, client in enumerate(order, 1):
            who = "alice" if client is self.alice else "bob"
            body = f"message {i} from {who} ✓"
            resp = await client.room_send(self.room_id, "m.room.message",
                                          {"msgtype": "m.text", "body": body})
            self.ok(resp, RoomSendResponse, f"{who} sends message {i}", client)
            c.check(resp.event_id.startswith("$"), f"message {i} event id starts with '$'",
                    resp.event_id)
            self.sent.append((client.user_id, body, resp.event_id))
        c.equal(len({e for _, _, e in self.sent}), len(self.sent), "every message has its own event id")

        want_ids = [e for _, _, e in self.sent]
        for client in self.clients:
            syncs = await self.sync_until(
                client, self.tokens_before_exchange[client.user_id],
                lambda rs: set(want_ids) <= {e.event_id for e in self.timeline(rs, self.room_id)})
            msgs = [e for e in self.timeline(syncs, self.room_id) if isinstance(e, RoomMessageText)]
            got = [(e.sender, e.body, e.event_id) for e in msgs]
            c.equal(got, self.sent,
                    f"{client.user_id} receives all messages through sync, in order, with sender/body",
                    self.http(client).last())
            last = syncs[-1]
            self.sync_next_batch[client.user_id] = last.next_batch
            # Remember prev_batch of the first sync that carried the room's timeline.
            for r in syncs:
                if self.room_id in r.rooms.join and r.rooms.join[self.room_id].timeline.events:
                    self.sync_prev_batch[client.user_id] = r.rooms.join[self.room_id].timeline.prev_batch
                    break

        # Duplicate transaction: the same txn id must not create a second event.
        resp1 = await self.alice.room_send(self.room_id, "m.room.message",
                                           {"msgtype": "m.text", "body": "txn once"}, tx_id="fixedtxn1")
        resp2 = await self.alice.room_send(self.room_id, "m.room.message",
                                           {"msgtype": "m.text", "body": "txn once"}, tx_id="fixedtxn1")
        self.ok(resp1, RoomSendResponse, "send with a fixed txn id", self.alice)
        self.ok(resp2, RoomSendResponse, "resend with the same txn id", self.alice)
        c.equal(resp2.event_id, resp1.event_id, "the same txn id answers the same event id")

    async def history(self) -> None:
        c = self.c
        expected_rev = list(reversed(self.sent))
        for client in self.clients:
            uid = client.user_id
            # Backwards from the sync's next_batch: newest first, page by page.
            token = self.sync_next_batch[uid]
            got: list[tuple[str, str, str]] = []
            pages = 0
            seen_create = False
            while pages < 50:
                resp = await client.room_messages(self.room_id, start=token, limit=3,
                                                  direction=MessageDirection.back)
                self.ok(resp, RoomMessagesResponse, f"{uid} /messages page {pages + 1}", client)
                pages += 1
                if pages <= 3:
                    c.check(len(resp.chunk) <= 3, f"{uid} /messages page {pages} respects limit=3",
                            f"{len(resp.chunk)} events")
                for e in resp.chunk:
                    if isinstance(e, RoomMessageText) and e.body.startswith("message "):
                        got.append((e.sender, e.body, e.event_id))
                    if type(e).__name__ == "RoomCreateEvent":
                        seen_create = True
                if not resp.chunk or not resp.end or resp.end == token:
                    break
                token = resp.end
            c.equal(got, expected_rev,
                    f"{uid} /messages dir=b from sync next_batch returns the messages newest first",
                    self.http(client).last())
            c.check(seen_create, f"{uid} back-pagination reaches m.room.create", self.http(client).last())
            c.check(pages >= 3, f"{uid} pagination took several pages of 3 ({pages})")

            # Backwards from the prev_batch of the sync that carried the messages: only older events.
            prev = self.sync_prev_batch.get(uid)
            c.require(bool(prev), f"{uid} sync timeline has a prev_batch")
            resp = await client.room_messages(self.room_id, start=prev, limit=50,
                                              direction=MessageDirection.back)
            self.ok(resp, RoomMessagesResponse, f"{uid} /messages dir=b from sync prev_batch", client)
            ids = {e.event_id for e in resp.chunk}
            c.check(not (ids & {e for _, _, e in self.sent}),
                    f"{uid} history before prev_batch holds none of the exchanged messages",
                    self.http(client).of(resp))
            c.check(any(getattr(e, "state_key", None) == f"@bob:{self.hs}"
                        and getattr(e, "membership", None) == "join" for e in resp.chunk),
                    f"{uid} history before prev_batch holds bob's join", self.http(client).of(resp))

            # Forwards from the start of that page brings the same events back in order.
            fwd = await client.room_messages(self.room_id, start=resp.end, limit=100,
                                             direction=MessageDirection.front)
            self.ok(fwd, RoomMessagesResponse, f"{uid} /messages dir=f", client)
            fwd_msgs = [(e.sender, e.body, e.event_id) for e in fwd.chunk
                        if isinstance(e, RoomMessageText) and e.body.startswith("message ")]
            c.equal(fwd_msgs, self.sent, f"{uid} /messages dir=f returns the messages oldest first",
                    self.http(client).of(fwd))

    async def media(self) -> None:
        c = self.c
        data = os.urandom(5000) + b"causeway"
        resp, _ = await self.alice.upload(lambda *_: data, content_type="application/pdf",
                                          filename="report.pdf", filesize=len(data))
        self.ok(resp, UploadResponse, "alice uploads a file", self.alice)
        mxc = resp.content_uri
        c.check(mxc.startswith(f"mxc://{self.hs}/"), "content uri is mxc://<server>/<id>", mxc)

        d = await self.bob.download(mxc)
        self.ok(d, DownloadResponse, "bob downloads the file", self.bob)
        c.check(d.body == data, "downloaded bytes equal the uploaded bytes",
                f"{len(d.body)} bytes vs {len(data)}\n{self.bob_http.of(d)}")
        c.equal(d.content_type, "application/pdf", "download content type", self.bob_http.of(d))
        c.equal(d.filename, "report.pdf", "filename from Content-Disposition", self.bob_http.of(d))

        d = await self.bob.download(mxc, filename="renamed.pdf")
        self.ok(d, DownloadResponse, "bob downloads the file under another name", self.bob)
        c.check(d.body == data, "bytes are the same under the other name")
        c.equal(d.filename, "renamed.pdf", "Content-Disposition names the requested filename",
                self.bob_http.of(d))

        text = "Grüße, Causeway!\n".encode()
        resp, _ = await self.alice.upload(lambda *_: text, content_type="application/octet-stream",
                                          filename="résumé.bin", filesize=len(text))
        self.ok(resp, UploadResponse, "alice uploads a file with a non-ASCII filename", self.alice)
        d = await self.bob.download(resp.content_uri)
        self.ok(d, DownloadResponse, "bob downloads it", self.bob)
        c.check(d.body == text, "bytes of the second file")
        c.equal(d.filename, "résumé.bin", "non-ASCII filename survives (RFC 6266 filename*)",
                self.bob_http.of(d))

        missing = await self.bob.download(f"mxc://{self.hs}/doesnotexist0000")
        c.equal(getattr(missing, "status_code", None), "M_NOT_FOUND",
                "downloading an unknown media id answers M_NOT_FOUND", self.bob_http.of(missing))

    async def thumbnail(self) -> None:
        c = self.c
        png = make_png(64, 48)
        c.equal(image_size(png), ("image/png", 64, 48), "the generated PNG parses (self-check)")
        resp, _ = await self.alice.upload(lambda *_: png, content_type="image/png",
                                          filename="gradient.png", filesize=len(png))
        self.ok(resp, UploadResponse, "alice uploads a PNG", self.alice)
        server_name, media_id = resp.content_uri[len("mxc://"):].split("/", 1)
        for method in (ResizingMethod.scale, ResizingMethod.crop):
            t = await self.bob.thumbnail(server_name, media_id, 32, 32, method=method)
            self.ok(t, ThumbnailResponse, f"bob requests a 32x32 {method.value} thumbnail", self.bob)
            info = image_size(t.body)
            c.check(info is not None, f"{method.value} thumbnail body is a PNG/JPEG/WebP image",
                    self.bob_http.of(t))
            if info:
                fmt, w, h = info
                c.equal(t.content_type.split(";")[0].strip(), fmt,
                        f"{method.value} thumbnail Content-Type matches its bytes")
                if fmt != "image/webp":
                    c.check(0 < w <= 64 and 0 < h <= 48,
                            f"{method.value} thumbnail is no larger than the original ({w}x{h})")

    async def errors(self) -> None:
        c = self.c
        wrong, wrong_http = new_client(self.server, f"@alice:{self.hs}")
        try:
            resp = await wrong.login("not the password")
            c.check(isinstance(resp, LoginError), "login with a wrong password fails",
                    wrong_http.of(resp))
            c.equal(getattr(resp, "status_code", None), "M_FORBIDDEN",
                    "wrong password answers errcode M_FORBIDDEN", wrong_http.of(resp))
            c.equal(wrong_http.exchanges[-1].status if wrong_http.exchanges else None, 403,
                    "wrong password answers HTTP 403")

            resp = await wrong.login(PASSWORD_A.upper())
            c.equal(getattr(resp, "status_code", None), "M_FORBIDDEN",
                    "password comparison is case-sensitive", wrong_http.of(resp))

            nobody, nobody_http = new_client(self.server, f"@nobody:{self.hs}")
            try:
                resp = await nobody.login("whatever")
                c.equal(getattr(resp, "status_code", None), "M_FORBIDDEN",
                        "login as an unknown user answers M_FORBIDDEN", nobody_http.of(resp))
            finally:
                await nobody.close()

            wrong.access_token = "syt_this_token_does_not_exist"
            wrong.user_id = f"@alice:{self.hs}"
            resp = await wrong.sync(timeout=0)
            c.equal(getattr(resp, "status_code", None), "M_UNKNOWN_TOKEN",
                    "sync with an unknown access token answers M_UNKNOWN_TOKEN", wrong_http.of(resp))
            c.equal(wrong_http.exchanges[-1].status if wrong_http.exchanges else None, 401,
                    "unknown access token answers HTTP 401")
        finally:
            await wrong.close()

        resp = await self.alice.room_create(name="Private", preset=RoomPreset.private_chat)
        self.ok(resp, RoomCreateResponse, "alice creates a private room", self.alice)
        private = resp.room_id
        resp = await self.bob.join(private)
        c.check(isinstance(resp, JoinError), "bob cannot join a private room uninvited",
                self.bob_http.of(resp))
        c.equal(getattr(resp, "status_code", None), "M_FORBIDDEN",
                "joining uninvited answers M_FORBIDDEN", self.bob_http.of(resp))
        c.equal(self.bob_http.exchanges[-1].status, 403, "joining uninvited answers HTTP 403")
        r = await self.alice.room_get_state_event(private, "m.room.member", f"@bob:{self.hs}")
        c.equal(getattr(r, "status_code", None), "M_NOT_FOUND",
                "the refused join left no member event for bob", self.alice_http.of(r))

        resp = await self.bob.room_send(private, "m.room.message", {"msgtype": "m.text", "body": "x"})
        c.equal(getattr(resp, "status_code", None), "M_FORBIDDEN",
                "sending into a room one is not in answers M_FORBIDDEN", self.bob_http.of(resp))

    async def run(self) -> int:
        c = self.c
        try:
            await c.step("register and login", self.register)
            await c.step("profile", self.profile, needs=("register and login",))
            await c.step("room, invite and join", self.room, needs=("register and login",))
            await c.step("profile change reaches the room", self.profile_propagation,
                         needs=("room, invite and join",))
            await c.step("message exchange through sync", self.messages,
                         needs=("room, invite and join",))
            await c.step("history through /messages", self.history,
                         needs=("message exchange through sync",))
            await c.step("media upload and download", self.media, needs=("register and login",))
            await c.step("thumbnail", self.thumbnail, needs=("register and login",))
            await c.step("error cases", self.errors, needs=("register and login",))
        finally:
            for client in self.clients:
                await client.close()
        return c.summary()


async def main() -> int:
    args = harness.test_argparser(__doc__.splitlines()[0]).parse_args()
    server = harness.server_from_args(args)
    with server:
        server.start()
        print(f"{server.kind} ready at {server.base_url} (work dir {server.workdir})")
        code = await NioTest(server).run()
        if code != 0:
            print(server.log_tail(30))
            raise SystemExit(code)  # keeps the work directory for inspection
        return code


if __name__ == "__main__":
    harness.run_async_test(main)
