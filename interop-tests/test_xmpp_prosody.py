"""XMPP server-to-server interop with a real Prosody (Debian package), in secure and dialback mode.

Prosody serves prosody.test on 127.0.0.2; Causeway serves gw.test and muc.gw.test on 127.0.0.5.
A test CA (made with openssl) signs both servers' certificates, with serverAuth and clientAuth.
Prosody finds gw.test through a private hosts file (lua-unbound); Causeway reaches prosody.test
through a fixed route.

Secure mode: each server trusts the test CA and requires certificates (Prosody
s2s_secure_auth, Causeway dialback = false).

A slixmpp client logged in on Prosody as bob@prosody.test then:
- pings gw.test (Prosody opens a stream to Causeway with STARTTLS and SASL EXTERNAL; Causeway
  answers over its own stream to Prosody, again STARTTLS and SASL EXTERNAL);
- reads disco#info of gw.test (server/im), its items (the MUC service muc.gw.test) and the
  MUC service's disco#info (conference/text); a join of a room that does not exist gets
  item-not-found at once;
- gets service-unavailable for a query Causeway does not handle;
- receives a message that a local account of Causeway sends him through the bridge (Causeway's
  own stream to Prosody);
and the same again with Causeway reaching Prosody over XEP-0368 direct TLS (port 5270). A peer
that sends garbage gets a stream error while Prosody keeps working, and a certificate for the
wrong domain is refused in both directions.

Dialback mode: neither server trusts the other's certificate (Prosody has no CA file, Causeway
trusts no CA) and both allow Server Dialback (XEP-0220). The same client checks pass, with both
streams encrypted and authenticated by dialback, Prosody and Causeway each verifying the other's
key with the other as authoritative server. A stream opened by someone claiming prosody.test with a
key Prosody never gave is refused.

Run: python interop-tests/test_xmpp_prosody.py --causeway target/debug/causeway
Needs: prosody and lua-unbound (Debian), openssl, slixmpp.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import harness

PROSODY_IP = "127.0.0.2"
GATEWAY_IP = "127.0.0.5"


def run(*command: str, cwd: Path | None = None) -> None:
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_certificates(dir: Path) -> None:
    """A test CA and leaf certificates for the servers (Prosody, ejabberd, Causeway, and one
    for a wrong domain), with both TLS usages."""
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", "/CN=Causeway interop CA", "-keyout", "ca.key",
        "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=dir)
    for name, sans in (("prosody.test", ["prosody.test"]), ("gw.test", ["gw.test", "muc.gw.test"]),
                       ("wrong.test", ["wrong.test"]), ("ejabberd.test", ["ejabberd.test"])):
        ext = dir / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName={','.join('DNS:' + s for s in sans)}\n"
        )
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=dir)
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=dir)


class Prosody:
    name = "Prosody"
    domain = "prosody.test"
    ip = PROSODY_IP

    def __init__(self, dir: Path, certificate: str = "prosody.test", secure: bool = True) -> None:
        self.dir = dir
        self.certificate = certificate
        self.secure = secure
        self.config = dir / "prosody.cfg.lua"
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> None:
        certs = self.dir / "certs"
        certs.mkdir(exist_ok=True)
        for suffix in ("crt", "key"):
            shutil.copy(self.dir / f"{self.certificate}.{suffix}", certs / f"prosody.test.{suffix}")
        (self.dir / "data").mkdir(exist_ok=True)
        (self.dir / "hosts.test").write_text(
            f"127.0.0.1 localhost\n{PROSODY_IP} prosody.test\n{GATEWAY_IP} gw.test muc.gw.test\n"
        )
        if self.secure:
            security = (
                "s2s_require_encryption = true\ns2s_secure_auth = true\n"
                f'ssl = {{ cafile = "{self.dir}/ca.crt" }}\n'
            )
        else:
            # Easy mode: dialback, certificates neither required nor trusted.
            security = "s2s_require_encryption = false\ns2s_secure_auth = false\n"
        self.config.write_text(f"""
run_as_root = true
pidfile = "{self.dir}/prosody.pid"
data_path = "{self.dir}/data"
log = {{ debug = "{self.dir}/prosody.log" }}
interfaces = {{ "{PROSODY_IP}" }}
s2s_direct_tls_ports = {{ 5270 }}
{security}c2s_require_encryption = true
certificates = "{self.dir}/certs"
unbound = {{ hoststxt = "{self.dir}/hosts.test" }}
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "presence"; "message"; "iq";
    "s2s_auth_certs"; "vcard";
}}
modules_disabled = {{ "offline" }}
authentication = "internal_hashed"
VirtualHost "prosody.test"
""")

    def start(self) -> None:
        self.write_config()
        self.register("bob", "bobpw")
        self.start_again()

    def register(self, user: str, password: str) -> None:
        run("prosodyctl", "--config", str(self.config), "register", user, "prosody.test", password)

    def start_again(self) -> None:
        """Starts Prosody on the configuration and data it has (after `stop`)."""
        log = open(self.dir / "prosody.stdout", "a")
        self.proc = subprocess.Popen(["prosody", "--config", str(self.config), "-F"],
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                import socket
                with socket.create_connection((PROSODY_IP, 5222), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("Prosody did not start:\n" + self.log_tail())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log_tail(self, lines: int = 60) -> str:
        path = self.dir / "prosody.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class GatewayCauseway(harness.Causeway):
    """Causeway as gw.test with its XMPP side on 127.0.0.5."""

    def __init__(self, binary: str, certs: Path, direct_tls: bool, certificate: str = "gw.test",
                 dialback: bool = False, peer_domain: str = "prosody.test",
                 peer_ip: str = PROSODY_IP) -> None:
        super().__init__(binary)
        self.peer_domain = peer_domain
        self.peer_ip = peer_ip
        self.certs = certs
        self.direct_tls = direct_tls
        self.certificate = certificate
        self.dialback = dialback

    def config_text(self) -> str:
        port = 5270 if self.direct_tls else 5269
        return (
            '[server]\nname = "gw.test"\n'
            f"data_dir = {harness._toml_str(str(self.data_dir))}\n"
            f'\n[client_api]\nbind = "127.0.0.1:{self.port}"\n'
            "\n[federation]\nenabled = false\n"
            "\n[xmpp]\n"
            f'listen_starttls = ["{GATEWAY_IP}:5269"]\n'
            f'listen_direct_tls = ["{GATEWAY_IP}:5270"]\n'
            f"tls_certificate = {harness._toml_str(str(self.certs / (self.certificate + '.crt')))}\n"
            f"tls_private_key = {harness._toml_str(str(self.certs / (self.certificate + '.key')))}\n"
            + (
                # Dialback mode: no CA, so Prosody's certificate does not verify.
                "ca_files = []\ndialback = true\n" if self.dialback
                else f"ca_files = [{harness._toml_str(str(self.certs / 'ca.crt'))}]\ndialback = false\n"
            )
            + "system_roots = false\n"
            "\n[[xmpp.routes]]\n"
            f'domain = "{self.peer_domain}"\n'
            f'address = "{self.peer_ip}:{port}"\n'
            f"direct_tls = {'true' if self.direct_tls else 'false'}\n"
            '\n[logging]\nfilter = "info,causeway_xmpp=debug"\n'
            '\n[registration]\nmode = "open"\n'
        )


async def message_from_causeway(gateway: "GatewayCauseway", client, inbox: asyncio.Queue,
                                checks: harness.Checks, label: str,
                                domain: str = "prosody.test") -> None:
    """A local account of Causeway writes to Bob through the bridge; the message arrives."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        account = await harness.register_user(http, gateway.base_url, "alice", "alice's password")
        auth = {"Authorization": f"Bearer {account['access_token']}"}
        async with http.post(f"{gateway.base_url}/_matrix/client/v3/createRoom", headers=auth,
                             json={"is_direct": True,
                                   "invite": [f"@_xmpp_bob=40{domain}:gw.test"]}) as response:
            room = (await response.json())["room_id"]
        text = f"Hello Bob, {label}"
        async with http.put(f"{gateway.base_url}/_matrix/client/v3/rooms/{room}/send/m.room.message/1",
                            headers=auth, json={"msgtype": "m.text", "body": text}) as response:
            checks.check(response.status == 200, f"{label}: alice@gw.test sends Bob a message",
                         await response.text())
    try:
        while True:
            message = await asyncio.wait_for(inbox.get(), 20)
            if message["body"]:
                break
        checks.check(str(message["from"]) == "alice@gw.test" and message["body"] == text,
                     f"{label}: Bob receives it on {domain}", str(message))
    except asyncio.TimeoutError:
        checks.check(False, f"{label}: Bob receives it on {domain}", "nothing arrived")


async def client_checks(ca: Path, checks: harness.Checks, label: str,
                        gateway: "GatewayCauseway | None" = None, domain: str = "prosody.test",
                        ip: str = PROSODY_IP) -> None:
    import slixmpp
    from slixmpp.exceptions import IqError, IqTimeout

    client = slixmpp.ClientXMPP(f"bob@{domain}/interop", "bobpw")
    client.register_plugin("xep_0030")
    client.register_plugin("xep_0199")
    client.ca_certs = str(ca)
    inbox: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("message", inbox.put_nowait)
    ready: asyncio.Future = asyncio.get_running_loop().create_future()

    def started(_event) -> None:
        client.send_presence()
        if not ready.done():
            ready.set_result(True)

    client.add_event_handler("session_start", started)
    client.add_event_handler("failed_auth", lambda _event: ready.done() or ready.set_exception(RuntimeError("auth failed")))
    presences: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("presence_error", presences.put_nowait)
    client.connect(host=ip, port=5222)
    try:
        await asyncio.wait_for(ready, 20)
        checks.check(True, f"{label}: slixmpp logged in on {domain}")

        start = time.monotonic()
        rtt = await client.plugin["xep_0199"].ping("gw.test", timeout=20)
        checks.check(True, f"{label}: ping gw.test answered ({rtt * 1000:.0f} ms, first one "
                  f"{(time.monotonic() - start) * 1000:.0f} ms with both streams set up)")

        info = await client.plugin["xep_0030"].get_info(jid="gw.test", timeout=20)
        identities = info["disco_info"]["identities"]
        features = info["disco_info"]["features"]
        checks.check(any(i[0] == "server" and i[1] == "im" for i in identities),
                     f"{label}: disco#info of gw.test names a server/im", repr(identities))
        checks.check("urn:xmpp:ping" in features and "jabber:iq:version" in features,
                     f"{label}: disco#info of gw.test lists ping and version", repr(features))

        items = await client.plugin["xep_0030"].get_items(jid="gw.test", timeout=20)
        listed = [item[0] for item in items["disco_items"]["items"]]
        checks.check(listed == ["muc.gw.test"],
                     f"{label}: disco#items of gw.test lists the MUC service", repr(listed))
        info = await client.plugin["xep_0030"].get_info(jid="muc.gw.test", timeout=20)
        identities = info["disco_info"]["identities"]
        checks.check(any(i[0] == "conference" and i[1] == "text" for i in identities)
                     and "http://jabber.org/protocol/muc" in info["disco_info"]["features"],
                     f"{label}: disco#info of muc.gw.test names a conference/text MUC service",
                     repr(identities))
        # A join of a room that does not exist gets its error at once.
        client.send_presence(pto="room@muc.gw.test/Bob")
        while True:
            # Errors about other presence (to contacts of earlier runs) are not this one.
            error = await asyncio.wait_for(presences.get(), 10)
            if str(error["from"]) == "room@muc.gw.test/Bob":
                break
        checks.check(str(error["from"]) == "room@muc.gw.test/Bob"
                     and error["error"]["condition"] == "item-not-found",
                     f"{label}: a join of a room that does not exist gets item-not-found", str(error))

        try:
            await client.plugin["xep_0030"].get_items(jid="alice@gw.test", timeout=20)
            checks.check(False, f"{label}: a query Causeway does not handle was answered with a result")
        except IqError as error:
            condition = error.iq["error"]["condition"]
            checks.check(condition == "service-unavailable",
                         f"{label}: an unhandled query gets service-unavailable", repr(condition))
        if gateway is not None:
            await message_from_causeway(gateway, client, inbox, checks, label, domain)
    except (IqError, IqTimeout, asyncio.TimeoutError, RuntimeError) as error:
        checks.check(False, f"{label}: {type(error).__name__}: {error}")
    finally:
        client.disconnect()
        await asyncio.sleep(0.5)


async def ping_fails(ca: Path, checks: harness.Checks, label: str, verify: bool = True) -> None:
    """The client's ping of gw.test must fail: the servers cannot authenticate each other.

    `verify=False` when Prosody's own certificate does not name prosody.test: the client then
    accepts it, since what is tested is the servers' refusal of each other."""
    import ssl

    import slixmpp
    from slixmpp.exceptions import IqError, IqTimeout

    client = slixmpp.ClientXMPP("bob@prosody.test/interop", "bobpw")
    client.register_plugin("xep_0199")
    client.ca_certs = str(ca)
    if not verify:
        client.ssl_context.check_hostname = False
        client.ssl_context.verify_mode = ssl.CERT_NONE
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_start", lambda _event: ready.done() or ready.set_result(True))
    client.connect(host=PROSODY_IP, port=5222)
    try:
        await asyncio.wait_for(ready, 20)
        try:
            await client.plugin["xep_0199"].ping("gw.test", timeout=15)
            checks.check(False, f"{label}: the ping went through")
        except IqError as error:
            condition = error.iq["error"]["condition"]
            checks.check(condition in ("remote-server-not-found", "remote-server-timeout", "not-authorized"),
                         f"{label}: the ping fails with {condition}", repr(condition))
        except IqTimeout:
            checks.check(True, f"{label}: the ping gets no answer")
    finally:
        client.disconnect()
        await asyncio.sleep(0.5)


def garbage_gets_a_stream_error(checks: harness.Checks) -> None:
    """A peer sending garbage gets a stream error, and the connection is closed."""
    import socket

    with socket.create_connection((GATEWAY_IP, 5269), timeout=10) as sock:
        sock.sendall(b"<stream:stream xmlns='jabber:server' "
                     b"xmlns:stream='http://etherx.jabber.org/streams' to='gw.test' "
                     b"from='garbage.test' version='1.0'><<<this is not xml>>>")
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    text = received.decode(errors="replace")
    checks.check("not-well-formed" in text, "a garbage peer gets <not-well-formed/>", text)
    checks.check("<stream:error>" in text,
                 "written as <stream:error>, with the prefix the header declares (RFC 6120 §4.9)", text)
    checks.check(text.endswith("</stream:stream>"), "and its stream is closed", text)


def read_until(sock, needle: bytes, timeout: float = 20) -> bytes:
    """Reads from `sock` until `needle` arrives or the peer closes."""
    sock.settimeout(timeout)
    received = b""
    while needle not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def forged_dialback_key_is_refused(checks: harness.Checks) -> None:
    """Someone claiming prosody.test offers Causeway a dialback key Prosody never gave: Causeway
    asks Prosody (the authoritative server), answers invalid and closes the stream."""
    import socket
    import ssl

    header = (b"<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' "
              b"xmlns:stream='http://etherx.jabber.org/streams' to='gw.test' "
              b"from='prosody.test' version='1.0'>")
    with socket.create_connection((GATEWAY_IP, 5269), timeout=20) as raw:
        raw.sendall(header)
        read_until(raw, b"features>")
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        read_until(raw, b"<proceed")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(raw, server_hostname="gw.test") as tls:
            tls.sendall(header)
            features = read_until(tls, b"features>").decode(errors="replace")
            checks.check("urn:xmpp:features:dialback" in features,
                         "dialback mode: Causeway offers dialback to a peer without a trusted certificate",
                         features)
            checks.check("<stream:features>" in features and "xmlns:db=" in features,
                         "in <stream:features>, on a stream declaring the stream and db prefixes",
                         features)
            tls.sendall(b"<db:result from='prosody.test' to='gw.test'>"
                        b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef</db:result>")
            received = read_until(tls, b"</stream:stream>").decode(errors="replace")
    checks.check("type='invalid'" in received and received.endswith("</stream:stream>"),
                 "dialback mode: a forged key is refused after asking Prosody, and the stream closed",
                 received)


def check_authentication(checks: harness.Checks, gateway: "GatewayCauseway", peer: str,
                         peer_name: str, secure: bool, label: str) -> None:
    """From Causeway's log: the streams between it and `peer` were encrypted and authenticated
    with SASL EXTERNAL (`secure`) or Server Dialback, both ways."""
    log = gateway.log_path.read_text(errors="replace") if gateway.log_path.exists() else ""
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # colours, should the log have them
    lines = [line for line in log.splitlines() if peer in line]
    inbound = [line for line in lines if "inbound stream authenticated" in line
               or "inbound domain pair authenticated" in line]
    outbound = [line for line in lines if "outbound stream authenticated" in line]
    method, inbound_mark, outbound_mark = (
        ("SASL EXTERNAL", "SASL EXTERNAL", "SaslExternal") if secure
        else ("dialback", 'method="dialback"', "Dialback"))
    checks.check(bool(inbound) and all(inbound_mark in line for line in inbound),
                 f"{label}: {peer_name}'s streams to Causeway are authenticated by {method}",
                 "\n".join(inbound) or log[-3000:])
    checks.check(bool(outbound) and all(outbound_mark in line and "TLS" in line for line in outbound),
                 f"{label}: Causeway's streams to {peer_name} are encrypted and authenticated by {method}",
                 "\n".join(outbound) or log[-3000:])


def cannot_run(args: argparse.Namespace) -> int | None:
    """The exit code of a Prosody test that cannot run: there is no XMPP side to test against
    Synapse, and Prosody and openssl must be installed."""
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    if not shutil.which("prosody") or not shutil.which("openssl"):
        print("FAIL: prosody and openssl are needed (scripts/test-all installs them)")
        return 1
    return None


def main() -> int:
    parser = harness.test_argparser(__doc__.splitlines()[0])
    args = parser.parse_args()
    cannot = cannot_run(args)
    if cannot is not None:
        return cannot
    logging.basicConfig(level=logging.WARNING)
    work = harness.make_workdir("xmpp-prosody-")
    make_certificates(work)
    checks = harness.Checks("xmpp-prosody")
    prosody = Prosody(work)
    prosody.start()
    try:
        for direct in (False, True):
            label = "direct TLS" if direct else "STARTTLS"
            gateway = GatewayCauseway(args.causeway, work, direct)
            gateway.start()
            try:
                asyncio.run(client_checks(work / "ca.crt", checks, label, gateway))
                if not direct:
                    # Garbage from one peer disturbs nobody else.
                    garbage_gets_a_stream_error(checks)
                    asyncio.run(client_checks(work / "ca.crt", checks, "after the garbage peer"))
            finally:
                gateway.stop()
                if checks.failures:
                    print("--- Causeway log ---\n" + gateway.log_tail(80))
        # Causeway presents a certificate for another domain: Prosody refuses it.
        gateway = GatewayCauseway(args.causeway, work, False, certificate="wrong.test")
        gateway.start()
        try:
            asyncio.run(ping_fails(work / "ca.crt", checks, "Causeway with a certificate for wrong.test"))
        finally:
            gateway.stop()
    finally:
        prosody.stop()
        if checks.failures:
            print("--- Prosody log ---\n" + prosody.log_tail())
    # Dialback mode: neither trusts the other's certificate.
    prosody = Prosody(work, secure=False)
    prosody.start()
    try:
        for direct in (False, True):
            label = "dialback, " + ("direct TLS" if direct else "STARTTLS")
            gateway = GatewayCauseway(args.causeway, work, direct, dialback=True)
            gateway.start()
            try:
                asyncio.run(client_checks(work / "ca.crt", checks, label, gateway))
                check_authentication(checks, gateway, "prosody.test", "Prosody", False, label)
                if not direct:
                    forged_dialback_key_is_refused(checks)
            finally:
                gateway.stop()
                if checks.failures:
                    print("--- Causeway log ---\n" + gateway.log_tail(80))
    finally:
        prosody.stop()
        if checks.failures:
            print("--- Prosody log ---\n" + prosody.log_tail())
    # Prosody presents a certificate for another domain: Causeway offers it no SASL EXTERNAL.
    prosody = Prosody(work, certificate="wrong.test")
    prosody.start()
    gateway = GatewayCauseway(args.causeway, work, False)
    gateway.start()
    try:
        asyncio.run(ping_fails(work / "ca.crt", checks, "Prosody with a certificate for wrong.test",
                               verify=False))
        log = gateway.log_path.read_text(errors="replace") if gateway.log_path.exists() else ""
        checks.check("inbound stream authenticated" not in log,
                     "Causeway authenticated no stream for the wrong certificate", log[-3000:])
    finally:
        gateway.stop()
        prosody.stop()
        if checks.failures:
            print("--- Prosody log ---\n" + prosody.log_tail())
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
