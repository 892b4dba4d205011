"""XMPP MUCs as Matrix rooms (portals), with a real Prosody and its MUC (mod_muc).

Prosody serves prosody.test (127.0.0.2) and its MUC service conference.prosody.test; Causeway
serves gw.test (127.0.0.5). Bob (slixmpp) makes lobby@conference.prosody.test and writes in it.
Then @alice:gw.test (matrix-nio) joins `#_xmpp_lobby=40conference.prosody.test:gw.test`:

- the portal room is made once, and her join waits for the MUC: she is an occupant as
  alice@gw.test, and Bob sees her come in;
- Bob is a ghost in the portal, under his nickname, and his earlier message is there (the
  history the MUC sent);
- messages both ways: hers reach Bob from her nickname and are not shown twice to her (the
  MUC's reflection is recognised); his reach her from his ghost; his subject is the topic;
- a MUC that does not exist is `M_NOT_FOUND` (and no room is made), a members-only MUC
  `M_FORBIDDEN` with the MUC's refusal;
- Alice away on Matrix (with a status) is away in the MUC, with that status, and back online
  available; Bob busy in the MUC is unavailable on Matrix, with his status;
- history keeps when it was said; Bob, who made the MUC, owns it: power level 100 in the portal;
- what Alice does to messages reaches the MUC named by its stanza ids (MAM is on): a reply to
  Bob's message, a reaction to it, the retraction of her own message;
- Bob writes to Alice privately in the MUC: his occupant's ghost invites her to a direct chat,
  and her answer reaches him from her occupant;
- Bob renames the MUC: the portal's name follows (status 104, disco#info read again);
- Alice takes another display name in the portal: she has that nickname in the MUC (303);
- Bob makes Alice a moderator (power level 50); she kicks Dave in the portal and the MUC kicks
  him; she bans Dave, which a moderator may not in the MUC, and the MUC refuses: Dave is back in
  the portal and she is told why; Bob kicks Dave in the MUC: the MUC's ghost removes Dave's
  ghost, with Bob's reason;
- Bob makes Alice an owner (100); the power levels she sets for Dave are his roles in the MUC
  (-1 visitor, 50 moderator);
- Dave leaves; Alice invites Dave's ghost into the portal: the MUC invites Dave (mediated), his
  ghost leaves the Matrix invitation saying so, and Dave joins;
- Bob invites Alice to other MUCs, directly (XEP-0249) and through the MUC: each is a Matrix
  invitation to its portal, with Bob's reason, and accepting it joins the MUC;
- a MUC with a password refuses Alice (`M_FORBIDDEN`) until Bob invites her through it: the
  invitation's password lets her in;
- Alice links her own (private) room to a MUC of Bob's with `org.causeway.portal`: she is in
  the MUC, messages go both ways; unlinked, she leaves it;
- Causeway restarts: Alice is in the MUC again and gets all Bob wrote meanwhile (more than the
  MUC's history on joining: from its archive, XEP-0313);
- Prosody restarts and forgets its occupants: Alice's self-ping (XEP-0410) finds out, she joins
  again, and Bob's messages reach her;
- she leaves the portal: Bob sees her leave the MUC.

Run: python interop-tests/test_portal_prosody.py --causeway target/debug/causeway
Needs: prosody and lua-unbound (Debian), openssl, slixmpp, matrix-nio.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from typing import Any
from urllib.parse import quote

import bridge_scenario as bs
import harness
import test_xmpp_prosody as xp
from bench_bridge import leaf

CONFERENCE = "conference.prosody.test"
LOBBY = f"lobby@{CONFERENCE}"
PORTAL = f"#_xmpp_lobby=40{CONFERENCE}:gw.test"
BOB_OCCUPANT = f"@_xmpp_lobby=40{CONFERENCE}/=42ob:gw.test"
DAVE_OCCUPANT = f"@_xmpp_lobby=40{CONFERENCE}/=44ave:gw.test"
LOBBY_GHOST = f"@_xmpp_lobby=40{CONFERENCE}:gw.test"
SID = "urn:xmpp:sid:0"
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"


class MucProsody(xp.Prosody):
    """Prosody with its MUC service, rooms open at once (no locking until configured)."""

    conference = CONFERENCE

    def write_config(self) -> None:
        super().write_config()
        certs = self.dir / "certs"
        for suffix in ("crt", "key"):
            shutil.copy(self.dir / f"{CONFERENCE}.{suffix}", certs / f"{CONFERENCE}.{suffix}")
        self.config.write_text(self.config.read_text() + (
            f'Component "{CONFERENCE}" "muc"\n'
            '    modules_enabled = { "muc_mam" }\n'
            "    muc_room_locking = false\n"
            "    muc_room_default_history_length = 20\n"))


    def start(self) -> None:
        self.write_config()
        self.register("bob", "bobpw")
        self.register("dave", "davepw")
        self.start_again()

    def restart_forgetting_rooms(self) -> None:
        """Prosody keeps its rooms and occupants across a restart; this one loses them."""
        self.stop()
        for data in (self.dir / "data").iterdir():
            if data.name.startswith("conference"):
                shutil.rmtree(data)
        self.start_again()


class PortalCauseway(bs.BridgeCauseway):
    """Causeway as gw.test, reaching the MUC service (`conference`) on the XMPP server's
    address too; its members of MUCs self-ping every 2 seconds."""

    conference = CONFERENCE

    def config_text(self) -> str:
        text = super().config_text()
        assert "\n[xmpp]\n" in text
        return text.replace("\n[xmpp]\n", "\n[xmpp]\nmuc_self_ping_secs = 2\n", 1) + (
            f'\n[[xmpp.routes]]\ndomain = "{self.conference}"\naddress = "{self.peer_ip}:5269"\n')


class PortalTest:
    """The scenario against `server`, an XMPP server (Prosody or ejabberd) with its MUC service
    on `server.conference`; `server.restart_forgetting_rooms()` restarts it without its rooms."""

    def __init__(self, args: Any, work: Any, server: Any) -> None:
        self.args = args
        self.work = work
        self.ca = str(work / "ca.crt")
        self.server = server
        self.c = harness.Checks(f"portal-{server.name.lower()}")
        self.conference = server.conference
        self.lobby = f"lobby@{self.conference}"
        self.portal = f"#_xmpp_lobby=40{self.conference}:gw.test"
        self.bob_occupant = f"@_xmpp_lobby=40{self.conference}/=42ob:gw.test"
        self.dave_occupant = f"@_xmpp_lobby=40{self.conference}/=44ave:gw.test"
        self.lobby_ghost = f"@_xmpp_lobby=40{self.conference}:gw.test"
        self.gateway = PortalCauseway(args.causeway, work, direct_tls=False, dialback=False,
                                      peer_domain=server.domain, peer_ip=server.ip)
        self.gateway.conference = self.conference
        self.alice: bs.Matrix | None = None
        self.bob: bs.XmppUser | None = None
        self.dave: bs.XmppUser | None = None
        self.room = ""
        # The MUC's stanza id of Alice's first message, as Bob got it.
        self.alice_first = ("", "")

    async def run(self) -> None:
        try:
            await self.start()
            await self.alice_joins()
            await self.messages()
            await self.presence()
            await self.relations()
            await self.private()
            await self.renamed()
            await self.new_nick()
            await self.moderation()
            await self.power_from_matrix()
            await self.invite_from_matrix()
            await self.invitations()
            await self.plumbing()
            await self.refusals()
            await self.restart()
            await self.server_restart()
            await self.leave()
        except harness.StepFailed:
            pass
        except Exception as error:  # noqa: BLE001 - any failure is reported with the logs
            self.c.check(False, f"the scenario ran to its end ({type(error).__name__}: {error})",
                         "Causeway:\n" + self.gateway.log_tail(60) + f"\n{self.server.name}:\n"
                         + self.server.log_tail(30))
        finally:
            for user in (self.bob, self.dave):
                if user:
                    await user.disconnect()
            if self.alice:
                await self.alice.client.close()
            self.gateway.stop()
            self.server.stop()

    async def start(self) -> None:
        self.server.start()
        self.gateway.start()
        self.alice = bs.Matrix(self.gateway.base_url)
        response = await self.alice.client.register("alice", bs.PASSWORD, device_name="interop")
        self.c.require(getattr(response, "user_id", None) == bs.ALICE, "Alice registers on Causeway",
                       str(response))
        await self.alice.sync_until(lambda _r: True)
        self.bob = bs.XmppUser(f"bob@{self.server.domain}/interop", "bobpw")
        await self.bob.connect(self.ca, self.server.ip)
        self.bob.send(f"<presence to='{self.lobby}/Bob'><x xmlns='{MUC}'/></presence>")
        await self.bob.presence(lambda s: str(s["from"]) == f"{self.lobby}/Bob")
        self.bob.send(f"<message to='{self.lobby}' type='groupchat' id='b0'><body>Before Alice came</body></message>")
        await self.bob.next(lambda s: bs.body_of(s) == "Before Alice came")
        self.c.check(True, f"Bob makes {self.lobby} on {self.server.name} and writes in it")

    async def alice_joins(self) -> None:
        assert self.alice and self.bob
        joining_at = time.time() * 1000
        status, joined = await self.alice.raw("POST", f"/_matrix/client/v3/join/{quote(self.portal)}", {})
        self.c.require(status == 200, f"Alice joins the portal {self.portal}",
                       f"{status} {joined}\n{self.gateway.log_tail(30)}")
        self.room = joined["room_id"]
        seen = await self.bob.presence(lambda s: str(s["from"]).startswith(f"{self.lobby}/")
                                       and str(s["from"]) != f"{self.lobby}/Bob")
        item = seen.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
        self.c.equal(item.get("jid", "").split("/")[0] if item is not None else None, "alice@gw.test",
                     "Bob sees Alice come into the MUC as alice@gw.test")
        self.alice_nick = str(seen["from"].resource)
        status, alias = await self.alice.raw("GET", f"/_matrix/client/v3/directory/room/{quote(self.portal)}")
        self.c.equal(alias.get("room_id"), self.room, "the alias names the portal")

        async def bob_in_portal() -> bool:
            status, member = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.member/"
                f"{quote(self.bob_occupant, safe='')}")
            return status == 200 and member.get("membership") == "join" and member.get("displayname") == "Bob"

        self.c.check(await harness.eventually(bob_in_portal, 30), "Bob is a ghost in the portal, named Bob")
        history = await self.wait_event(lambda e: e["sender"] == self.bob_occupant
                                        and e["content"].get("body") == "Before Alice came")
        self.c.check(history is not None, "the MUC's history is in the portal")
        self.c.check(history is not None and history["origin_server_ts"] < joining_at,
                     "the history keeps when it was said (before Alice joined)", repr(history))
        status, levels = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.power_levels/")
        self.c.equal(levels.get("users", {}).get(self.bob_occupant), 100,
                     "Bob owns the MUC: power level 100 in the portal", repr(levels))

    async def wait_event(self, match: Any, timeout: float = 30) -> dict[str, Any] | None:
        assert self.alice
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, page = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/messages?dir=b&limit=50")
            for event in page.get("chunk", []):
                if match(event):
                    return event
            await asyncio.sleep(0.3)
        return None

    async def messages(self) -> None:
        assert self.alice and self.bob
        sent = await self.alice.client.room_send(self.room, "m.room.message",
                                                 {"msgtype": "m.text", "body": "Hello from Matrix"})
        message = await self.bob.next(lambda s: bs.body_of(s) == "Hello from Matrix")
        self.alice_first = (getattr(sent, "event_id", ""), stanza_id(message, self.lobby))
        self.c.equal((str(message["from"]), message["type"]), (f"{self.lobby}/{self.alice_nick}", "groupchat"),
                     "Alice's message reaches Bob in the MUC from her nickname")
        self.bob.send(f"<message to='{self.lobby}' type='groupchat' id='b1'><body>Hello *Alice*</body></message>")
        event = await self.wait_event(lambda e: e["sender"] == self.bob_occupant
                                      and e["content"].get("body") == "Hello *Alice*")
        self.c.check(event is not None and event["content"].get("formatted_body") == "Hello <strong>Alice</strong>",
                     "Bob's message reaches Alice from his ghost, styled", repr(event))
        status, page = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/messages?dir=b&limit=50")
        mine = [e for e in page.get("chunk", []) if e["content"].get("body") == "Hello from Matrix"]
        self.c.equal(len(mine), 1, "Alice's message is not shown twice (the reflection is recognised)")
        self.bob.send(f"<message to='{self.lobby}' type='groupchat' id='b2'><subject>Portal talk</subject></message>")

        async def topic() -> bool:
            status, content = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.topic/")
            return status == 200 and content.get("topic") == "Portal talk"

        self.c.check(await harness.eventually(topic, 30), "Bob's subject is the portal's topic")

    async def presence(self) -> None:
        """Alice's Matrix presence is her occupant's show and status; Bob's are his ghost's."""
        assert self.alice and self.bob
        presence_path = f"/_matrix/client/v3/presence/{quote(bs.ALICE, safe='')}/status"
        status, answer = await self.alice.raw("PUT", presence_path,
                                              {"presence": "unavailable", "status_msg": "lunch"})
        self.c.require(status == 200, "Alice says she is away", f"{status} {answer}")
        seen = await self.bob.presence(lambda s: str(s["from"]) == f"{self.lobby}/{self.alice_nick}"
                                       and s["show"] == "away")
        self.c.equal((seen["show"], seen["status"]), ("away", "lunch"),
                     "Alice away on Matrix is away in the MUC, with her status", str(seen))
        self.bob.send(f"<presence to='{self.lobby}/Bob'><show>dnd</show><status>busy</status></presence>")
        bob_path = f"/_matrix/client/v3/presence/{quote(self.bob_occupant, safe='')}/status"

        async def bob_busy() -> bool:
            status, presence = await self.alice.raw("GET", bob_path)
            return status == 200 and (presence.get("presence"), presence.get("status_msg")) == (
                "unavailable", "busy")

        self.c.check(await harness.eventually(bob_busy, 30),
                     "Bob busy in the MUC is unavailable on Matrix, with his status")
        self.bob.send(f"<presence to='{self.lobby}/Bob'/>")
        await self.alice.raw("PUT", presence_path, {"presence": "online", "status_msg": ""})
        back = await self.bob.presence(lambda s: str(s["from"]) == f"{self.lobby}/{self.alice_nick}"
                                       and s["show"] in ("", "chat"))
        self.c.equal((back["show"], back["status"]), ("", ""), "back online, Alice is available in the MUC",
                     str(back))

    async def relations(self) -> None:
        assert self.alice and self.bob
        self.bob.send(f"<message to='{self.lobby}' type='groupchat' id='b5'><body>React to this</body></message>")
        reflected = await self.bob.next(lambda s: bs.body_of(s) == "React to this")
        bobs_id = stanza_id(reflected, self.lobby)
        self.c.check(bobs_id != "", "The MUC gives messages stanza ids (MAM)", str(reflected))
        event = await self.wait_event(lambda e: e["content"].get("body") == "React to this")
        self.c.require(event is not None, "Bob's message is in the portal")
        await self.alice.client.room_send(self.room, "m.room.message", {
            "msgtype": "m.text", "body": "Reacting now",
            "m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}}})
        reply = await self.bob.next(lambda s: "Reacting now" in bs.body_of(s))
        reply_to = reply.xml.find("{urn:xmpp:reply:0}reply")
        self.c.equal((reply_to.get("id"), reply_to.get("to")) if reply_to is not None else None,
                     (bobs_id, f"{self.lobby}/Bob"),
                     "Alice's reply names Bob's message by the MUC's stanza id (XEP-0461)", str(reply))
        await self.alice.client.room_send(self.room, "m.reaction", {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": event["event_id"], "key": "👍"}})
        reacted = await self.bob.next(lambda s: s.xml.find("{urn:xmpp:reactions:0}reactions") is not None)
        reactions = reacted.xml.find("{urn:xmpp:reactions:0}reactions")
        self.c.equal((reactions.get("id"), [r.text for r in reactions]), (bobs_id, ["👍"]),
                     "Alice's reaction reaches the MUC on Bob's message (XEP-0444)", str(reacted))
        event_id, first_id = self.alice_first
        await self.alice.client.room_redact(self.room, event_id, "typo")
        retracted = await self.bob.next(
            lambda s: s.xml.find("{urn:xmpp:message-retract:1}retract") is not None)
        retract = retracted.xml.find("{urn:xmpp:message-retract:1}retract")
        self.c.equal(retract.get("id"), first_id,
                     "Alice's redaction retracts her message in the MUC by its stanza id (XEP-0424)",
                     str(retracted))

    async def private(self) -> None:
        assert self.alice and self.bob
        self.bob.send(f"<message to='{self.lobby}/{self.alice_nick}' type='chat' id='pm1'>"
                      f"<body>Just between us</body><x xmlns='{MUC_USER}'/></message>")
        room = await self.alice.sync_until(lambda r: next(iter(r.rooms.invite), None))
        self.c.require(room is not None, "Bob's private message in the MUC: Alice is invited to a direct chat")
        status, _ = await self.alice.raw("POST", f"/_matrix/client/v3/rooms/{room}/join", {})
        deadline = time.monotonic() + 30
        said = None
        while said is None and time.monotonic() < deadline:
            status, page = await self.alice.raw("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20")
            said = next((e for e in page.get("chunk", []) if e["content"].get("body") == "Just between us"), None)
            await asyncio.sleep(0.3)
        self.c.equal(said["sender"] if said else None, self.bob_occupant,
                     "the private message is in it, from Bob's occupant's ghost")
        await self.alice.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "Only you"})
        answer = await self.bob.next(lambda s: bs.body_of(s) == "Only you")
        self.c.equal((str(answer["from"]), answer["type"]), (f"{self.lobby}/{self.alice_nick}", "chat"),
                     "Alice's answer reaches Bob privately, from her occupant")

    def configure(self, muc: str, fields: dict[str, str]) -> None:
        """Bob, an owner of `muc`, submits its configuration form (`muc#roomconfig_` fields)."""
        assert self.bob
        values = "".join(f"<field var='muc#roomconfig_{name}'><value>{value}</value></field>"
                         for name, value in fields.items())
        self.bob.send(
            f"<iq type='set' id='cfg-{time.monotonic_ns()}' to='{muc}'>"
            "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
            f"{values}</x></query></iq>")

    async def renamed(self) -> None:
        assert self.alice and self.bob
        self.configure(self.lobby, {"roomname": "Portal Lobby"})

        async def named() -> bool:
            status, content = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.name/")
            return status == 200 and content.get("name") == "Portal Lobby"

        self.c.check(await harness.eventually(named, 30), "Bob renames the MUC: the portal is renamed")

    async def new_nick(self) -> None:
        assert self.alice and self.bob
        status, _ = await self.alice.raw(
            "PUT", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.member/{quote(bs.ALICE, safe='')}",
            {"membership": "join", "displayname": "Alice Liddell"})
        changed = await self.bob.presence(lambda s: str(s["from"]) == f"{self.lobby}/{self.alice_nick}"
                                          and s["type"] == "unavailable")
        codes = [status.get("code") for status in changed.xml.iter(f"{{{MUC_USER}}}status")]
        item = changed.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
        self.c.check("303" in codes and item is not None and item.get("nick") == "Alice Liddell",
                     "Alice's new display name is her new nickname in the MUC (303)", str(changed))
        self.alice_nick = "Alice Liddell"
        await self.bob.presence(lambda s: str(s["from"]) == f"{self.lobby}/{self.alice_nick}")
        await self.alice.client.room_send(self.room, "m.room.message", {"msgtype": "m.text", "body": "Renamed"})
        said = await self.bob.next(lambda s: bs.body_of(s) == "Renamed")
        self.c.equal(str(said["from"]), f"{self.lobby}/Alice Liddell", "and she writes under it")
        await asyncio.sleep(1)
        status, page = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/messages?dir=b&limit=20")
        copies = [e["sender"] for e in page.get("chunk", []) if e["content"].get("body") == "Renamed"]
        self.c.equal(copies, [bs.ALICE], "her message is not shown again from the new nickname")

    async def member_is(self, user: str, membership: str, sender: str | None = None) -> dict[str, Any] | None:
        """The membership event of `user` once it is `membership` (and by `sender`)."""
        assert self.alice

        async def found() -> dict[str, Any] | None:
            status, member = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.member/{quote(user, safe='')}")
            if status == 200 and member.get("membership") == membership:
                return member
            return None

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            member = await found()
            if member is not None:
                if sender is None:
                    return member
                event = await self.wait_event(
                    lambda e: e.get("state_key") == user and e["content"].get("membership") == membership
                    and e["sender"] == sender, 2)
                if event is not None:
                    return event["content"]
            await asyncio.sleep(0.3)
        return None

    async def moderation(self) -> None:
        assert self.alice and self.bob
        self.bob.send(f"<iq type='set' id='mod1' to='{self.lobby}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                      f"<item nick='{self.alice_nick}' role='moderator'/></query></iq>")

        async def alice_moderates() -> bool:
            status, levels = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.power_levels/")
            return levels.get("users", {}).get(bs.ALICE) == 50

        self.c.check(await harness.eventually(alice_moderates, 30),
                     "Bob makes Alice a moderator: power level 50 in the portal")
        self.dave = bs.XmppUser(f"dave@{self.server.domain}/interop", "davepw")
        await self.dave.connect(self.ca, self.server.ip)
        self.dave.send(f"<presence to='{self.lobby}/Dave'><x xmlns='{MUC}'/></presence>")
        await self.dave.presence(lambda s: str(s["from"]) == f"{self.lobby}/Dave")
        self.c.check(await self.member_is(self.dave_occupant, "join") is not None, "Dave is a ghost in the portal")
        status, _ = await self.alice.raw("POST", f"/_matrix/client/v3/rooms/{self.room}/kick",
                                         {"user_id": self.dave_occupant, "reason": "off topic"})
        kicked = await self.dave.presence(lambda s: str(s["from"]) == f"{self.lobby}/Dave" and s["type"] == "unavailable")
        codes = [status.get("code") for status in kicked.xml.iter(f"{{{MUC_USER}}}status")]
        reason = kicked.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item/{{{MUC_USER}}}reason")
        self.c.check(status == 200 and "307" in codes and reason is not None and reason.text == "off topic",
                     "Alice kicks Dave in the portal: the MUC kicks him, with her reason", str(kicked))
        # A moderator may kick but not ban (only admins change affiliations): Alice's ban of
        # Dave, which Matrix allows her, is refused by the MUC.
        self.dave.send(f"<presence to='{self.lobby}/Dave'><x xmlns='{MUC}'/></presence>")
        await self.dave.presence(lambda s: str(s["from"]) == f"{self.lobby}/Dave" and s["type"] != "unavailable")
        await self.member_is(self.dave_occupant, "join")
        status, _ = await self.alice.raw("POST", f"/_matrix/client/v3/rooms/{self.room}/ban",
                                         {"user_id": self.dave_occupant, "reason": "go away"})
        told = await self.wait_event(lambda e: e["sender"] == self.lobby_ghost
                                     and "did not do this" in e["content"].get("body", ""))
        self.c.check(status == 200 and told is not None and told["content"].get("msgtype") == "m.notice",
                     "Alice bans Dave in the portal: the MUC refuses, and she is told why", repr(told))
        back = await self.member_is(self.dave_occupant, "join", self.dave_occupant)
        self.c.check(back is not None, "Dave is back in the portal, as he still is in the MUC")
        self.bob.send(f"<iq type='set' id='kick1' to='{self.lobby}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                      "<item nick='Dave' role='none'><reason>enough</reason></item></query></iq>")
        gone = await self.member_is(self.dave_occupant, "leave", self.lobby_ghost)
        self.c.check(gone is not None and "enough" in gone.get("reason", ""),
                     "Bob kicks Dave in the MUC: the MUC's ghost removes Dave's ghost, with Bob's reason",
                     repr(gone))

    async def invited_to(self, alias: str) -> tuple[str, str] | None:
        """The portal Alice is invited to by its alias, and the invitation's reason."""
        assert self.alice
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, resolved = await self.alice.raw("GET", f"/_matrix/client/v3/directory/room/{quote(alias)}")
            if status == 200:
                room = resolved["room_id"]
                status, member = await self.alice.raw(
                    "GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.member/{quote(bs.ALICE, safe='')}")
                if status == 200 and member.get("membership") == "invite":
                    return room, member.get("reason", "")
                response = await self.alice.client.sync(timeout=0, since=self.alice.since)
                invite = getattr(response, "rooms", None) and response.rooms.invite.get(room)
                if invite:
                    for event in invite.invite_state:
                        if getattr(event, "membership", None) == "invite":
                            return room, (event.content or {}).get("reason", "")
            await asyncio.sleep(0.3)
        return None

    async def invite_from_matrix(self) -> None:
        """Alice invites Dave's ghost into the portal: the MUC invites Dave, who joins."""
        assert self.alice and self.dave
        self.dave.send(f"<presence to='{self.lobby}/Dave' type='unavailable'/>")
        self.c.check(await self.member_is(self.dave_occupant, "leave") is not None,
                     "Dave leaves the MUC: his occupant's ghost leaves the portal")
        dave = f"@_xmpp_dave=40{self.server.domain}:gw.test"
        status, body = await self.alice.raw("POST", f"/_matrix/client/v3/rooms/{self.room}/invite",
                                            {"user_id": dave, "reason": "come back"})
        self.c.require(status == 200, "Alice invites Dave's ghost into the portal", repr(body))
        invited = await self.dave.next(
            lambda s: s.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite") is not None)
        invite = invited.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
        reason = invite.find(f"{{{MUC_USER}}}reason")
        self.c.check(str(invited["from"]) == self.lobby
                     # (her JID, or her occupant's where the room hides JIDs)
                     and invite.get("from", "").split("/")[0] in ("alice@gw.test", self.lobby)
                     and reason is not None and reason.text == "come back",
                     "the MUC invites Dave for Alice, with her reason (XEP-0045 §7.8.2)", str(invited))
        declined = await self.member_is(dave, "leave", dave)
        self.c.check(declined is not None and self.lobby in declined.get("reason", ""),
                     "Dave's ghost leaves the Matrix invitation, saying the MUC invited him", repr(declined))
        self.dave.send(f"<presence to='{self.lobby}/Dave'><x xmlns='{MUC}'/></presence>")
        await self.dave.presence(lambda s: str(s["from"]) == f"{self.lobby}/Dave" and s["type"] != "unavailable")
        self.c.check(await self.member_is(self.dave_occupant, "join") is not None,
                     "Dave accepts: his occupant's ghost is in the portal")

    async def set_level(self, user: str, level: int) -> str:
        """Alice sets `user`'s power level in the portal; the event's id."""
        assert self.alice
        path = f"/_matrix/client/v3/rooms/{self.room}/state/m.room.power_levels/"
        status, levels = await self.alice.raw("GET", path)
        levels.setdefault("users", {})[user] = level
        status, sent = await self.alice.raw("PUT", path, levels)
        self.c.require(status == 200, f"Alice sets {user}'s power level to {level}", repr(sent))
        return sent["event_id"]

    async def power_from_matrix(self) -> None:
        """Power levels Alice sets are roles Bob sees in the MUC."""
        assert self.alice and self.bob
        self.bob.send(f"<iq type='set' id='own1' to='{self.lobby}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
                      "<item affiliation='owner' jid='alice@gw.test'/></query></iq>")

        async def alice_owns() -> bool:
            status, levels = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.power_levels/")
            return levels.get("users", {}).get(bs.ALICE) == 100

        self.c.check(await harness.eventually(alice_owns, 30),
                     "Bob makes Alice an owner: power level 100 in the portal")
        self.dave.send(f"<presence to='{self.lobby}/Dave'><x xmlns='{MUC}'/></presence>")
        await self.dave.presence(lambda s: str(s["from"]) == f"{self.lobby}/Dave" and s["type"] != "unavailable")
        self.c.check(await self.member_is(self.dave_occupant, "join") is not None,
                     "Dave comes back: his occupant's ghost is in the portal")

        def role_of_dave(role: str) -> Any:
            def match(s: Any) -> bool:
                item = s.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
                return (str(s["from"]) == f"{self.lobby}/Dave" and s["type"] != "unavailable"
                        and item is not None and item.get("role") == role)
            return match

        await self.set_level(self.dave_occupant, -1)
        silenced = await self.bob.presence(role_of_dave("visitor"))
        self.c.check(silenced is not None, "Alice sets Dave's level to -1: the MUC makes him a visitor")
        await self.set_level(self.dave_occupant, 50)
        promoted = await self.bob.presence(role_of_dave("moderator"))
        self.c.check(promoted is not None, "she sets it to 50: the MUC makes him a moderator")

    async def invitations(self) -> None:
        assert self.alice and self.bob
        for room in ("direct", "mediated"):
            self.bob.send(f"<presence to='{room}@{self.conference}/Bob'><x xmlns='{MUC}'/></presence>")
            await self.bob.presence(lambda s, room=room: str(s["from"]) == f"{room}@{self.conference}/Bob")
        self.bob.send(f"<message to='alice@gw.test'><x xmlns='jabber:x:conference' "
                      f"jid='direct@{self.conference}' reason='come over'/></message>")
        invited = await self.invited_to(f"#_xmpp_direct=40{self.conference}:gw.test")
        self.c.equal(invited[1] if invited else None, f"bob@{self.server.domain} invites you: come over",
                     "Bob's direct invitation (XEP-0249) is an invitation to the portal, with his reason")
        self.bob.send(f"<message to='mediated@{self.conference}'><x xmlns='{MUC_USER}'>"
                      "<invite to='alice@gw.test'><reason>join us</reason></invite></x></message>")
        mediated = await self.invited_to(f"#_xmpp_mediated=40{self.conference}:gw.test")
        # Prosody's mediated invitation does not say who invites (its `from` is empty): the
        # room is named as the inviter.
        self.c.check(mediated is not None and mediated[1].endswith("invites you: join us"),
                     "an invitation through the MUC is an invitation to the portal", repr(mediated))
        if mediated:
            status, _ = await self.alice.raw("POST", f"/_matrix/client/v3/rooms/{mediated[0]}/join", {})
            came = await self.bob.presence(lambda s: str(s["from"]).startswith(f"mediated@{self.conference}/")
                                           and str(s["from"]) != f"mediated@{self.conference}/Bob")
            self.c.check(status == 200 and came is not None,
                         "Alice accepts: she joins the portal and Bob sees her in the MUC")
        await self.password_protected()

    async def password_protected(self) -> None:
        """A MUC with a password: the MUC's invitation gives it, and Alice's join uses it."""
        assert self.alice and self.bob
        muc = f"secret@{self.conference}"
        self.bob.send(f"<presence to='{muc}/Bob'><x xmlns='{MUC}'/></presence>")
        await self.bob.presence(lambda s: str(s["from"]) == f"{muc}/Bob")
        self.configure(muc, {"passwordprotectedroom": "1", "roomsecret": "open sesame"})
        await asyncio.sleep(1)
        status, body = await self.alice.raw(
            "POST", f"/_matrix/client/v3/join/{quote(f'#_xmpp_secret=40{self.conference}:gw.test')}", {})
        self.c.equal((status, body.get("errcode")), (403, "M_FORBIDDEN"),
                     "a MUC with a password, without it: M_FORBIDDEN", repr(body))
        self.bob.send(f"<message to='{muc}'><x xmlns='{MUC_USER}'>"
                      "<invite to='alice@gw.test'><reason>psst</reason></invite></x></message>")
        invited = await self.invited_to(f"#_xmpp_secret=40{self.conference}:gw.test")
        self.c.require(invited is not None, "Bob invites Alice to it through the MUC")
        status, body = await self.alice.raw("POST", f"/_matrix/client/v3/rooms/{invited[0]}/join", {})
        came = await self.bob.presence(lambda s: str(s["from"]).startswith(f"{muc}/")
                                       and str(s["from"]) != f"{muc}/Bob" and s["type"] != "unavailable")
        self.c.check(status == 200 and came is not None,
                     "the invitation's password lets her in: she joins the portal and the MUC", repr(body))

    async def plumbing(self) -> None:
        assert self.alice and self.bob
        muc = f"plumbed@{self.conference}"
        self.bob.send(f"<presence to='{muc}/Bob'><x xmlns='{MUC}'/></presence>")
        await self.bob.presence(lambda s: str(s["from"]) == f"{muc}/Bob")
        status, created = await self.alice.raw("POST", "/_matrix/client/v3/createRoom",
                                               {"preset": "private_chat", "name": "Alice's room"})
        self.c.require(status == 200, "Alice makes a private room", repr(created))
        room = created["room_id"]
        status, _ = await self.alice.raw(
            "PUT", f"/_matrix/client/v3/rooms/{room}/state/org.causeway.portal/", {"muc": muc})
        came = await self.bob.presence(lambda s: str(s["from"]).startswith(f"{muc}/")
                                       and str(s["from"]) != f"{muc}/Bob")
        item = came.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
        self.c.equal(item.get("jid", "").split("/")[0] if item is not None else None, "alice@gw.test",
                     "Alice links her room to Bob's MUC: she is in the MUC as alice@gw.test")
        nick = str(came["from"].resource)
        self.bob.send(f"<message to='{muc}' type='groupchat' id='pl1'><body>Linked at last</body></message>")
        deadline = time.monotonic() + 30
        heard = None
        while heard is None and time.monotonic() < deadline:
            status, page = await self.alice.raw("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=30")
            heard = next((e for e in page.get("chunk", []) if e["content"].get("body") == "Linked at last"), None)
            await asyncio.sleep(0.3)
        self.c.check(heard is not None and heard["sender"] == f"@_xmpp_plumbed=40{self.conference}/=42ob:gw.test",
                     "Bob's message is in her room, from his occupant's ghost", repr(heard))
        await self.alice.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "From my room"})
        said = await self.bob.next(lambda s: bs.body_of(s) == "From my room")
        self.c.equal(str(said["from"]), f"{muc}/{nick}", "her message reaches Bob in the MUC")
        await self.alice.raw("PUT", f"/_matrix/client/v3/rooms/{room}/state/org.causeway.portal/", {})
        gone = await self.bob.presence(lambda s: str(s["from"]) == f"{muc}/{nick}" and s["type"] == "unavailable")
        self.c.check(gone is not None, "she unlinks it: she leaves the MUC")

    async def refusals(self) -> None:
        assert self.alice and self.bob
        status, body = await self.alice.raw(
            "POST", f"/_matrix/client/v3/join/{quote(f'#_xmpp_nosuch=40{self.conference}:gw.test')}", {})
        self.c.equal((status, body.get("errcode")), (404, "M_NOT_FOUND"),
                     "a MUC that does not exist: M_NOT_FOUND", repr(body))
        # Bob makes a members-only room.
        self.bob.send(f"<presence to='private@{self.conference}/Bob'><x xmlns='{MUC}'/></presence>")
        await self.bob.presence(lambda s: str(s["from"]) == f"private@{self.conference}/Bob")
        self.configure(f"private@{self.conference}", {"membersonly": "1"})
        await asyncio.sleep(1)
        status, body = await self.alice.raw(
            "POST", f"/_matrix/client/v3/join/{quote(f'#_xmpp_private=40{self.conference}:gw.test')}", {})
        self.c.equal((status, body.get("errcode")), (403, "M_FORBIDDEN"),
                     "a members-only MUC: M_FORBIDDEN, with the MUC's refusal", repr(body))

    async def restart(self) -> None:
        assert self.alice and self.bob
        self.gateway.stop()
        # More than the MUC's history on joining (20): the rest comes from its archive.
        for n in range(25):
            self.bob.send(f"<message to='{self.lobby}' type='groupchat' id='away{n}'>"
                          f"<body>While you were away {n}</body></message>")
        await self.bob.next(lambda s: bs.body_of(s) == "While you were away 24")
        self.gateway.start()
        event = await self.wait_event(lambda e: e["content"].get("body") == "While you were away 24", 45)
        self.c.check(event is not None and event["sender"] == self.bob_occupant,
                     "after a restart, Alice is in the MUC again and gets what she missed")
        status, page = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/messages?dir=b&limit=60")
        missed = [e["content"].get("body") for e in reversed(page.get("chunk", []))
                  if e["content"].get("body", "").startswith("While you were away")]
        self.c.equal(missed, [f"While you were away {n}" for n in range(25)],
                     "all 25 missed messages, once each and in order (from the MUC's archive)")

    async def server_restart(self) -> None:
        assert self.alice and self.bob
        await self.bob.disconnect()
        self.server.restart_forgetting_rooms()
        self.bob = bs.XmppUser(f"bob@{self.server.domain}/interop", "bobpw")
        await self.bob.connect(self.ca, self.server.ip)
        self.bob.send(f"<presence to='{self.lobby}/Bob'><x xmlns='{MUC}'/></presence>")
        alice = f"{self.lobby}/{self.alice_nick}"
        seen = []

        def bob_in(s: Any) -> bool:
            if str(s["from"]) == alice and s["type"] != "unavailable":
                seen.append(s)
            return str(s["from"]) == f"{self.lobby}/Bob"

        await self.bob.presence(bob_in)
        if not seen:
            seen.append(await self.bob.presence(
                lambda s: str(s["from"]) == alice and s["type"] != "unavailable", 45))
        self.c.check(bool(seen), f"{self.server.name} restarts and forgets Alice: her self-ping finds out and she joins again")
        self.bob.send(f"<message to='{self.lobby}' type='groupchat' id='b6'><body>After the restart</body></message>")
        event = await self.wait_event(lambda e: e["content"].get("body") == "After the restart")
        self.c.check(event is not None, "Bob's messages reach Alice again")

    async def leave(self) -> None:
        assert self.alice and self.bob
        await self.alice.client.room_leave(self.room)
        gone = await self.bob.presence(lambda s: str(s["from"]) == f"{self.lobby}/{self.alice_nick}"
                                       and s["type"] == "unavailable")
        self.c.check(gone is not None, "Alice leaves the portal: Bob sees her leave the MUC")


def stanza_id(message: Any, room: str) -> str:
    """The stanza id `room` gave a message Bob got."""
    for element in message.xml.findall(f"{{{SID}}}stanza-id"):
        if element.get("by") == room:
            return element.get("id", "")
    return ""


def main() -> int:
    if not shutil.which("prosody") or not shutil.which("openssl"):
        print("FAIL: prosody and openssl are needed (scripts/test-all installs them)")
        return 1
    parser = harness.test_argparser("XMPP MUCs as Matrix rooms with a real Prosody")
    args = parser.parse_args()
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    logging.basicConfig(level=logging.ERROR)
    work = harness.make_workdir("portal-prosody-")
    xp.make_certificates(work)
    leaf(work, CONFERENCE)
    test = PortalTest(args, work, MucProsody(work, secure=True))
    asyncio.run(test.run())
    return test.c.summary()


if __name__ == "__main__":
    sys.exit(main())
