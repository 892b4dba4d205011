"""Matrix rooms as MUCs, with a real Prosody (Debian package) and slixmpp occupants.

Prosody serves prosody.test (127.0.0.2); Causeway gw.test (127.0.0.5) with its MUC service on
muc.gw.test. @alice:gw.test (matrix-nio) has the public room #lobby:gw.test. Then:

- Bob (slixmpp on Prosody, XEP-0045 through its plugin) joins lobby@muc.gw.test as "Bob" asking
  for 2 messages of history: he gets Alice as an occupant (owner, her real JID), his own
  presence with status 110, the last two messages with their delay and stanza-id, the subject.
  Alice sees his ghost join under the name "Bob".
- Carol joins too; Bob and Carol see each other.
- Messages both ways: Bob's message reaches Alice as his ghost's (styled), and comes back to
  him as the room's reflection (his id, the event as stanza-id) and to Carol; Alice's reaches
  both. Alice's topic is the subject. A reply by stanza-id, a correction and a retraction of
  Bob's reach Matrix.
- Presence: Bob's show and status reach Carol and are his ghost's Matrix presence; Alice's
  Matrix presence is her occupant's show and status for both.
- Errors: a room that does not exist (item-not-found), a taken nickname (conflict), an
  invite-only room (registration-required), writing to a room one is not in (not-acceptable).
- Bob changes his nickname (303); Alice kicks Carol (307) and both occupants see it; Bob
  leaves and his ghost leaves the room.
- Causeway restarts: Bob is still an occupant and gets the next message.

Run: python interop-tests/test_muc_prosody.py --causeway target/debug/causeway
Needs: prosody and lua-unbound (Debian), openssl, slixmpp, matrix-nio.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from typing import Any

import bridge_scenario as bs
import harness
import test_xmpp_prosody as xp

MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
ROOM = "lobby@muc.gw.test"


class Occupant(bs.XmppUser):
    """A slixmpp client that also keeps the presence stanzas rooms send it, in order."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import MatchXPath

        self.room_presences: asyncio.Queue = asyncio.Queue()
        self.client.register_handler(Callback(
            "room presence", MatchXPath("{jabber:client}presence"),
            lambda stanza: self.room_presences.put_nowait(stanza)
            if stanza["from"].domain == "muc.gw.test" else None))

    async def presence(self, accept: Any = lambda _s: True, timeout: float = 20) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no such presence arrived")
            stanza = await asyncio.wait_for(self.room_presences.get(), left)
            if accept(stanza):
                return stanza

    def join(self, room: str, nick: str, history: str = "") -> None:
        self.send(f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{history}</x></presence>")

    async def join_error(self, room: str, nick: str) -> str:
        self.join(room, nick)
        stanza = await self.presence(lambda s: s["type"] == "error"
                                     and str(s["from"].bare) == room)
        return stanza["error"]["condition"]


def statuses(stanza: Any) -> set[str]:
    x = stanza.xml.find(f"{{{MUC_USER}}}x")
    if x is None:
        return set()
    return {status.get("code") for status in x.findall(f"{{{MUC_USER}}}status")}


def item(stanza: Any) -> dict[str, str]:
    found = stanza.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    return dict(found.attrib) if found is not None else {}


class MucTest:
    """The scenario with Bob and Carol on `server`, an XMPP server (Prosody or ejabberd)."""

    def __init__(self, args: Any, work: Any, server: Any) -> None:
        self.args = args
        self.work = work
        self.ca = str(work / "ca.crt")
        self.server = server
        self.c = harness.Checks(f"muc-{server.name.lower()}")
        self.bob_ghost = f"@_xmpp_bob=40{server.domain}:gw.test"
        self.carol_ghost = f"@_xmpp_carol=40{server.domain}:gw.test"
        self.gateway = bs.BridgeCauseway(args.causeway, work, direct_tls=False, dialback=False,
                                         peer_domain=server.domain, peer_ip=server.ip)
        self.alice: bs.Matrix | None = None
        self.bob: Occupant | None = None
        self.carol: Occupant | None = None
        self.room = ""

    async def run(self) -> None:
        try:
            await self.start()
            await self.bob_joins()
            await self.carol_joins()
            await self.messages()
            await self.presence()
            await self.errors()
            await self.nick_kick_leave()
            await self.restart()
        except harness.StepFailed:
            pass
        except Exception as error:  # noqa: BLE001 - any failure is reported with the logs
            self.c.check(False, f"the scenario ran to its end ({type(error).__name__}: {error})",
                         "Causeway:\n" + self.gateway.log_tail(60) + f"\n{self.server.name}:\n"
                         + self.server.log_tail(30))
        finally:
            for user in (self.bob, self.carol):
                if user:
                    await user.disconnect()
            if self.alice:
                await self.alice.client.close()
            self.gateway.stop()
            self.server.stop()

    async def start(self) -> None:
        self.server.start()
        self.server.register("carol", "carolpw")
        self.gateway.start()
        self.alice = bs.Matrix(self.gateway.base_url)
        response = await self.alice.client.register("alice", bs.PASSWORD, device_name="interop")
        self.c.require(getattr(response, "user_id", None) == bs.ALICE, "Alice registers on Causeway",
                       str(response))
        status, created = await self.alice.raw("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby",
            "topic": "Welcome", "visibility": "public"})
        self.c.require(status == 200, "Alice makes #lobby:gw.test", repr(created))
        self.room = created["room_id"]
        status, _ = await self.alice.raw("POST", "/_matrix/client/v3/createRoom", {
            "preset": "private_chat", "room_alias_name": "private"})
        self.c.require(status == 200, "and the invite-only #private:gw.test")
        await self.alice.sync_until(lambda _r: True)
        for n, text in enumerate(["one", "two", "three"]):
            await self.alice.client.room_send(self.room, "m.room.message",
                                              {"msgtype": "m.text", "body": text})
        self.bob = Occupant(f"bob@{self.server.domain}/interop", "bobpw")
        await self.bob.connect(self.ca, self.server.ip)
        self.carol = Occupant(f"carol@{self.server.domain}/interop", "carolpw")
        await self.carol.connect(self.ca, self.server.ip)

    async def bob_joins(self) -> None:
        assert self.bob and self.alice
        self.bob.join(ROOM, "Bob", "<history maxstanzas='2'/>")
        alice = await self.bob.presence()
        self.c.equal(str(alice["from"]), f"{ROOM}/alice", "Bob first gets Alice as an occupant")
        self.c.equal((item(alice).get("affiliation"), item(alice).get("role"), item(alice).get("jid")),
                     ("owner", "moderator", "alice@gw.test"),
                     "an owner and moderator, with her real JID")
        me = await self.bob.presence()
        self.c.equal(str(me["from"]), f"{ROOM}/Bob", "then himself")
        self.c.check({"110", "100"} <= statuses(me), "with status codes 110 and 100", repr(statuses(me)))
        history = [await self.bob.next(lambda s: s["type"] == "groupchat") for _ in range(2)]
        self.c.equal([bs.body_of(m) for m in history], ["two", "three"],
                     "then the last two messages as history")
        self.c.check(all(m.xml.find("{urn:xmpp:delay}delay") is not None for m in history),
                     "each with its delay")
        stanza_id = history[0].xml.find("{urn:xmpp:sid:0}stanza-id")
        self.c.equal(stanza_id.get("by") if stanza_id is not None else None, ROOM,
                     "and a stanza-id of the room")
        subject = await self.bob.next(lambda s: s.xml.find("{jabber:client}subject") is not None)
        self.c.equal(subject.xml.find("{jabber:client}subject").text, "Welcome",
                     "then the subject, the room's topic")
        member = await self.member_state(self.bob_ghost)
        self.c.equal((member.get("membership"), member.get("displayname")), ("join", "Bob"),
                     "Alice sees Bob's ghost join under his nickname")

    async def member_state(self, user: str, membership: str = "join") -> dict[str, Any]:
        assert self.alice
        content: dict[str, Any] = {}

        async def found() -> bool:
            nonlocal content
            status, body = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.member/{user}")
            content = body if status == 200 else {}
            return content.get("membership") == membership

        await harness.eventually(found, 20)
        return content

    async def carol_joins(self) -> None:
        assert self.bob and self.carol
        self.carol.join(ROOM, "Carol", "<history maxstanzas='0'/>")
        seen = await self.bob.presence(lambda s: str(s["from"]) == f"{ROOM}/Carol")
        self.c.equal(item(seen).get("jid"), f"carol@{self.server.domain}/interop",
                     "Bob sees Carol come in, with her real JID")
        got = set()
        while f"{ROOM}/Carol" not in got:
            got.add(str((await self.carol.presence())["from"]))
        self.c.check({f"{ROOM}/alice", f"{ROOM}/Bob"} <= got, "Carol gets Alice and Bob", repr(got))
        await self.carol.next(lambda s: s.xml.find("{jabber:client}subject") is not None)

    async def messages(self) -> None:
        assert self.bob and self.carol and self.alice
        self.bob.send(f"<message to='{ROOM}' type='groupchat' id='bob-1'><body>Hello *all*</body>"
                      "<origin-id xmlns='urn:xmpp:sid:0' id='bob-1'/></message>")
        event = await self.wait_event(lambda e: e["sender"] == self.bob_ghost and e["type"] == "m.room.message")
        self.c.equal((event["content"].get("body"), event["content"].get("formatted_body")),
                     ("Hello *all*", "Hello <strong>all</strong>"),
                     "Bob's message reaches Alice from his ghost, styled")
        reflection = await self.bob.next(lambda s: bs.body_of(s) == "Hello *all*")
        stanza_id = reflection.xml.find("{urn:xmpp:sid:0}stanza-id")
        self.c.equal((reflection["id"], stanza_id.get("id") if stanza_id is not None else None),
                     ("bob-1", event["event_id"]),
                     "Bob gets it back with his id and the event as stanza-id")
        at_carol = await self.carol.next(lambda s: bs.body_of(s) == "Hello *all*")
        self.c.equal(str(at_carol["from"]), f"{ROOM}/Bob", "Carol gets it from Bob's nickname")
        response = await self.alice.client.room_send(self.room, "m.room.message", {
            "msgtype": "m.text", "body": "Welcome, Bob",
            "m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}}})
        for user, name in ((self.bob, "Bob"), (self.carol, "Carol")):
            message = await user.next(lambda s: bs.body_of(s).endswith("Welcome, Bob"))
            reply = message.xml.find("{urn:xmpp:reply:0}reply")
            self.c.equal((str(message["from"]), message["type"],
                          reply.get("id") if reply is not None else None),
                         (f"{ROOM}/alice", "groupchat", event["event_id"]),
                         f"{name} gets Alice's reply, pointing at Bob's message")
        self.bob.send(f"<message to='{ROOM}' type='groupchat' id='bob-2'><body>Thanks!</body>"
                      f"<reply xmlns='urn:xmpp:reply:0' id='{response.event_id}'/></message>")
        reply = await self.wait_event(lambda e: e["content"].get("body") == "Thanks!")
        self.c.equal(reply["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id"),
                     response.event_id, "Bob's reply by stanza-id answers Alice's message")
        self.bob.send(f"<message to='{ROOM}' type='groupchat' id='bob-3'><body>Hello everyone</body>"
                      "<replace xmlns='urn:xmpp:message-correct:0' id='bob-1'/></message>")
        edit = await self.wait_event(lambda e: e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace")
        self.c.equal((edit["content"]["m.relates_to"]["event_id"], edit["content"]["m.new_content"]["body"]),
                     (event["event_id"], "Hello everyone"), "Bob's correction edits his message")
        self.bob.send(f"<message to='{ROOM}' type='groupchat' id='bob-4'>"
                      f"<retract xmlns='urn:xmpp:message-retract:1' id='{reply['event_id']}'/></message>")
        redaction = await self.wait_event(lambda e: e["type"] == "m.room.redaction")
        self.c.equal(redaction.get("redacts") or redaction["content"].get("redacts"), reply["event_id"],
                     "Bob's retraction redacts his message")
        await self.alice.raw("PUT", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.topic/",
                             {"topic": "Lunch at noon"})
        subject = await self.carol.next(lambda s: s.xml.find("{jabber:client}subject") is not None)
        self.c.equal(subject.xml.find("{jabber:client}subject").text, "Lunch at noon",
                     "Alice's new topic is the subject")

    async def presence(self) -> None:
        """Show and status both ways: Bob's are his ghost's presence and Carol sees them;
        Alice's Matrix presence is her occupant's show and status."""
        assert self.bob and self.carol and self.alice
        self.bob.send(f"<presence to='{ROOM}/Bob'><show>away</show><status>brb</status></presence>")
        seen = await self.carol.presence(lambda s: str(s["from"]) == f"{ROOM}/Bob" and s["show"] == "away")
        self.c.equal(seen["status"], "brb", "Bob is away: Carol sees his show and status in the room")

        async def ghost_away() -> bool:
            status, body = await self.alice.raw(
                "GET", f"/_matrix/client/v3/presence/{self.bob_ghost}/status")
            return body.get("presence") == "unavailable" and body.get("status_msg") == "brb"

        self.c.check(await harness.eventually(ghost_away, 20),
                     "and Alice sees his ghost's presence: unavailable, brb")
        status, _ = await self.alice.raw("PUT", f"/_matrix/client/v3/presence/{bs.ALICE}/status",
                                         {"presence": "unavailable", "status_msg": "lunch"})
        for user, name in ((self.bob, "Bob"), (self.carol, "Carol")):
            told = await user.presence(lambda s: str(s["from"]) == f"{ROOM}/alice" and s["show"] == "away")
            self.c.equal(told["status"], "lunch",
                         f"Alice is away in Matrix: {name} sees it on her occupant")
        self.bob.send(f"<presence to='{ROOM}/Bob'/>")
        await self.carol.presence(lambda s: str(s["from"]) == f"{ROOM}/Bob" and s["show"] == "")

    async def wait_event(self, match: Any) -> dict[str, Any]:
        assert self.alice
        found = await self.alice.sync_until(
            lambda r: next((e for e in bs.timeline(r, self.room) if match(e)), None), 30)
        self.c.require(found is not None, "the event reaches Alice", f"in {self.room}")
        return found

    async def errors(self) -> None:
        assert self.bob and self.carol
        self.c.equal(await self.carol.join_error("nowhere@muc.gw.test", "Carol"), "item-not-found",
                     "a room that does not exist: item-not-found")
        self.c.equal(await self.carol.join_error("private@muc.gw.test", "Carol"), "registration-required",
                     "an invite-only room: registration-required")
        self.c.equal(await self.carol.join_error(ROOM, "alice"), "conflict",
                     "a nickname someone has (in the room as Carol already): conflict")
        self.carol.send("<message to='private@muc.gw.test' type='groupchat' id='c-x'><body>hi</body></message>")
        error = await self.carol.next(lambda s: s["type"] == "error")
        self.c.equal(error["error"]["condition"], "not-acceptable",
                     "writing to a room one is not in: not-acceptable")

    async def nick_kick_leave(self) -> None:
        assert self.bob and self.carol and self.alice
        self.bob.join(ROOM, "Robert")
        changed = await self.carol.presence(lambda s: "303" in statuses(s))
        self.c.equal((str(changed["from"]), item(changed).get("nick")), (f"{ROOM}/Bob", "Robert"),
                     "Bob takes the nickname Robert: Carol sees 303")
        own = await self.bob.presence(lambda s: "303" in statuses(s))
        self.c.check("110" in statuses(own), "and Bob with 110")
        member = await self.member_state(self.bob_ghost)
        await harness.eventually(lambda: self.displayname_is(self.bob_ghost, "Robert"), 20)
        self.c.check(member.get("membership") == "join", "his ghost's name in the room follows")
        status, _ = await self.alice.raw("POST", f"/_matrix/client/v3/rooms/{self.room}/kick",
                                         {"user_id": self.carol_ghost, "reason": "testing"})
        self.c.equal(status, 200, "Alice kicks Carol")
        kicked = await self.carol.presence(lambda s: s["type"] == "unavailable")
        self.c.check({"307", "110"} <= statuses(kicked), "Carol is told she was kicked (307, 110)",
                     repr(statuses(kicked)))
        seen = await self.bob.presence(lambda s: s["type"] == "unavailable" and str(s["from"]) == f"{ROOM}/Carol")
        self.c.check("307" in statuses(seen), "and Bob sees it (307)")

    async def displayname_is(self, user: str, name: str) -> bool:
        assert self.alice
        status, body = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.member/{user}")
        return status == 200 and body.get("displayname") == name

    async def restart(self) -> None:
        assert self.bob and self.alice
        self.gateway.restart()
        await self.alice.client.room_send(self.room, "m.room.message",
                                          {"msgtype": "m.text", "body": "after the restart"})
        message = await self.bob.next(lambda s: bs.body_of(s) == "after the restart", 30)
        self.c.equal(str(message["from"]), f"{ROOM}/alice",
                     "after a restart of Causeway, Bob is still in the room")
        self.bob.send(f"<presence to='{ROOM}/Robert' type='unavailable'/>")
        gone = await self.bob.presence(lambda s: s["type"] == "unavailable" and "110" in statuses(s))
        self.c.check(gone is not None, "Bob leaves and is told so")
        member = await self.member_state(self.bob_ghost, "leave")
        self.c.equal(member.get("membership"), "leave", "and his ghost leaves the room")


def main() -> int:
    if not shutil.which("prosody") or not shutil.which("openssl"):
        print("FAIL: prosody and openssl are needed (scripts/test-all installs them)")
        return 1
    parser = harness.test_argparser("Matrix rooms as MUCs with a real Prosody")
    args = parser.parse_args()
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    logging.basicConfig(level=logging.ERROR)
    work = harness.make_workdir("muc-prosody-")
    xp.make_certificates(work)
    test = MucTest(args, work, xp.Prosody(work, secure=True))
    asyncio.run(test.run())
    return test.c.summary()


if __name__ == "__main__":
    sys.exit(main())
