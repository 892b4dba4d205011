"""XMPP server-to-server interop with a real ejabberd (Debian package), in secure and dialback mode.

ejabberd serves ejabberd.test on 127.0.0.3 (see ejabberd.py); Causeway serves gw.test on
127.0.0.5 and reaches ejabberd.test through a fixed route. The certificates come from the test CA
of test_xmpp_prosody.py.

ejabberd reads stream elements by their prefixed names (`<stream:features>`, `<stream:error>`,
`<db:result>`), so these checks are the ones a namespace-lenient peer cannot make.

Secure mode (ejabberd: STARTTLS required, the test CA trusted, no dialback module; Causeway:
dialback = false), over STARTTLS and over XEP-0368 direct TLS from Causeway's side. A slixmpp
client logged in on ejabberd as bob@ejabberd.test:
- pings gw.test (ejabberd opens a stream to Causeway: STARTTLS, SASL EXTERNAL; Causeway answers
  over its own stream to ejabberd, again STARTTLS and SASL EXTERNAL);
- reads disco#info and disco#items of gw.test (the MUC service muc.gw.test) and disco#info of
  muc.gw.test, gets item-not-found for a join of a room that does not exist (at once), and
  service-unavailable for a query Causeway does not handle;
- receives a message that a local account of Causeway sends him through the bridge.
ejabberd's log must show the inbound EXTERNAL authentication of gw.test, and Causeway's the
inbound stream of ejabberd.test authenticated by SASL EXTERNAL.

Dialback mode (ejabberd: STARTTLS optional, no trusted CA, mod_s2s_dialback; Causeway trusts no
CA): the same client checks pass, both streams authenticated by dialback over TLS.

Run: python interop-tests/test_xmpp_ejabberd.py --causeway target/debug/causeway
Needs: ejabberd (Debian), openssl, slixmpp.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time

import ejabberd
import harness
import test_xmpp_prosody as xp


# What ejabberd logs when a peer ends a stream with <stream:error><system-shutdown/>.
SHUTDOWN_SEEN = "Stream closed by peer: the server is shutting down (system-shutdown)"


def cannot_run(args) -> int | None:
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    if not ejabberd.installed() or not shutil.which("openssl"):
        print("FAIL: ejabberd and openssl are needed (scripts/test-all installs them)")
        return 1
    return None


def main() -> int:
    parser = harness.test_argparser(__doc__.splitlines()[0])
    args = parser.parse_args()
    cannot = cannot_run(args)
    if cannot is not None:
        return cannot
    ejabberd.stop_system_ejabberd()
    logging.basicConfig(level=logging.WARNING)
    work = harness.make_workdir("xmpp-ejabberd-")
    xp.make_certificates(work)
    checks = harness.Checks("xmpp-ejabberd")
    for secure in (True, False):
        server = ejabberd.Ejabberd(work, secure=secure)
        server.start()
        try:
            for direct in (False, True):
                mode = "secure" if secure else "dialback"
                label = f"ejabberd, {mode}, " + ("direct TLS" if direct else "STARTTLS")
                gateway = xp.GatewayCauseway(args.causeway, work, direct, dialback=not secure,
                                             peer_domain=ejabberd.DOMAIN, peer_ip=ejabberd.IP)
                gateway.start()
                try:
                    asyncio.run(xp.client_checks(work / "ca.crt", checks, label, gateway,
                                                 domain=ejabberd.DOMAIN, ip=ejabberd.IP))
                    xp.check_authentication(checks, gateway, ejabberd.DOMAIN, "ejabberd", secure,
                                            label)
                    if secure:
                        ej_log = server.log_tail(400)
                        checks.check("Accepted inbound s2s EXTERNAL authentication gw.test -> "
                                     "ejabberd.test" in ej_log,
                                     f"{label}: ejabberd accepted Causeway by SASL EXTERNAL",
                                     ej_log[-3000:])
                finally:
                    closed_before = server.log_tail(5000).count(SHUTDOWN_SEEN)
                    gateway.stop()
                    if checks.failures:
                        print("--- Causeway log ---\n" + gateway.log_tail(80))
                # Causeway's stream error at shutdown is one ejabberd reads (<stream:error>).
                deadline = time.monotonic() + 10
                while (server.log_tail(5000).count(SHUTDOWN_SEEN) <= closed_before
                       and time.monotonic() < deadline):
                    time.sleep(0.2)
                checks.check(server.log_tail(5000).count(SHUTDOWN_SEEN) > closed_before,
                             f"{label}: ejabberd reads Causeway's system-shutdown stream error",
                             server.log_tail(20))
        finally:
            server.stop()
            if checks.failures:
                print("--- ejabberd log ---\n" + server.log_tail())
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
