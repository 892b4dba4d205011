"""The bridge with a real XMPP server: an XMPP user (slixmpp on Prosody or ejabberd) and a Causeway
account (matrix-nio). test_bridge_prosody.py and test_bridge_ejabberd.py run it against each
server, in secure mode (test CA, STARTTLS, SASL EXTERNAL both ways) and in dialback mode
(certificates not trusted either way, XEP-0220 over TLS).

The XMPP server serves its domain (prosody.test on 127.0.0.2, ejabberd.test on 127.0.0.3) and
Causeway gw.test on 127.0.0.5. bob@<domain> is a slixmpp client on it; @alice:gw.test is a
matrix-nio client on Causeway. Then:

- Bob writes to alice@gw.test: Causeway makes a direct room of Bob's ghost
  (@_xmpp_bob=40<domain>:gw.test) and Alice, marked direct in her account data; she is
  invited, joins, and reads the message (with its XEP-0393 styling as HTML) under Bob's name,
  which, with his avatar, comes from his vCard. Bob reads Alice's name from her vCard.
- Alice answers: Bob receives a chat message from alice@gw.test.
- Bob types, corrects his message, reacts to Alice's and retracts a message; Alice sees typing,
  an edit, a reaction and a redaction. Alice types, replies, reacts, reads and redacts; Bob
  receives a chat state, an XEP-0461 reply, XEP-0444 reactions, an XEP-0333 marker and an
  XEP-0424 retraction.
- Bob asks for Alice's presence: a notice of his ghost asks her; she reacts 👍 and Bob sees
  her presence (and she his, slixmpp allowing her by itself); presence with status both ways.
- Alice starts a chat with @_xmpp_carol=40<domain>:gw.test from Matrix: the ghost joins by
  itself and Carol receives her message.
- Causeway restarts: the same room is used, nothing is sent twice, the chat goes on.
- The XMPP server stops: Alice's message gets a notice that it was not delivered; the server
  comes back: the message arrives and the notice says it was delivered.
- Causeway stops (SIGTERM, then SIGKILL) while Alice's messages are on their way to a server
  that accepted the connection and never answers; once the XMPP server is back, each message
  arrives exactly once, in order, with at most one notice.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, Callable

import aiohttp
from nio import AsyncClient, AsyncClientConfig, RoomSendResponse, SyncResponse

import harness
import test_xmpp_prosody as xp

ALICE = "@alice:gw.test"
PASSWORD = "alice's long password"
# A 1×1 PNG.
BOB_PHOTO = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b7f2"
    "4a0000000049454e44ae426082")


class BridgeCauseway(xp.GatewayCauseway):
    """Causeway as gw.test with the bridge logging in detail and no rate limits in the way."""

    def config_text(self) -> str:
        return super().config_text() + (
            "".join(f"\n[rate_limits.{name}]\nper_second = 1000.0\nburst = 1000\n"
                      for name in ("login", "registration", "message"))
        ).replace('filter = "info,causeway_xmpp=debug"', 'filter = "info,causeway=debug"')


class XmppUser:
    """A slixmpp client on the XMPP server that keeps every message stanza it receives."""

    def __init__(self, jid: str, password: str) -> None:
        import slixmpp
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        self.client = slixmpp.ClientXMPP(jid, password)
        self.client.register_plugin("xep_0030")
        self.client.register_plugin("xep_0054")
        self.messages: asyncio.Queue = asyncio.Queue()
        self.presences: asyncio.Queue = asyncio.Queue()
        self.client.register_handler(Callback(
            "every message", MatchXPath("{jabber:client}message"),
            lambda stanza: self.messages.put_nowait(stanza)))
        self.client.add_event_handler("presence", lambda stanza: self.presences.put_nowait(stanza))
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()

        def started(_event: Any) -> None:
            self.client.send_presence()
            if not self.ready.done():
                self.ready.set_result(True)

        self.client.add_event_handler("session_start", started)

    async def connect(self, ca: str, ip: str) -> None:
        self.client.ca_certs = ca
        self.client.connect(host=ip, port=5222)
        await asyncio.wait_for(self.ready, 20)
        # With the roster asked for, the server pushes its changes (RFC 6121 §2.1.6).
        await self.client.get_roster()
        # The server routes messages to the resource once its presence is in.
        await asyncio.sleep(0.3)

    def send(self, xml: str) -> None:
        self.client.send_raw(xml)

    async def next(self, accept: Callable[[Any], bool], timeout: float = 20) -> Any:
        """The next received message that `accept` takes; others are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no such message arrived")
            stanza = await asyncio.wait_for(self.messages.get(), left)
            if accept(stanza):
                return stanza

    async def presence(self, accept: Callable[[Any], bool], timeout: float = 30) -> Any:
        """The next received presence that `accept` takes; others are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no such presence arrived")
            stanza = await asyncio.wait_for(self.presences.get(), left)
            if accept(stanza):
                return stanza

    async def disconnect(self) -> None:
        self.client.disconnect()
        await asyncio.sleep(0.3)


class Silent:
    """A server that accepts connections on an address and never answers: what Causeway sends
    to it stays on its way."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, ip: str, port: int) -> None:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.writers.append(writer)
            while await reader.read(4096):
                pass

        self.server = await asyncio.start_server(hold, ip, port, reuse_address=True)

    async def wait_accepted(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.accepted < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.accepted >= count

    async def stop(self) -> None:
        if self.server:
            self.server.close()
        for writer in self.writers:
            writer.close()
        if self.server:
            await self.server.wait_closed()


def child(stanza: Any, name: str, namespace: str) -> Any:
    return stanza.xml.find(f"{{{namespace}}}{name}")


def body_of(stanza: Any) -> str:
    element = stanza.xml.find("{jabber:client}body")
    return element.text if element is not None and element.text else ""


class Matrix:
    """Alice through matrix-nio, with a sync position kept between calls."""

    def __init__(self, base_url: str) -> None:
        config = AsyncClientConfig(max_limit_exceeded=0, max_timeouts=2, request_timeout=60)
        self.client = AsyncClient(base_url, ALICE, config=config)
        self.http = harness.HttpRecorder(self.client)
        self.since: str | None = None

    async def sync_until(self, found: Callable[[SyncResponse], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = await self.client.sync(timeout=1000, since=self.since)
            if not isinstance(response, SyncResponse):
                raise RuntimeError(f"sync failed: {response}\n{self.http.last()}")
            self.since = response.next_batch
            result = found(response)
            if result:
                return result
        return None

    async def raw(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.request(
                method, f"{self.client.homeserver}{path}", json=body,
                headers={"Authorization": f"Bearer {self.client.access_token}"},
            ) as response:
                return response.status, await response.json(content_type=None)


def timeline(response: SyncResponse, room: str) -> list[dict[str, Any]]:
    joined = response.rooms.join.get(room)
    return [event.source for event in joined.timeline.events] if joined else []


class BridgeTest:
    """The scenario against one XMPP server (`server`: test_xmpp_prosody.Prosody or
    ejabberd.Ejabberd, not started), in the mode it was made for."""

    def __init__(self, args: Any, work: Any, server: Any, secure: bool, checks: harness.Checks) -> None:
        self.args = args
        self.work = work
        self.ca = str(work / "ca.crt")
        self.c = checks
        self.server = server
        self.secure = secure
        self.name = server.name
        self.domain = server.domain
        self.bob_jid = f"bob@{self.domain}"
        self.bob_ghost = f"@_xmpp_bob=40{self.domain}:gw.test"
        self.carol_ghost = f"@_xmpp_carol=40{self.domain}:gw.test"
        self.gateway = BridgeCauseway(args.causeway, work, direct_tls=False, dialback=not secure,
                                      peer_domain=server.domain, peer_ip=server.ip)
        self.bob: XmppUser | None = None
        self.alice: Matrix | None = None
        self.room = ""
        self.bob_first_id = "bob-1"
        self.bob_first_event = ""
        self.alice_event = ""

    async def wait_event(self, what: str, match: Callable[[dict[str, Any]], bool],
                         timeout: float = 30) -> dict[str, Any]:
        assert self.alice
        found = await self.alice.sync_until(
            lambda r: next((e for e in timeline(r, self.room) if match(e)), None), timeout)
        self.c.require(found is not None, what, f"no such event in {self.room}")
        return found

    async def send(self, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        assert self.alice
        response = await self.alice.client.room_send(self.room, event_type, content)
        self.c.require(isinstance(response, RoomSendResponse), f"Alice sends {event_type}",
                       f"{response}\n{self.alice.http.last()}")
        return response.event_id

    # -- steps ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.server.start()
        self.server.register("carol", "carolpw")
        self.gateway.start()
        self.alice = Matrix(self.gateway.base_url)
        response = await self.alice.client.register("alice", PASSWORD, device_name="interop")
        self.c.require(getattr(response, "user_id", None) == ALICE, "Alice registers on Causeway",
                       str(response))
        await self.alice.sync_until(lambda _r: True)
        self.bob = XmppUser(f"{self.bob_jid}/interop", "bobpw")
        await self.bob.connect(self.ca, self.server.ip)
        self.c.check(True, f"Bob is online on {self.name}")
        vcard = self.bob.client.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Bob Builder"
        vcard["PHOTO"]["TYPE"] = "image/png"
        vcard["PHOTO"]["BINVAL"] = BOB_PHOTO
        await self.bob.client.plugin["xep_0054"].publish_vcard(vcard)
        self.c.check(True, f"Bob publishes his vCard on {self.name}")

    async def first_contact(self) -> None:
        assert self.alice and self.bob
        self.bob.send(f"<message to='alice@gw.test' type='chat' id='{self.bob_first_id}'>"
                      "<body>Hello *Alice*, it's Bob</body></message>")
        invite = await self.alice.sync_until(
            lambda r: next(iter(r.rooms.invite.items()), None))
        self.c.require(invite is not None, "Alice is invited to a room when Bob writes")
        self.room, invited = invite
        members = [e for e in invited.invite_state if getattr(e, "state_key", None) == ALICE]
        member = members[0] if members else None
        self.c.equal(getattr(member, "sender", None), self.bob_ghost, "the invite comes from Bob's ghost")
        self.c.equal((getattr(member, "content", None) or {}).get("is_direct"), True,
                     "the invite is to a direct chat")
        status, direct = await self.alice.raw("GET", f"/_matrix/client/v3/user/{ALICE}/account_data/m.direct")
        self.c.equal((status, direct.get(self.bob_ghost)), (200, [self.room]),
                     "the room is in Alice's m.direct under Bob's ghost")
        await self.alice.client.join(self.room)
        event = await self.wait_event(
            "Bob's message appears in the room",
            lambda e: e["type"] == "m.room.message" and e["sender"] == self.bob_ghost
            and e["content"].get("msgtype") == "m.text")
        self.bob_first_event = event["event_id"]
        content = event["content"]
        self.c.equal(content.get("body"), "Hello *Alice*, it's Bob", "with its text")
        self.c.equal(content.get("formatted_body"), "Hello <strong>Alice</strong>, it's Bob",
                     "and its styling as HTML")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, profile = await self.alice.raw("GET", f"/_matrix/client/v3/profile/{self.bob_ghost}")
            if profile.get("avatar_url"):
                break
            await asyncio.sleep(0.2)
        self.c.equal((status, profile.get("displayname")), (200, "Bob Builder"),
                     "Bob's ghost has the name of his vCard")
        avatar = profile.get("avatar_url", "")
        photo = await self.alice.client.download(avatar) if avatar else None
        self.c.equal(getattr(photo, "body", None), BOB_PHOTO, "and its photo as avatar", repr(profile))

    async def alice_answers(self) -> None:
        assert self.alice and self.bob
        self.alice_event = await self.send({"msgtype": "m.text", "body": "Hi Bob! Good to see you."})
        message = await self.bob.next(lambda s: body_of(s) != "")
        self.c.equal((str(message["from"]), str(message["to"].bare), message["type"]),
                     ("alice@gw.test", self.bob_jid, "chat"),
                     "Bob receives a chat message from alice@gw.test")
        self.c.equal(body_of(message), "Hi Bob! Good to see you.", "with Alice's text")
        self.c.equal(message["id"], self.alice_event, "its id is the event id")

    async def alice_profile(self) -> None:
        assert self.alice and self.bob
        await self.alice.client.set_displayname("Alice Liddell")
        vcard = await self.bob.client.plugin["xep_0054"].get_vcard("alice@gw.test", cached=False,
                                                                   timeout=20)
        self.c.equal(vcard["vcard_temp"]["FN"], "Alice Liddell",
                     "Bob reads Alice's display name from her vCard")

    async def xmpp_extensions(self) -> None:
        assert self.alice and self.bob
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-typing'>"
                      "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        typing = await self.alice.sync_until(lambda r: next(
            (e for e in (r.rooms.join.get(self.room).ephemeral if r.rooms.join.get(self.room) else [])
             if getattr(e, "users", None)), None))
        self.c.check(typing is not None and self.bob_ghost in typing.users, "Alice sees Bob typing",
                     repr(typing))
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-2'><body>Hello Alice!</body>"
                      f"<replace xmlns='urn:xmpp:message-correct:0' id='{self.bob_first_id}'/></message>")
        edit = await self.wait_event("Bob's correction becomes an edit", lambda e: e["content"].get(
            "m.relates_to", {}).get("rel_type") == "m.replace")
        self.c.equal((edit["content"]["m.relates_to"]["event_id"], edit["content"]["m.new_content"]["body"]),
                     (self.bob_first_event, "Hello Alice!"), "of his first message, with the new text")
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-3'>"
                      f"<reactions xmlns='urn:xmpp:reactions:0' id='{self.alice_event}'>"
                      "<reaction>👍</reaction></reactions></message>")
        reaction = await self.wait_event("Bob's reaction becomes a reaction", lambda e: e["type"] == "m.reaction")
        self.c.equal((reaction["sender"], reaction["content"]["m.relates_to"]["event_id"],
                      reaction["content"]["m.relates_to"]["key"]),
                     (self.bob_ghost, self.alice_event, "👍"), "to Alice's message, by Bob's ghost")
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-4'><body>oops</body></message>")
        oops = await self.wait_event("Bob's next message arrives", lambda e: e["content"].get("body") == "oops")
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-5'>"
                      "<retract xmlns='urn:xmpp:message-retract:1' id='bob-4'/>"
                      "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>"
                      "<body>retracted</body></message>")
        redaction = await self.wait_event("Bob's retraction becomes a redaction",
                                          lambda e: e["type"] == "m.room.redaction")
        self.c.equal(redaction.get("redacts") or redaction["content"].get("redacts"), oops["event_id"],
                     "of the retracted message")

    async def matrix_extensions(self) -> None:
        assert self.alice and self.bob
        await self.alice.client.room_typing(self.room, True, timeout=10000)
        state = await self.bob.next(lambda s: child(s, "composing", "http://jabber.org/protocol/chatstates") is not None)
        self.c.check(body_of(state) == "", "Bob receives Alice's typing as a chat state")
        await self.alice.client.room_typing(self.room, False)
        await self.send({"msgtype": "m.text", "body": f"> <{self.bob_ghost}> Hello Alice!\n\nAnd hello to you",
                         "m.relates_to": {"m.in_reply_to": {"event_id": self.bob_first_event}}})
        reply = await self.bob.next(lambda s: child(s, "reply", "urn:xmpp:reply:0") is not None)
        self.c.equal(child(reply, "reply", "urn:xmpp:reply:0").get("id"), self.bob_first_id,
                     "Bob receives Alice's reply to his message (XEP-0461)")
        self.c.equal(body_of(reply), "> Bob Builder:\n> Hello Alice!\nAnd hello to you",
                     "quoting his corrected text by name, never a Matrix id")
        reaction = await self.send({"m.relates_to": {"rel_type": "m.annotation",
                                                     "event_id": self.bob_first_event, "key": "🎉"}},
                                   "m.reaction")
        message = await self.bob.next(lambda s: child(s, "reactions", "urn:xmpp:reactions:0") is not None)
        reactions = child(message, "reactions", "urn:xmpp:reactions:0")
        self.c.equal((reactions.get("id"), [r.text for r in reactions]), (self.bob_first_id, ["🎉"]),
                     "Bob receives Alice's reaction (XEP-0444)")
        await self.alice.client.room_redact(self.room, reaction)
        message = await self.bob.next(lambda s: child(s, "reactions", "urn:xmpp:reactions:0") is not None)
        self.c.equal(len(list(child(message, "reactions", "urn:xmpp:reactions:0"))), 0,
                     "and an empty set when she takes it back")
        await self.alice.client.update_receipt_marker(self.room, self.bob_first_event)
        marker = await self.bob.next(lambda s: child(s, "displayed", "urn:xmpp:chat-markers:0") is not None)
        self.c.equal(child(marker, "displayed", "urn:xmpp:chat-markers:0").get("id"), self.bob_first_id,
                     "Bob receives Alice's read receipt as a displayed marker (XEP-0333)")
        await self.alice.client.room_redact(self.room, self.alice_event)
        message = await self.bob.next(lambda s: child(s, "retract", "urn:xmpp:message-retract:1") is not None)
        self.c.equal(child(message, "retract", "urn:xmpp:message-retract:1").get("id"), self.alice_event,
                     "Bob receives Alice's redaction as a retraction (XEP-0424)")
        await self.send({"msgtype": "m.emote", "body": "waves"})
        message = await self.bob.next(lambda s: body_of(s) != "")
        self.c.equal(body_of(message), "/me waves", "an emote is /me")
        await self.send({"msgtype": "m.text", "body": "really important, see code",
                         "format": "org.matrix.custom.html",
                         "formatted_body": "<strong>really</strong> important, see <code>code</code>"})
        message = await self.bob.next(lambda s: body_of(s) != "")
        self.c.equal(body_of(message), "*really* important, see `code`",
                     "formatted text is XEP-0393 styling")

    async def presence(self) -> None:
        assert self.alice and self.bob
        status, messages = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/messages?dir=b&limit=100")
        request = next((e for e in messages.get("chunk", []) if e["sender"] == self.bob_ghost
                        and "asks to see when you are online" in e["content"].get("body", "")), None)
        if request is None:
            # slixmpp asks back by itself when it allows Alice; ask here if it did not.
            self.bob.send("<presence to='alice@gw.test' type='subscribe'/>")
            request = await self.wait_event("Bob's subscription request reaches Alice", lambda e: e[
                "sender"] == self.bob_ghost and "asks to see when you are online" in e["content"].get("body", ""))
        self.c.check(True, "Bob's subscription request reaches Alice as a notice of his ghost")
        self.c.check("React with 👍" in request["content"]["body"], "which says how to answer",
                     request["content"]["body"])
        await self.send({"m.relates_to": {"rel_type": "m.annotation", "event_id": request["event_id"],
                                          "key": "👍"}}, "m.reaction")
        roster = self.bob.client.client_roster
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and roster["alice@gw.test"]["subscription"] not in ("to", "both"):
            await asyncio.sleep(0.2)
        self.c.equal(roster["alice@gw.test"]["subscription"], "both",
                     "Alice's 👍 lets Bob see her presence, and she sees his (roster: both)")
        await self.alice.client.set_presence("unavailable", "in a meeting")
        # The presence Alice's syncs keep setting would say online: sync without it here.
        status, _ = await self.alice.raw("PUT", f"/_matrix/client/v3/presence/{ALICE}/status",
                                         {"presence": "unavailable", "status_msg": "in a meeting"})
        away = await self.wait_presence(lambda p: str(p["from"].bare) == "alice@gw.test"
                                        and p["status"] == "in a meeting")
        self.c.equal((away["show"], away["status"]), ("away", "in a meeting"),
                     "Bob sees Alice away, with her status message")
        self.bob.client.send_presence(pshow="dnd", pstatus="busy")
        deadline = time.monotonic() + 20
        presence = None
        while time.monotonic() < deadline:
            status, presence = await self.alice.raw("GET", f"/_matrix/client/v3/presence/{self.bob_ghost}/status")
            if presence.get("status_msg") == "busy":
                break
            await asyncio.sleep(0.2)
        self.c.equal((presence or {}).get("presence"), "unavailable",
                     "Alice sees Bob's ghost unavailable when he is busy", repr(presence))
        self.c.equal((presence or {}).get("status_msg"), "busy", "with his status message")
        self.bob.client.send_presence()

    async def wait_presence(self, accept: Callable[[Any], bool], timeout: float = 20) -> Any:
        assert self.bob
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise harness.StepFailed("no such presence arrived")
            stanza = await asyncio.wait_for(self.bob.presences.get(), left)
            if accept(stanza):
                return stanza

    async def matrix_starts(self) -> None:
        assert self.alice
        carol = XmppUser(f"carol@{self.domain}/interop", "carolpw")
        await carol.connect(self.ca, self.server.ip)
        try:
            response = await self.alice.client.room_create(is_direct=True, invite=[self.carol_ghost])
            room = getattr(response, "room_id", None)
            self.c.require(room is not None, "Alice creates a direct chat with Carol's ghost",
                           f"{response}\n{self.alice.http.last()}")
            joined = await self.alice.sync_until(lambda r: any(
                e.get("state_key") == self.carol_ghost and e.get("content", {}).get("membership") == "join"
                for e in timeline(r, room)))
            self.c.check(bool(joined), "Carol's ghost joins by itself")
            await self.alice.client.room_send(room, "m.room.message",
                                              {"msgtype": "m.text", "body": "Hello Carol"})
            message = await carol.next(lambda s: body_of(s) != "")
            self.c.equal((str(message["from"]), body_of(message)), ("alice@gw.test", "Hello Carol"),
                         "Carol receives Alice's message")
            carol.send("<message to='alice@gw.test' type='chat' id='carol-1'><body>Hi Alice</body></message>")
            answer = await self.alice.sync_until(lambda r: next(
                (e for e in timeline(r, room) if e.get("sender") == self.carol_ghost
                 and e["type"] == "m.room.message"), None))
            self.c.check(answer is not None, "Carol's answer lands in the same room")
        finally:
            await carol.disconnect()

    async def causeway_restarts(self) -> None:
        assert self.alice and self.bob
        self.gateway.stop()
        self.gateway.start()
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-after'><body>Still there?</body></message>")
        seen = await self.alice.sync_until(lambda r: next(
            (e for e in timeline(r, self.room) if e["content"].get("body") == "Still there?"), None)
            or (r.rooms.invite and "invite"))
        self.c.check(isinstance(seen, dict), "after a restart of Causeway, Bob's message lands in the same room",
                     repr(seen))
        # The same stanza again is not stored twice.
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-after'><body>Still there?</body></message>")
        self.bob.send("<message to='alice@gw.test' type='chat' id='bob-after-2'><body>marker</body></message>")
        events = await self.alice.sync_until(lambda r: (lambda t: t if any(
            e["content"].get("body") == "marker" for e in t) else None)(timeline(r, self.room)))
        self.c.check(events is not None and not any(e["content"].get("body") == "Still there?" for e in events),
                     "a stanza sent again with the same id is not stored again", repr(events))
        await self.send({"msgtype": "m.text", "body": "Yes, after a restart"})
        message = await self.bob.next(lambda s: body_of(s) != "")
        self.c.equal(body_of(message), "Yes, after a restart", "and Alice's answer reaches Bob")
        try:
            extra = await self.bob.next(lambda s: body_of(s) != "", timeout=2)
            self.c.check(False, "nothing is sent twice after the restart", body_of(extra))
        except (TimeoutError, asyncio.TimeoutError):
            self.c.check(True, "nothing is sent twice after the restart")

    async def server_restarts(self) -> None:
        assert self.alice and self.bob
        await self.bob.disconnect()
        self.server.stop()
        event = await self.send({"msgtype": "m.text", "body": "Are you there, Bob?"})
        notice = await self.wait_event("Alice sees that her message was not delivered", lambda e: e[
            "content"].get("msgtype") == "m.notice" and e["content"].get("m.relates_to", {}).get(
            "m.in_reply_to", {}).get("event_id") == event)
        self.c.check("cannot be reached" in notice["content"]["body"], "and why",
                     notice["content"]["body"])
        self.server.start_again()
        self.bob = XmppUser(f"{self.bob_jid}/interop", "bobpw")
        await self.bob.connect(self.ca, self.server.ip)
        message = await self.bob.next(lambda s: body_of(s) != "", timeout=60)
        self.c.equal(body_of(message), "Are you there, Bob?",
                     f"when {self.name} is back, the message is delivered")
        edit = await self.wait_event("and the notice says so", lambda e: e["content"].get(
            "m.relates_to", {}).get("event_id") == notice["event_id"])
        self.c.check(edit["content"]["m.new_content"]["body"].startswith(f"✓ Delivered to {self.bob_jid}"),
                     "in words", edit["content"]["m.new_content"]["body"])

    async def stopped_mid_send(self) -> None:
        """Causeway stops while Alice's messages are on their way to a server that accepted the
        connection and never answers: once by SIGTERM, once by SIGKILL. When the XMPP server is
        back, each message arrives exactly once, and each has at most one notice."""
        assert self.alice and self.bob
        await self.bob.disconnect()
        self.bob = None
        self.server.stop()
        silent = Silent()
        await silent.start(self.server.ip, 5269)
        sent: dict[str, str] = {}
        try:
            for how in ("SIGTERM", "SIGKILL"):
                body = f"sent as Causeway gets {how}"
                before = silent.accepted
                sent[await self.send({"msgtype": "m.text", "body": body})] = body
                self.c.check(await silent.wait_accepted(before + 1, 15),
                             f"a message is on its way when Causeway gets {how}")
                if how == "SIGTERM":
                    self.c.equal(self.gateway.stop(), 0, "Causeway stops cleanly on SIGTERM")
                    self.gateway.start()
                else:
                    self.gateway.kill()
        finally:
            await silent.stop()
        self.server.start_again()
        self.bob = XmppUser(f"{self.bob_jid}/interop", "bobpw")
        await self.bob.connect(self.ca, self.server.ip)
        self.gateway.start()
        received: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # Once both are in, a little longer for a second copy.
            left = deadline - time.monotonic()
            if len(received) >= len(sent):
                left = min(left, 3)
            try:
                message = await self.bob.next(lambda s: body_of(s).startswith("sent as Causeway"),
                                              timeout=left)
            except (TimeoutError, asyncio.TimeoutError):
                break
            received.append(body_of(message))
        self.c.equal(sorted(received), sorted(sent.values()),
                     "after SIGTERM and SIGKILL mid-send, each message arrives exactly once")
        self.c.equal(received, list(sent.values()), "in the order Alice wrote them")
        status, messages = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/messages?dir=b&limit=100")
        notices: dict[str, int] = {event: 0 for event in sent}
        for event in messages.get("chunk", []) if status == 200 else []:
            content = event.get("content", {})
            answered = content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
            if content.get("msgtype") == "m.notice" and answered in notices:
                notices[answered] += 1
        self.c.check(status == 200 and all(count <= 1 for count in notices.values()),
                     "each has at most one notice", repr(notices))

    async def authentication(self) -> None:
        """Both streams were authenticated as the mode says (read from Causeway's log)."""
        xp.check_authentication(self.c, self.gateway, self.domain, self.name, self.secure,
                                "the whole scenario")

    async def run(self) -> int:
        try:
            ok = await self.c.step(f"start {self.name}, Causeway, Alice and Bob", self.start)
            if ok:
                await self.c.step("Bob writes first", self.first_contact)
                await self.c.step("Alice answers", self.alice_answers, needs=("Bob writes first",))
                await self.c.step("Alice's profile is her vCard", self.alice_profile,
                                  needs=("Alice answers",))
                await self.c.step("XMPP extensions reach Matrix", self.xmpp_extensions,
                                  needs=("Alice answers",))
                await self.c.step("Matrix features reach XMPP", self.matrix_extensions,
                                  needs=("Alice answers",))
                await self.c.step("presence and subscriptions", self.presence,
                                  needs=("Alice answers",))
                await self.c.step("Alice starts a chat from Matrix", self.matrix_starts)
                await self.c.step("Causeway restarts", self.causeway_restarts, needs=("Alice answers",))
                await self.c.step(f"{self.name} stops and comes back", self.server_restarts,
                                  needs=("Alice answers",))
                await self.c.step("Causeway stops while messages are on their way",
                                  self.stopped_mid_send, needs=("Alice answers",))
                await self.c.step("the streams were authenticated as the mode says",
                                  self.authentication)
        finally:
            if self.bob:
                await self.bob.disconnect()
            if self.alice:
                await self.alice.client.close()
            self.gateway.stop()
            self.server.stop()
            if self.c.failures:
                print("--- Causeway log ---\n" + self.gateway.log_tail(120))
                print(f"--- {self.name} log ---\n" + self.server.log_tail())
        return 0 if not self.c.failures else 1


def run_modes(make_server: Callable[[Any, bool], Any], name: str) -> int:
    """Runs the scenario against the server `make_server(work, secure)` makes, in secure mode
    and then in dialback mode, each on a fresh server and Causeway."""
    parser = harness.test_argparser(f"The bridge with a real {name}")
    args = parser.parse_args()
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    logging.basicConfig(level=logging.ERROR)
    results = []
    for secure in (True, False):
        mode = "secure" if secure else "dialback"
        print(f"\n######## {name}, {mode} mode", flush=True)
        checks = harness.Checks(f"bridge-{name.lower()}-{mode}")
        work = harness.make_workdir(f"bridge-{name.lower()}-")
        xp.make_certificates(work)
        asyncio.run(BridgeTest(args, work, make_server(work, secure), secure, checks).run())
        results.append(checks)
    return max(checks.summary() for checks in results)
