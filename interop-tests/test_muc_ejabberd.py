"""Group chats both ways with a real ejabberd (Debian package) and its MUC (mod_muc, mod_mam).

Two scenarios, each on a fresh ejabberd (ejabberd.test on 127.0.0.3, secure mode) and Causeway
(gw.test on 127.0.0.5):

- Matrix rooms as MUCs: the scenario of test_muc_prosody.py with Bob and Carol on ejabberd
  (slixmpp) joining lobby@muc.gw.test: occupant list, history, subject, messages both ways with
  stanza ids, replies, corrections, retractions, the error cases, nickname change, kick, leave,
  a restart of Causeway.
- XMPP MUCs as Matrix rooms (portals): the scenario of test_portal_prosody.py with
  lobby@conference.ejabberd.test: @alice:gw.test (matrix-nio) joins its portal, history,
  messages and relations by the MUC's stanza ids, private messages, renaming, nicknames, power
  levels and moderation, both kinds of invitation, plumbing, refusals, a restart of Causeway
  (what was missed comes from the MUC's archive) and one of ejabberd, which forgets its rooms
  (Alice's self-ping finds out and she joins again).

Run: python interop-tests/test_muc_ejabberd.py --causeway target/debug/causeway
Needs: ejabberd (Debian), openssl, slixmpp, matrix-nio.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys

import ejabberd
import harness
import test_muc_prosody
import test_portal_prosody
import test_xmpp_prosody as xp
from bench_bridge import leaf


class MucEjabberd(ejabberd.Ejabberd):
    """ejabberd with its MUC service and the users of both scenarios."""

    def start(self) -> None:
        super().start()
        self.register("carol", "carolpw")
        self.register("dave", "davepw")


def main() -> int:
    if not ejabberd.installed() or not shutil.which("openssl"):
        print("FAIL: ejabberd and openssl are needed (scripts/test-all installs them)")
        return 1
    parser = harness.test_argparser("Group chats both ways with a real ejabberd")
    args = parser.parse_args()
    if args.synapse_venv:
        print("this test needs Causeway on the XMPP side; nothing to do against Synapse")
        return 0
    logging.basicConfig(level=logging.ERROR)
    ejabberd.stop_system_ejabberd()
    results = []
    for name, scenario in (("rooms as MUCs", test_muc_prosody.MucTest),
                           ("portals", test_portal_prosody.PortalTest)):
        print(f"\n######## ejabberd, {name}", flush=True)
        work = harness.make_workdir("muc-ejabberd-")
        xp.make_certificates(work)
        server = MucEjabberd(work, secure=True, muc=True)
        leaf(work, server.conference)
        test = scenario(args, work, server)
        asyncio.run(test.run())
        results.append(test.c)
    return max(checks.summary() for checks in results)


if __name__ == "__main__":
    sys.exit(main())
