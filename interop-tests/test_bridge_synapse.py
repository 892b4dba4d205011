"""Interop test: the 1:1 bridge when the Matrix side is a user of a real Synapse.

Three servers on loopback: Prosody serves prosody.test (127.0.0.2), Causeway serves gw.test
(127.0.0.5; XMPP on 5269, Matrix federation on 8448 with the test CA's certificate for gw.test),
and Synapse serves `localhost:<port>`. Synapse finds gw.test the way it finds any server
(`.well-known`, SRV, then port 8448): it runs in a mount namespace whose /etc/hosts names
127.0.0.5 gw.test, and trusts the test CA. XMPP users are slixmpp clients on Prosody; carol is
a Synapse user, `carol%localhost\\3a<port>@gw.test` from XMPP (XEP-0106 escapes the `:`).

* Bob (XMPP) writes to carol's address: Causeway makes a direct room of Bob's ghost and
  invites carol through Synapse (Synapse signs the invite); carol joins through Causeway and
  reads Bob's message; her answer reaches Bob from her address.
* Carol starts a direct chat with Dave's ghost on Synapse: Synapse sends the invite to Causeway,
  the ghost joins through Synapse by itself, carol's message reaches Dave on XMPP, and his
  answer lands in her room.
* An invite of a ghost to a room that is not a direct chat is declined, through Synapse.
* Bob joins carol's public room on Synapse as a MUC (`#lobby%localhost\\3a<port>@muc.gw.test`):
  Causeway resolves the alias and joins his ghost through Synapse; he gets the history and the
  topic, and messages go both ways; the avatar carol gives it on Synapse is announced in its
  disco#info (the hash of the image Causeway fetched over federation).
* carol joins an XMPP MUC on Prosody through its portal on Causeway
  (`#_xmpp_lobby=40conference.prosody.test:gw.test`): Synapse asks Causeway to join, and
  Causeway first joins the MUC as carol's own address; messages go both ways; her presence on
  Synapse (away, with a status) is her occupant's in the MUC; her leaving the portal is her
  leaving the MUC.
* A message to a Matrix user whose server cannot be reached is answered with an XMPP error
  (`remote-server-timeout`).

Run: python interop-tests/test_bridge_synapse.py --causeway target/debug/causeway
Needs: prosody and lua-unbound (Debian), openssl, unshare and mount (util-linux, as root),
slixmpp, Synapse in .venv/synapse.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
from urllib.parse import quote

import bridge_scenario as bs
import test_portal_prosody as tp
from bench_bridge import leaf
import harness
import test_xmpp_prosody as xp

PASSWORD = "bridge synapse test password"
WAIT = 60.0


class FederatingGateway(bs.BridgeCauseway):
    """Causeway as gw.test with Matrix federation on 127.0.0.5:8448 beside its XMPP side."""

    def __init__(self, binary: str, certs: Path, synapse: harness.Synapse,
                 federation_ca: Path) -> None:
        super().__init__(binary, certs, direct_tls=False, peer_domain=xp.Prosody.domain,
                         peer_ip=xp.PROSODY_IP)
        self.synapse = synapse
        self.federation_ca = federation_ca

    def config_text(self) -> str:
        federation = (
            "\n[federation]\nenabled = true\n"
            f'bind = "{xp.GATEWAY_IP}:8448"\n'
            f"tls_certificate = {harness._toml_str(str(self.certs / 'gw.test.crt'))}\n"
            f"tls_private_key = {harness._toml_str(str(self.certs / 'gw.test.key'))}\n"
            f"ca_files = [{harness._toml_str(str(self.federation_ca))}]\n"
            "\n[federation.destinations]\n"
            f"{harness._toml_str(self.synapse.server_name)} = "
            f"{harness._toml_str(f'127.0.0.1:{self.synapse.federation_port}')}\n"
        )
        text = super().config_text()
        disabled = "\n[federation]\nenabled = false\n"
        assert disabled in text
        # (TOML tables: the federation tables go last, after every key of the other tables.)
        route = (f'\n[[xmpp.routes]]\ndomain = "{tp.CONFERENCE}"\n'
                 f'address = "{xp.PROSODY_IP}:5269"\n')
        return text.replace(disabled, "\n") + federation + route


class SynapseMucProsody(tp.MucProsody):
    """Prosody with its MUC service; the users are registered as the steps need them."""

    start = xp.Prosody.start


class HostsSynapse(harness.Synapse):
    """Synapse in a mount namespace with its own /etc/hosts (gw.test on 127.0.0.5), trusting
    the XMPP test CA (gw.test's certificate) beside the federation one."""

    def __init__(self, venv: str, extra_ca: Path) -> None:
        # Presence is on: carol's reaches the MUC she is an occupant of through Causeway.
        super().__init__(venv, presence=True)
        self.extra_ca = extra_ca
        self.hosts = self.workdir / "hosts"

    def federation_config(self) -> dict[str, Any]:
        config = super().federation_config()
        config["federation_custom_ca_list"] = config["federation_custom_ca_list"] + [
            str(self.extra_ca)]
        return config

    def prepare(self) -> None:
        super().prepare()
        self.hosts.write_text(f"127.0.0.1 localhost\n{xp.GATEWAY_IP} gw.test muc.gw.test\n")

    def command(self) -> list[str]:
        inner = " ".join(super().command())
        return ["unshare", "--mount", "sh", "-c",
                f"mount --bind {self.hosts} /etc/hosts && exec {inner}"]


def timeline(sync: dict[str, Any], room: str) -> list[dict[str, Any]]:
    return sync.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])


class Test:
    def __init__(self, gateway: FederatingGateway, synapse: HostsSynapse,
                 prosody: xp.Prosody, work: Path) -> None:
        self.gateway = gateway
        self.synapse = synapse
        self.prosody = prosody
        self.ca = str(work / "ca.crt")
        self.c = harness.Checks("test_bridge_synapse")

    async def run(self) -> int:
        async with aiohttp.ClientSession() as session:
            await self.scenario(session)
        return self.c.summary()

    async def scenario(self, session: aiohttp.ClientSession) -> None:
        c = self.c
        carol = await harness.MatrixUser.register(session, self.synapse, "carol", PASSWORD)
        await carol.sync_until(lambda _data: True)
        port = self.synapse.server_name.split(":")[1]
        carol_jid = f"carol%localhost\\3a{port}@gw.test"
        bob = bs.XmppUser("bob@prosody.test/interop", "bobpw")
        dave = bs.XmppUser("dave@prosody.test/interop", "davepw")
        bob_ghost = "@_xmpp_bob=40prosody.test:gw.test"
        dave_ghost = "@_xmpp_dave=40prosody.test:gw.test"

        async def xmpp_user_writes_first() -> None:
            await bob.connect(self.ca, xp.PROSODY_IP)
            bob.send(f"<message to='{carol_jid}' type='chat' id='bob-1'>"
                     "<body>Hello Carol, it's Bob on XMPP</body></message>")

            def invited(data: dict[str, Any]) -> Any:
                for room, invite in data.get("rooms", {}).get("invite", {}).items():
                    for event in invite.get("invite_state", {}).get("events", []):
                        if (event.get("type") == "m.room.member"
                                and event.get("state_key") == carol.user_id):
                            return room, event
                return None

            found = await carol.sync_until(invited)
            c.require(found is not None, "carol (Synapse) is invited when Bob writes to her address",
                      self.gateway.log_tail(30))
            room, invite = found
            c.equal(invite.get("sender"), bob_ghost, "the invite comes from Bob's ghost")
            c.equal(invite.get("content", {}).get("is_direct"), True, "to a direct chat")
            status, joined = await carol.call("POST", f"/join/{room}", {})
            c.require(status == 200, "carol joins through Causeway", f"{status} {joined}")
            # Bob's message came before her join: her client pages back for it, and Synapse
            # fetches it from Causeway (backfill).
            bodies: list[str] = []
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                status, page = await carol.call("GET", f"/rooms/{room}/messages?dir=b&limit=20")
                bodies = [e["content"].get("body", "") for e in page.get("chunk", [])
                          if e.get("type") == "m.room.message" and e.get("sender") == bob_ghost]
                if bodies:
                    break
                await asyncio.sleep(0.5)
            c.equal(bodies, ["Hello Carol, it's Bob on XMPP"],
                    "carol reads Bob's message (paging back)")
            status, _ = await carol.call("PUT", f"/rooms/{room}/send/m.room.message/c1",
                                         {"msgtype": "m.text", "body": "Hi Bob, carol here"})
            c.require(status == 200, "carol answers")
            answer = await bob.next(lambda s: bs.body_of(s) != "", timeout=WAIT)
            c.equal((str(answer["from"].bare), bs.body_of(answer), answer["type"]),
                    (carol_jid, "Hi Bob, carol here", "chat"),
                    "Bob receives carol's answer from her address")

        async def matrix_user_starts() -> None:
            self.prosody.register("dave", "davepw")
            await dave.connect(self.ca, xp.PROSODY_IP)
            status, created = await carol.call("POST", "/createRoom", {
                "preset": "trusted_private_chat", "is_direct": True, "invite": [dave_ghost]})
            c.require(status == 200, "carol starts a direct chat with Dave's ghost on Synapse",
                      f"{status} {created}\n{self.gateway.log_tail(20)}")
            room = created["room_id"]
            joined = await carol.sync_until(lambda data: any(
                e.get("state_key") == dave_ghost
                and e.get("content", {}).get("membership") == "join"
                for e in timeline(data, room)))
            c.require(bool(joined), "Dave's ghost joins her room through Synapse by itself",
                      self.gateway.log_tail(30))
            status, _ = await carol.call("PUT", f"/rooms/{room}/send/m.room.message/c2",
                                         {"msgtype": "m.text", "body": "Hello Dave"})
            c.require(status == 200, "carol writes to Dave")
            message = await dave.next(lambda s: bs.body_of(s) != "", timeout=WAIT)
            c.equal((str(message["from"].bare), bs.body_of(message)), (carol_jid, "Hello Dave"),
                    "Dave receives carol's message from her address")
            dave.send(f"<message to='{carol_jid}' type='chat' id='dave-1'>"
                      "<body>Hi Carol</body></message>")
            answer = await carol.sync_until(lambda data: next(
                (e for e in timeline(data, room) if e.get("sender") == dave_ghost
                 and e.get("type") == "m.room.message"), None))
            c.check(answer is not None and answer["content"].get("body") == "Hi Carol",
                    "Dave's answer lands in carol's room", repr(answer))

        async def group_invite_declined() -> None:
            status, created = await carol.call("POST", "/createRoom", {
                "preset": "private_chat", "name": "Not direct", "invite": [bob_ghost]})
            c.require(status == 200, "carol invites Bob's ghost to a room that is not direct",
                      f"{status} {created}")
            room = created["room_id"]

            async def declined() -> bool:
                status, member = await carol.call(
                    "GET", f"/rooms/{room}/state/m.room.member/{bob_ghost}")
                return status == 200 and member.get("membership") == "leave"

            start = time.monotonic()
            while time.monotonic() - start < WAIT and not await declined():
                await asyncio.sleep(0.5)
            c.check(await declined(), "the ghost declines it, through Synapse",
                    self.gateway.log_tail(20))

        async def unreachable_matrix_user() -> None:
            bob.send("<message to='nobody%unreachable.test@gw.test' type='chat' id='bob-lost'>"
                     "<body>Anyone?</body></message>")
            error = await bob.next(lambda s: s["type"] == "error" and s["id"] == "bob-lost",
                                   timeout=WAIT)
            condition = error.xml.find("{jabber:client}error") if error is not None else None
            names = [child.tag for child in condition] if condition is not None else []
            c.check("{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-timeout" in names,
                    "a message to a Matrix user whose server cannot be reached is answered "
                    "with remote-server-timeout", str(error))

        async def xmpp_user_joins_synapse_room() -> None:
            status, created = await carol.call("POST", "/createRoom", {
                "preset": "public_chat", "room_alias_name": "lobby", "topic": "Synapse's lobby"})
            c.require(status == 200, "carol makes a public room on Synapse", f"{status} {created}")
            room = created["room_id"]
            await carol.call("PUT", f"/rooms/{room}/send/m.room.message/l1",
                             {"msgtype": "m.text", "body": "Before Bob came"})
            address = f"#lobby%localhost\\3a{port}@muc.gw.test"
            bob.send(f"<presence to='{address}/Bob'><x xmlns='http://jabber.org/protocol/muc'>"
                     "<history maxstanzas='5'/></x></presence>")
            deadline = time.monotonic() + WAIT
            own = None
            while own is None and time.monotonic() < deadline:
                presence = await asyncio.wait_for(bob.presences.get(), WAIT)
                x = presence.xml.find("{http://jabber.org/protocol/muc#user}x")
                codes = {s.get("code") for s in x.findall("{http://jabber.org/protocol/muc#user}status")} \
                    if x is not None else set()
                if str(presence["from"]) == f"{address}/Bob" and "110" in codes:
                    own = presence
                elif presence["type"] == "error":
                    c.require(False, "Bob joins carol's room", str(presence))
            c.require(own is not None, "Bob joins carol's Synapse room as a MUC, through Causeway",
                      self.gateway.log_tail(30))
            history = await bob.next(lambda s: bs.body_of(s) == "Before Bob came", timeout=WAIT)
            c.equal(str(history["from"]), f"{address}/carol", "with its history, from carol's nickname")
            subject = await bob.next(lambda s: s.xml.find("{jabber:client}subject") is not None,
                                     timeout=WAIT)
            c.equal(subject.xml.find("{jabber:client}subject").text, "Synapse's lobby",
                    "and its topic as subject")
            joined = await carol.sync_until(lambda data: any(
                e.get("state_key") == bob_ghost and e.get("content", {}).get("membership") == "join"
                for e in timeline(data, room)))
            c.check(bool(joined), "carol sees Bob's ghost join her room")
            bob.send(f"<message to='{address}' type='groupchat' id='bob-muc-1'>"
                     "<body>Hello Synapse room</body></message>")
            said = await carol.sync_until(lambda data: next(
                (e for e in timeline(data, room) if e.get("sender") == bob_ghost
                 and e.get("type") == "m.room.message"), None))
            c.check(said is not None and said["content"].get("body") == "Hello Synapse room",
                    "Bob's message reaches carol on Synapse", repr(said))
            reflection = await bob.next(lambda s: s["id"] == "bob-muc-1", timeout=WAIT)
            c.equal(str(reflection["from"]), f"{address}/Bob", "and comes back to Bob from the room")
            await carol.call("PUT", f"/rooms/{room}/send/m.room.message/l2",
                             {"msgtype": "m.text", "body": "Welcome, Bob"})
            answer = await bob.next(lambda s: bs.body_of(s) == "Welcome, Bob", timeout=WAIT)
            c.equal((str(answer["from"]), answer["type"]), (f"{address}/carol", "groupchat"),
                    "carol's answer reaches Bob in the room")
            # carol gives her room an avatar on Synapse: the room's disco#info announces its
            # hash (XEP-0486) once Causeway has fetched it over federation.
            image = tiny_png()
            async with carol.session.post(
                    f"{carol.server.base_url}/_matrix/media/v3/upload?filename=lobby.png", data=image,
                    headers={"Authorization": f"Bearer {carol.token}",
                             "Content-Type": "image/png"}) as response:
                uploaded = await response.json(content_type=None)
            c.require("content_uri" in uploaded, "carol uploads an image to Synapse", repr(uploaded))
            status, _ = await carol.call("PUT", f"/rooms/{room}/state/m.room.avatar/",
                                         {"url": uploaded["content_uri"]})
            wanted = hashlib.sha1(image).hexdigest()
            announced = None
            deadline = time.monotonic() + WAIT
            while announced != wanted and time.monotonic() < deadline:
                info = await bob.client["xep_0030"].get_info(jid=address, timeout=WAIT)
                for field in info.xml.iter("{jabber:x:data}field"):
                    if field.get("var") == "muc#roominfo_avatarhash":
                        value = field.find("{jabber:x:data}value")
                        announced = value.text if value is not None else None
                if announced != wanted:
                    await asyncio.sleep(0.5)
            c.equal(announced, wanted,
                    "the avatar of carol's room on Synapse is announced in its disco#info (SHA-1)")

        async def synapse_user_joins_xmpp_muc() -> None:
            bob.send(f"<presence to='{tp.LOBBY}/Bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
            await bob.presence(lambda s: str(s["from"]) == f"{tp.LOBBY}/Bob")
            status, joined = await carol.call("POST", f"/join/{quote(tp.PORTAL)}", {})
            c.require(status == 200, "carol (Synapse) joins the portal of an XMPP MUC, through Causeway",
                      f"{status} {joined}\n{self.gateway.log_tail(30)}")
            room = joined["room_id"]
            came = await bob.presence(lambda s: str(s["from"]).startswith(f"{tp.LOBBY}/")
                                      and str(s["from"]) != f"{tp.LOBBY}/Bob", timeout=WAIT)
            item = came.xml.find(f"{{{tp.MUC_USER}}}x/{{{tp.MUC_USER}}}item")
            c.equal(item.get("jid", "").split("/")[0] if item is not None else None, carol_jid,
                    "Bob sees carol come into the MUC as her own address")
            nick = str(came["from"].resource)
            await carol.call("PUT", f"/rooms/{room}/send/m.room.message/p1",
                             {"msgtype": "m.text", "body": "Hello MUC, carol from Synapse"})
            said = await bob.next(lambda s: bs.body_of(s) == "Hello MUC, carol from Synapse",
                                  timeout=WAIT)
            c.equal((str(said["from"]), said["type"]), (f"{tp.LOBBY}/{nick}", "groupchat"),
                    "carol's message reaches Bob in the MUC from her nickname")
            bob.send(f"<message to='{tp.LOBBY}' type='groupchat' id='bob-p1'>"
                     "<body>Hello carol, from the MUC</body></message>")
            heard = await carol.sync_until(lambda data: next(
                (e for e in timeline(data, room) if e.get("sender") == tp.BOB_OCCUPANT
                 and e.get("content", {}).get("body") == "Hello carol, from the MUC"), None))
            c.check(heard is not None, "Bob's message reaches carol on Synapse from his occupant's ghost")
            status, _ = await carol.call("PUT", f"/presence/{quote(carol.user_id)}/status",
                                         {"presence": "unavailable", "status_msg": "in a meeting"})
            away = await bob.presence(lambda s: str(s["from"]) == f"{tp.LOBBY}/{nick}"
                                      and s["show"] == "away", timeout=WAIT)
            c.equal(str(away["status"]), "in a meeting",
                    "carol away on Synapse is away in the MUC, with her status (through Causeway)")
            await carol.call("POST", f"/rooms/{room}/leave", {})
            gone = await bob.presence(lambda s: str(s["from"]) == f"{tp.LOBBY}/{nick}"
                                      and s["type"] == "unavailable", timeout=WAIT)
            c.check(gone is not None, "carol leaves the portal: Bob sees her leave the MUC")

        try:
            await c.step("an XMPP user writes first to a Synapse user", xmpp_user_writes_first)
            await c.step("a Synapse user joins an XMPP MUC through its portal",
                         synapse_user_joins_xmpp_muc,
                         needs=("an XMPP user writes first to a Synapse user",))
            await c.step("an XMPP user joins a room of Synapse as a MUC",
                         xmpp_user_joins_synapse_room,
                         needs=("an XMPP user writes first to a Synapse user",))
            await c.step("a Synapse user starts a direct chat with an XMPP user",
                         matrix_user_starts)
            await c.step("an invite to a room that is not direct is declined",
                         group_invite_declined)
            await c.step("a Matrix user who cannot be reached", unreachable_matrix_user,
                         needs=("an XMPP user writes first to a Synapse user",))
        finally:
            await bob.disconnect()
            await dave.disconnect()


async def main_async(args: Any) -> int:
    work = harness.make_workdir("bridge-synapse-")
    xp.make_certificates(work)
    leaf(work, tp.CONFERENCE)
    prosody = SynapseMucProsody(work, secure=True)
    synapse = HostsSynapse(args.synapse_peer_venv, work / "ca.crt")
    federation_tls = harness.federating([synapse], work / "federation-tls")
    gateway = FederatingGateway(args.causeway, work, synapse, federation_tls.ca)
    try:
        prosody.start()
        with synapse:
            synapse.start(timeout=60)
            gateway.start()
            try:
                code = await Test(gateway, synapse, prosody, work).run()
            finally:
                gateway.stop()
            if code != 0:
                print("--- Causeway log ---\n" + gateway.log_tail(80))
                print("--- Synapse log ---\n" + synapse.log_tail(40))
                print("--- Prosody log ---\n" + prosody.log_tail(20))
            return code
    finally:
        prosody.stop()


def tiny_png() -> bytes:
    """A 1x1 PNG image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00")) + chunk(b"IEND", b""))


def main() -> int:
    args = harness.synapse_peer_argparser(__doc__.splitlines()[0]).parse_args()
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    for tool in ("prosody", "openssl", "unshare", "mount"):
        if not shutil.which(tool):
            print(f"FAIL: {tool} is needed (scripts/test-all installs what is missing)")
            return 1
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
