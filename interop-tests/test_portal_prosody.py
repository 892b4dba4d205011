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
- Causeway restarts: Alice is in the MUC again and gets what Bob wrote meanwhile;
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
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"


class MucProsody(xp.Prosody):
    """Prosody with its MUC service, rooms open at once (no locking until configured)."""

    def write_config(self) -> None:
        super().write_config()
        certs = self.dir / "certs"
        for suffix in ("crt", "key"):
            shutil.copy(self.dir / f"{CONFERENCE}.{suffix}", certs / f"{CONFERENCE}.{suffix}")
        self.config.write_text(self.config.read_text() + (
            f'Component "{CONFERENCE}" "muc"\n'
            "    muc_room_locking = false\n"
            "    muc_room_default_history_length = 20\n"))


class PortalCauseway(bs.BridgeCauseway):
    """Causeway as gw.test, reaching the MUC service on Prosody's address too."""

    def config_text(self) -> str:
        return super().config_text() + (
            f'\n[[xmpp.routes]]\ndomain = "{CONFERENCE}"\naddress = "{xp.PROSODY_IP}:5269"\n')


class PortalTest:
    def __init__(self, args: Any, work: Any) -> None:
        self.args = args
        self.work = work
        self.ca = str(work / "ca.crt")
        self.c = harness.Checks("portal-prosody")
        self.prosody = MucProsody(work, secure=True)
        self.gateway = PortalCauseway(args.causeway, work, direct_tls=False, dialback=False)
        self.alice: bs.Matrix | None = None
        self.bob: bs.XmppUser | None = None
        self.room = ""

    async def run(self) -> None:
        try:
            await self.start()
            await self.alice_joins()
            await self.messages()
            await self.refusals()
            await self.restart()
            await self.leave()
        except harness.StepFailed:
            pass
        except Exception as error:  # noqa: BLE001 - any failure is reported with the logs
            self.c.check(False, f"the scenario ran to its end ({type(error).__name__}: {error})",
                         "Causeway:\n" + self.gateway.log_tail(60) + "\nProsody:\n"
                         + self.prosody.log_tail(30))
        finally:
            if self.bob:
                await self.bob.disconnect()
            if self.alice:
                await self.alice.client.close()
            self.gateway.stop()
            self.prosody.stop()

    async def start(self) -> None:
        self.prosody.start()
        self.gateway.start()
        self.alice = bs.Matrix(self.gateway.base_url)
        response = await self.alice.client.register("alice", bs.PASSWORD, device_name="interop")
        self.c.require(getattr(response, "user_id", None) == bs.ALICE, "Alice registers on Causeway",
                       str(response))
        await self.alice.sync_until(lambda _r: True)
        self.bob = bs.XmppUser("bob@prosody.test/interop", "bobpw")
        await self.bob.connect(self.ca, self.prosody.ip)
        self.bob.send(f"<presence to='{LOBBY}/Bob'><x xmlns='{MUC}'/></presence>")
        await self.bob.presence(lambda s: str(s["from"]) == f"{LOBBY}/Bob")
        self.bob.send(f"<message to='{LOBBY}' type='groupchat' id='b0'><body>Before Alice came</body></message>")
        await self.bob.next(lambda s: bs.body_of(s) == "Before Alice came")
        self.c.check(True, "Bob makes lobby@conference.prosody.test on Prosody and writes in it")

    async def alice_joins(self) -> None:
        assert self.alice and self.bob
        status, joined = await self.alice.raw("POST", f"/_matrix/client/v3/join/{quote(PORTAL)}", {})
        self.c.require(status == 200, "Alice joins the portal #_xmpp_lobby=40conference.prosody.test:gw.test",
                       f"{status} {joined}\n{self.gateway.log_tail(30)}")
        self.room = joined["room_id"]
        seen = await self.bob.presence(lambda s: str(s["from"]).startswith(f"{LOBBY}/")
                                       and str(s["from"]) != f"{LOBBY}/Bob")
        item = seen.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
        self.c.equal(item.get("jid", "").split("/")[0] if item is not None else None, "alice@gw.test",
                     "Bob sees Alice come into the MUC as alice@gw.test")
        self.alice_nick = str(seen["from"].resource)
        status, alias = await self.alice.raw("GET", f"/_matrix/client/v3/directory/room/{quote(PORTAL)}")
        self.c.equal(alias.get("room_id"), self.room, "the alias names the portal")

        async def bob_in_portal() -> bool:
            status, member = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.member/"
                f"{quote(BOB_OCCUPANT, safe='')}")
            return status == 200 and member.get("membership") == "join" and member.get("displayname") == "Bob"

        self.c.check(await harness.eventually(bob_in_portal, 30), "Bob is a ghost in the portal, named Bob")
        history = await self.wait_event(lambda e: e["sender"] == BOB_OCCUPANT
                                        and e["content"].get("body") == "Before Alice came")
        self.c.check(history is not None, "the MUC's history is in the portal")

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
        await self.alice.client.room_send(self.room, "m.room.message",
                                          {"msgtype": "m.text", "body": "Hello from Matrix"})
        message = await self.bob.next(lambda s: bs.body_of(s) == "Hello from Matrix")
        self.c.equal((str(message["from"]), message["type"]), (f"{LOBBY}/{self.alice_nick}", "groupchat"),
                     "Alice's message reaches Bob in the MUC from her nickname")
        self.bob.send(f"<message to='{LOBBY}' type='groupchat' id='b1'><body>Hello *Alice*</body></message>")
        event = await self.wait_event(lambda e: e["sender"] == BOB_OCCUPANT
                                      and e["content"].get("body") == "Hello *Alice*")
        self.c.check(event is not None and event["content"].get("formatted_body") == "Hello <strong>Alice</strong>",
                     "Bob's message reaches Alice from his ghost, styled", repr(event))
        status, page = await self.alice.raw(
            "GET", f"/_matrix/client/v3/rooms/{self.room}/messages?dir=b&limit=50")
        mine = [e for e in page.get("chunk", []) if e["content"].get("body") == "Hello from Matrix"]
        self.c.equal(len(mine), 1, "Alice's message is not shown twice (the reflection is recognised)")
        self.bob.send(f"<message to='{LOBBY}' type='groupchat' id='b2'><subject>Portal talk</subject></message>")

        async def topic() -> bool:
            status, content = await self.alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{self.room}/state/m.room.topic/")
            return status == 200 and content.get("topic") == "Portal talk"

        self.c.check(await harness.eventually(topic, 30), "Bob's subject is the portal's topic")

    async def refusals(self) -> None:
        assert self.alice and self.bob
        status, body = await self.alice.raw(
            "POST", f"/_matrix/client/v3/join/{quote(f'#_xmpp_nosuch=40{CONFERENCE}:gw.test')}", {})
        self.c.equal((status, body.get("errcode")), (404, "M_NOT_FOUND"),
                     "a MUC that does not exist: M_NOT_FOUND", repr(body))
        # Bob makes a members-only room.
        self.bob.send(f"<presence to='private@{CONFERENCE}/Bob'><x xmlns='{MUC}'/></presence>")
        await self.bob.presence(lambda s: str(s["from"]) == f"private@{CONFERENCE}/Bob")
        self.bob.send(
            f"<iq type='set' id='cfg1' to='private@{CONFERENCE}'>"
            "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
            "<field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>")
        await asyncio.sleep(1)
        status, body = await self.alice.raw(
            "POST", f"/_matrix/client/v3/join/{quote(f'#_xmpp_private=40{CONFERENCE}:gw.test')}", {})
        self.c.equal((status, body.get("errcode")), (403, "M_FORBIDDEN"),
                     "a members-only MUC: M_FORBIDDEN, with the MUC's refusal", repr(body))

    async def restart(self) -> None:
        assert self.alice and self.bob
        self.gateway.stop()
        self.bob.send(f"<message to='{LOBBY}' type='groupchat' id='b3'><body>While you were away</body></message>")
        await self.bob.next(lambda s: bs.body_of(s) == "While you were away")
        self.gateway.start()
        event = await self.wait_event(lambda e: e["content"].get("body") == "While you were away", 45)
        self.c.check(event is not None and event["sender"] == BOB_OCCUPANT,
                     "after a restart, Alice is in the MUC again and gets what she missed")

    async def leave(self) -> None:
        assert self.alice and self.bob
        await self.alice.client.room_leave(self.room)
        gone = await self.bob.presence(lambda s: str(s["from"]) == f"{LOBBY}/{self.alice_nick}"
                                       and s["type"] == "unavailable")
        self.c.check(gone is not None, "Alice leaves the portal: Bob sees her leave the MUC")


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
    test = PortalTest(args, work)
    asyncio.run(test.run())
    return test.c.summary()


if __name__ == "__main__":
    sys.exit(main())
