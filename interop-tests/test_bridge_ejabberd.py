"""The bridge with a real ejabberd (Debian package), in secure and dialback mode.

The scenario is bridge_scenario.py: slixmpp users on ejabberd (ejabberd.test) and a matrix-nio
user on Causeway (gw.test) chat both ways with every extension, presence, subscriptions, vCards,
a restart of Causeway and an outage of ejabberd.

Run: python interop-tests/test_bridge_ejabberd.py --causeway target/debug/causeway
Needs: ejabberd (Debian), openssl, slixmpp, matrix-nio.
"""

from __future__ import annotations

import shutil
import sys

import bridge_scenario
import ejabberd


def main() -> int:
    if not ejabberd.installed() or not shutil.which("openssl"):
        print("FAIL: ejabberd and openssl are needed (scripts/test-all installs them)")
        return 1
    ejabberd.stop_system_ejabberd()
    return bridge_scenario.run_modes(lambda work, secure: ejabberd.Ejabberd(work, secure=secure),
                                     "ejabberd")


if __name__ == "__main__":
    sys.exit(main())
