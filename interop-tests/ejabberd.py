"""ejabberd (Debian package) as a private XMPP server for the interop tests: ejabberd.test on
127.0.0.3, in secure mode (test CA, STARTTLS required, SASL EXTERNAL) or dialback mode
(STARTTLS optional, no trusted CA, XEP-0220).

ejabberd resolves S2S hosts with libc, so it runs inside a mount namespace of its own
(``unshare --mount``) with a private hosts file bound on /etc/hosts: gw.test is Causeway's
loopback address there, and nothing else on the machine is touched. ejabberdctl switches to the
``ejabberd`` user: its directories are made readable for it, and its spool and logs its own.
The Erlang node listens for ejabberdctl on 127.0.0.1:5210 only (no epmd).

Its interface is the one of ``test_xmpp_prosody.Prosody``: ``start()`` (with bob registered),
``register()``, ``stop()``, ``start_again()``, ``log_tail()``, ``domain``, ``ip``. The
benchmark runs two at once, for two domains on two addresses.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DOMAIN = "ejabberd.test"
IP = "127.0.0.3"
COOKIE = "causeway-interop"


def installed() -> bool:
    return shutil.which("ejabberdctl") is not None


def stop_system_ejabberd() -> None:
    """The Debian package may start a system-wide ejabberd on 5222/5269/5280."""
    if subprocess.run(["pgrep", "-f", "-u", "ejabberd", "beam.*-s ejabberd"],
                      stdout=subprocess.DEVNULL).returncode == 0:
        subprocess.run(["service", "ejabberd", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


class Ejabberd:
    name = "ejabberd"

    def __init__(self, dir: Path, certificate: str | None = None, secure: bool = True,
                 gateway_ip: str = "127.0.0.5", domain: str = DOMAIN, ip: str = IP,
                 dist_port: int = 5210, loglevel: str = "info",
                 hosts: dict[str, str] | None = None, muc: bool = False) -> None:
        """`hosts`: further names ejabberd resolves (name → address), such as another
        server of the test; `dist_port` must differ between ejabberds running at once.
        `muc`: a MUC service on `conference.<domain>` (mod_muc with mod_mam: rooms not
        persistent, archived, 20 messages of history), with the certificate that names it."""
        self.domain = domain
        self.muc = muc
        self.conference = f"conference.{domain}"
        self.ip = ip
        self.dir = dir / f"ejabberd-{domain}"
        self.certs = dir
        self.certificate = certificate or domain
        self.secure = secure
        self.gateway_ip = gateway_ip
        self.dist_port = dist_port
        self.loglevel = loglevel
        self.extra_hosts = hosts or {}
        self.config = self.dir / "ejabberd.yml"
        self.proc: subprocess.Popen | None = None

    # -- configuration ------------------------------------------------------------------------
    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = ["ejabberdctl", "--config-dir", str(self.dir), "--config", str(self.config),
                   "--ctl-config", str(self.dir / "ejabberdctl.cfg"),
                   "--spool", str(self.dir / "database"), "--logs", str(self.dir / "logs"), *args]
        return subprocess.run(command, check=check, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60)

    def write_config(self) -> None:
        self.dir.mkdir(exist_ok=True)
        for sub in ("database", "logs"):
            (self.dir / sub).mkdir(exist_ok=True)
            shutil.chown(self.dir / sub, "ejabberd", "ejabberd")
        # ejabberd runs as its own user: every directory above must let it through.
        for parent in [self.dir, *self.dir.parents]:
            mode = parent.stat().st_mode
            if mode & 0o005 != 0o005:
                os.chmod(parent, mode | 0o005)
        pems = [(self.dir / "ejabberd.pem", self.certificate)]
        if self.muc:
            pems.append((self.dir / "conference.pem", self.conference))
        for pem, name in pems:
            pem.write_text((self.certs / f"{name}.crt").read_text()
                           + (self.certs / f"{name}.key").read_text())
        shutil.copy(self.certs / "ca.crt", self.dir / "ca.crt")
        for path in [pem for pem, _ in pems] + [self.dir / "ca.crt"]:
            shutil.chown(path, "ejabberd", "ejabberd")
            os.chmod(path, 0o640)
        self.hosts = self.dir / "hosts"
        self.hosts.write_text(f"127.0.0.1 localhost\n{self.ip} {self.domain}\n"
                              f"{self.gateway_ip} gw.test muc.gw.test\n"
                              + "".join(f"{ip} {name}\n" for name, ip in self.extra_hosts.items()))
        (self.dir / "inetrc").write_text('{lookup,["file","native"]}.\n')
        (self.dir / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE=ejabberd{self.dist_port}@localhost\n"
            f"ERL_DIST_PORT={self.dist_port}\n"
            f'ERL_OPTIONS="-setcookie {COOKIE} -kernel inet_dist_use_interface {{127,0,0,1}} '
            '-env ERL_CRASH_DUMP_BYTES 0"\n'
            f"EJABBERD_PID_PATH={self.dir}/logs/ejabberd.pid\n"
        )
        certfiles = "".join(f"  - {pem}\n" for pem, _ in pems)
        muc = ""
        if self.muc:
            muc = ("  mod_mam: {}\n"
                   "  mod_muc:\n"
                   "    access_create: all\n"
                   "    history_size: 20\n"
                   "    default_room_options:\n"
                   "      persistent: false\n"
                   "      mam: true\n")
        if self.secure:
            # Certificates both ways: STARTTLS required, the test CA trusted, no dialback.
            security = f"s2s_use_starttls: required\nca_file: {self.dir}/ca.crt\n"
            dialback = ""
        else:
            # Dialback: the test CA is not trusted, so nothing verifies and XEP-0220 is used.
            security = "s2s_use_starttls: optional\n"
            dialback = "  mod_s2s_dialback: {}\n"
        self.config.write_text(f"""\
hosts:
  - {self.domain}
loglevel: {self.loglevel}
log_rotate_count: 0
certfiles:
{certfiles}{security}s2s_access: s2s
outgoing_s2s_timeout: 10 s
s2s_dns_timeout: 2 s
s2s_max_retry_delay: 1
auth_method: internal
listen:
  - port: 5222
    ip: "{self.ip}"
    module: ejabberd_c2s
    starttls_required: true
  - port: 5269
    ip: "{self.ip}"
    module: ejabberd_s2s_in
  - port: 5270
    ip: "{self.ip}"
    module: ejabberd_s2s_in
    tls: true
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_vcard: {{}}
  mod_version: {{}}
  mod_caps: {{}}
{dialback}{muc}""")

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.write_config()
        self.start_again()
        self.register("bob", "bobpw")

    def register(self, user: str, password: str) -> None:
        result = self.ctl("register", user, self.domain, password, check=False)
        if result.returncode != 0 and "already registered" not in result.stdout:
            raise RuntimeError(f"ejabberdctl register {user}: {result.stdout}")

    def restart_forgetting_rooms(self) -> None:
        """A restart: its rooms are not persistent, so they and their occupants are gone."""
        self.stop()
        self.start_again()

    def start_again(self) -> None:
        """Starts ejabberd on the configuration and data it has (after `stop`)."""
        log = open(self.dir / "ejabberd.stdout", "a")
        inner = " ".join([
            f"mount --bind {self.hosts} /etc/hosts &&", "exec", "ejabberdctl",
            "--config-dir", str(self.dir), "--config", str(self.config),
            "--ctl-config", str(self.dir / "ejabberdctl.cfg"),
            "--spool", str(self.dir / "database"), "--logs", str(self.dir / "logs"), "foreground",
        ])
        self.proc = subprocess.Popen(["unshare", "--mount", "--", "sh", "-c", inner],
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ejabberd exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.ip, 5222), timeout=0.5):
                    pass
                with socket.create_connection((self.ip, 5269), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("ejabberd did not start:\n" + self.log_tail())

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            self.ctl("stop", check=False)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # A stopped node may leave its listeners to close a moment later.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.ip, 5269), timeout=0.2):
                    time.sleep(0.1)
            except OSError:
                return

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for path in (self.dir / "logs" / "ejabberd.log", self.dir / "logs" / "error.log",
                     self.dir / "ejabberd.stdout"):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(out) or "(no log)"
