"""The bridge with a real Prosody (Debian package), in secure and dialback mode.

The scenario is bridge_scenario.py: slixmpp users on Prosody (prosody.test) and a matrix-nio
user on Causeway (gw.test) chat both ways with every extension, presence, subscriptions, vCards,
a restart of Causeway and an outage of Prosody.

Run: python interop-tests/test_bridge_prosody.py --causeway target/debug/causeway
Needs: prosody and lua-unbound (Debian), openssl, slixmpp, matrix-nio.
"""

from __future__ import annotations

import shutil
import sys

import bridge_scenario
import test_xmpp_prosody as xp


def main() -> int:
    if not shutil.which("prosody") or not shutil.which("openssl"):
        print("FAIL: prosody and openssl are needed (scripts/test-all installs them)")
        return 1
    return bridge_scenario.run_modes(lambda work, secure: xp.Prosody(work, secure=secure), "Prosody")


if __name__ == "__main__":
    sys.exit(main())
