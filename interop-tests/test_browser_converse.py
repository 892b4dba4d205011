"""A real browser in a Matrix room: converse.js (npm) in Debian's headless Chromium.

Prosody serves prosody.test (127.0.0.2) with XMPP over WebSocket (mod_websocket, port 5280);
Causeway serves gw.test (127.0.0.5) and its MUC service muc.gw.test. @alice:gw.test (matrix-nio)
has the public room #lobby:gw.test. A page on the loopback loads converse.js, which logs in to
Prosody as bob@prosody.test over WebSocket and joins lobby@muc.gw.test as "Bob"; puppeteer-core
(interop-tests/browser/converse_muc.mjs) drives Chromium and reads the page. Then:

- Alice sees Bob's ghost join the room under the name "Bob";
- Alice writes: the page shows her message;
- Bob answers from the page: Alice reads it from his ghost, and the page shows it as sent (the
  room's reflection);
- the page's occupant list names Alice and Bob.

Run: python interop-tests/test_browser_converse.py --causeway target/debug/causeway
Needs: prosody and lua-unbound, chromium (Debian), node and interop-tests/browser's npm
packages (scripts/test-all installs them), matrix-nio.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import bridge_scenario as bs
import harness
import test_xmpp_prosody as xp

HERE = Path(__file__).resolve().parent
BROWSER = HERE / "browser"
CONVERSE = BROWSER / "node_modules" / "converse.js" / "dist"
ROOM = "lobby@muc.gw.test"
BOB_GHOST = "@_xmpp_bob=40prosody.test:gw.test"
WEBSOCKET_PORT = 5280


class WebProsody(xp.Prosody):
    """Prosody with XMPP over WebSocket for the browser."""

    def write_config(self) -> None:
        super().write_config()
        text = self.config.read_text()
        text = text.replace('"s2s_auth_certs"; "vcard";', '"s2s_auth_certs"; "vcard"; "websocket";')
        text = text.replace(
            'VirtualHost "prosody.test"',
            f'http_ports = {{ {WEBSOCKET_PORT} }}\nhttp_interfaces = {{ "{xp.PROSODY_IP}" }}\n'
            "https_ports = { }\nconsider_websocket_secure = true\ncross_domain_websocket = true\n"
            'VirtualHost "prosody.test"',
        )
        self.config.write_text(text)


def page(work: Path) -> str:
    """The page that starts converse.js, in a directory served with converse.js beside it."""
    site = work / "site"
    site.mkdir(exist_ok=True)
    link = site / "converse"
    if not link.exists():
        link.symlink_to(CONVERSE, target_is_directory=True)
    settings = {
        "websocket_url": f"ws://{xp.PROSODY_IP}:{WEBSOCKET_PORT}/xmpp-websocket",
        "jid": "bob@prosody.test/browser",
        "password": "bobpw",
        "auto_login": True,
        "auto_join_rooms": [{"jid": ROOM, "nick": "Bob"}],
        "assets_path": "/converse/",
        "view_mode": "fullscreen",
        "discover_connection_methods": False,
        "play_sounds": False,
        "persistent_store": "sessionStorage",
        "loglevel": "info",
    }
    (site / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Causeway</title>"
        "<link rel='stylesheet' href='/converse/converse.min.css'>"
        "<script type='module' src='/converse/converse.min.js'></script></head><body>"
        f"<script type='module'>window.converse.initialize({json.dumps(settings)});</script>"
        "</body></html>")
    return str(site)


class Site:
    """The page on a port of the loopback."""

    def __init__(self, directory: str) -> None:
        handler = functools.partial(Quiet, directory=directory)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/index.html"

    def __enter__(self) -> "Site":
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


async def scenario(args: Any, work: Path, c: harness.Checks) -> None:
    prosody = WebProsody(work, secure=True)
    gateway = bs.BridgeCauseway(args.causeway, work, direct_tls=False, dialback=False)
    alice: bs.Matrix | None = None
    driver: asyncio.subprocess.Process | None = None
    try:
        prosody.start()
        gateway.start()
        alice = bs.Matrix(gateway.base_url)
        response = await alice.client.register("alice", bs.PASSWORD, device_name="interop")
        c.require(getattr(response, "user_id", None) == bs.ALICE, "Alice registers on Causeway")
        status, created = await alice.raw("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "room_alias_name": "lobby", "name": "Lobby",
            "topic": "Welcome", "visibility": "public"})
        c.require(status == 200, "Alice makes #lobby:gw.test", repr(created))
        room = created["room_id"]
        with Site(page(work)) as site:
            driver = await asyncio.create_subprocess_exec(
                "node", str(BROWSER / "converse_muc.mjs"), site.url, ROOM, "Hello from Matrix",
                "Hello from converse.js",
                stdout=asyncio.subprocess.PIPE, stderr=open(work / "browser.log", "w"),
                env={**os.environ, "CHROMIUM": shutil.which("chromium") or "/usr/bin/chromium"})

            async def next_event() -> dict[str, Any]:
                assert driver and driver.stdout
                line = await asyncio.wait_for(driver.stdout.readline(), 90)
                if not line:
                    return {"event": "ended"}
                return json.loads(line)

            joined = await next_event()
            c.require(joined.get("event") == "joined", "converse.js joins lobby@muc.gw.test from Chromium",
                      f"{joined}\n" + (work / "browser.log").read_text()[-3000:])

            async def ghost_joined() -> bool:
                status, member = await alice.raw(
                    "GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.member/{BOB_GHOST}")
                return status == 200 and member.get("membership") == "join"

            c.check(await harness.eventually(ghost_joined, 30),
                    "Alice sees Bob's ghost join the room")
            status, member = await alice.raw(
                "GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.member/{BOB_GHOST}")
            c.equal(member.get("displayname"), "Bob", "under the nickname converse.js asked for")
            await alice.client.room_send(room, "m.room.message",
                                         {"msgtype": "m.text", "body": "Hello from Matrix"})
            seen = await next_event()
            c.equal((seen.get("event"), seen.get("text")), ("seen", "Hello from Matrix"),
                    "the page shows Alice's message")
            sent = await next_event()
            c.equal(sent.get("event"), "sent", "the page shows its answer as sent (the reflection)",
                    repr(sent))
            found = await alice.sync_until(lambda r: next(
                (e for e in bs.timeline(r, room)
                 if e["sender"] == BOB_GHOST and e["content"].get("body") == "Hello from converse.js"),
                None), 30)
            c.check(found is not None, "Alice reads the answer from Bob's ghost")
            occupants = await next_event()
            nicks = set(occupants.get("nicks") or [])
            c.check({"alice", "Bob"} <= nicks, "the page's occupant list names Alice and Bob",
                    repr(occupants))
            await asyncio.wait_for(driver.wait(), 30)
            c.equal(driver.returncode, 0, "the browser run ends cleanly",
                    (work / "browser.log").read_text()[-3000:])
    except harness.StepFailed:
        pass
    except Exception as error:  # noqa: BLE001 - any failure is reported with the logs
        c.check(False, f"the scenario ran to its end ({type(error).__name__}: {error})",
                "Causeway:\n" + gateway.log_tail(40) + "\nProsody:\n" + prosody.log_tail(30)
                + "\nBrowser:\n" + ((work / "browser.log").read_text()[-3000:]
                                    if (work / "browser.log").exists() else "(none)"))
    finally:
        if driver and driver.returncode is None:
            driver.kill()
            await driver.wait()
        if alice:
            await alice.client.close()
        gateway.stop()
        prosody.stop()


def main() -> int:
    parser = harness.test_argparser("converse.js in Chromium in a Matrix room")
    args = parser.parse_args()
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    missing = [what for what, there in (
        ("prosody", shutil.which("prosody")), ("openssl", shutil.which("openssl")),
        ("chromium", shutil.which("chromium")), ("node", shutil.which("node")),
        ("interop-tests/browser/node_modules (npm ci)", CONVERSE.exists()),
    ) if not there]
    if missing:
        print(f"FAIL: needed and missing: {', '.join(missing)} (scripts/test-all installs them)")
        return 1
    logging.basicConfig(level=logging.ERROR)
    work = harness.make_workdir("browser-converse-")
    xp.make_certificates(work)
    checks = harness.Checks("browser-converse")
    asyncio.run(scenario(args, work, checks))
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
