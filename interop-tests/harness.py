"""Shared helpers for Causeway's interop tests and benchmark.

What is here:

* ``free_port()``: a TCP port on 127.0.0.1 that nothing listens on.
* ``Causeway``: writes a config into a private directory, runs ``causeway serve --config`` as a
  subprocess with its log in that directory, waits until ``/_matrix/client/versions`` answers 200,
  and can ``stop()`` (SIGTERM), ``kill()`` (SIGKILL) and ``start()`` again on the same data.
* ``Synapse``: the same interface around a Synapse homeserver (SQLite, plain HTTP client
  listener on loopback), used by the benchmark and to check the tests themselves against a
  reference server (``--synapse-venv``).
* ``Checks``: a small result collector: named steps, precise checks, a summary and an exit code.
* ``HttpRecorder``: records the raw HTTP exchanges of a matrix-nio client so that a failed check
  can print the exact request and response.
* ``register_user()``: the spec's user-interactive registration flow over aiohttp.
* ``FederationTls`` and ``federating()``: a private CA with a certificate for ``localhost``, and
  the federation listeners (TLS, on a port of their own that is part of the server name, such
  as ``localhost:40123``) of Causeway and Synapse servers that know each other.

Every server process started here is ended when the interpreter exits (atexit, and SIGTERM is
turned into a normal exit), so a failed or interrupted test leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# ---------------------------------------------------------------------------------------------
# Process bookkeeping
# ---------------------------------------------------------------------------------------------

_LIVE: set["ServerProcess"] = set()


def _cleanup_all() -> None:
    for server in list(_LIVE):
        try:
            server.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_cleanup_all)


def _on_sigterm(signum: int, _frame: Any) -> None:
    # Turn SIGTERM into SystemExit so that atexit handlers run and children are ended.
    raise SystemExit(128 + signum)


try:
    signal.signal(signal.SIGTERM, _on_sigterm)
except ValueError:  # imported outside the main thread
    pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_workdir(prefix: str) -> Path:
    """A fresh private directory for one server (under $CAUSEWAY_TEST_TMPDIR if set)."""
    base = os.environ.get("CAUSEWAY_TEST_TMPDIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def read_proc_status(pid: int, key: str) -> int | None:
    """A kB value such as VmRSS or VmHWM from /proc/PID/status, or None if unavailable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time consumed so far by the process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        # After the ")" the fields start at index 3 (state); utime is field 14, stime 15.
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """A homeserver run as a subprocess with its output in a log file."""

    kind = "server"

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.workdir = workdir or make_workdir(f"{self.kind}-")
        self.port = port or free_port()
        self.server_name = f"localhost:{self.port}"
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Set by ``federating()``: the TLS federation listener's port, named in the server name.
        self.federation_port: int | None = None
        self.tls: FederationTls | None = None
        self.peers: list[ServerProcess] = []
        self.log_path = self.workdir / f"{self.kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def federate(self, tls: "FederationTls") -> None:
        """Serves federation over TLS on a port of its own, which the server name names."""
        self.federation_port = free_port()
        self.server_name = f"localhost:{self.federation_port}"
        self.tls = tls

    # -- to be provided by subclasses -------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration before the first start."""

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self.running():
            raise ServerError(f"{self.kind} is already running")
        if self.starts == 0:
            self.prepare()
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - our own binary
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        _LIVE.add(self)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        url = f"{self.base_url}/_matrix/client/versions"
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        while time.monotonic() < deadline:
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise ServerError(
                    f"{self.kind} exited with code {code} before it was ready\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                last_error = f"HTTP {err.code}"
            except (urllib.error.URLError, OSError) as err:
                last_error = str(err)
            time.sleep(0.1)
        self.kill()
        raise ServerError(
            f"{self.kind} not ready after {timeout:.0f} s ({last_error})\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _LIVE.discard(self)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush or clean up."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _LIVE.discard(self)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    def cleanup(self, remove: bool = True) -> None:
        self.kill()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        keep = exc_type is not None or bool(os.environ.get("CAUSEWAY_KEEP_WORK"))
        self.cleanup(remove=not keep)
        if keep:
            print(f"[{self.kind}] work directory kept: {self.workdir}", file=sys.stderr)

    # -- inspection -------------------------------------------------------------------------
    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        tail = "\n".join("    " + line for line in text[-lines:])
        return f"--- last {min(lines, len(text))} lines of {self.log_path} ---\n{tail}"

    def rss_kb(self) -> int | None:
        return read_proc_status(self.pid, "VmRSS") if self.running() and self.pid else None

    def hwm_kb(self) -> int | None:
        return read_proc_status(self.pid, "VmHWM") if self.running() and self.pid else None

    def cpu_seconds(self) -> float | None:
        return read_cpu_seconds(self.pid) if self.running() and self.pid else None


def _toml_str(value: str) -> str:
    # JSON string syntax is valid TOML basic-string syntax for everything we write.
    return json.dumps(value)


class Causeway(ServerProcess):
    """``causeway serve --config`` in a private directory."""

    kind = "causeway"

    def __init__(
        self,
        binary: str | Path,
        workdir: Path | None = None,
        port: int | None = None,
        rate: float = 1000.0,
        log_filter: str = "info",
        extra_toml: str = "",
    ) -> None:
        super().__init__(workdir, port)
        self.binary = Path(binary).resolve()
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "causeway.toml"
        self.rate = rate
        self.log_filter = log_filter
        self.extra_toml = extra_toml
        # Set to put something between this server and the others (a relay that can cut the
        # network): the port its federation listener binds to (else the port its name names),
        # and the port it reaches each peer at, by server name (else the peer's own).
        self.federation_bind_port: int | None = None
        self.peer_ports: dict[str, int] = {}

    def federation_toml(self) -> str:
        if self.tls is None or self.federation_port is None:
            return "\n[federation]\nenabled = false\n"
        destinations = "".join(
            f"{_toml_str(peer.server_name)} = "
            f"{_toml_str(f'127.0.0.1:{self.peer_ports.get(peer.server_name, peer.federation_port)}')}\n"
            for peer in self.peers
            if peer.federation_port is not None
        )
        bind_port = self.federation_bind_port or self.federation_port
        return (
            "\n[federation]\nenabled = true\n"
            f"bind = {_toml_str(f'127.0.0.1:{bind_port}')}\n"
            f"tls_certificate = {_toml_str(str(self.tls.cert))}\n"
            f"tls_private_key = {_toml_str(str(self.tls.key))}\n"
            f"ca_files = [{_toml_str(str(self.tls.ca))}]\n"
            f"\n[federation.destinations]\n{destinations}"
        )

    def config_text(self) -> str:
        burst = max(1, int(self.rate))
        limits = "".join(
            f"\n[rate_limits.{name}]\nper_second = {float(self.rate)!r}\nburst = {burst}\n"
            for name in ("login", "registration", "message")
        )
        return (
            "[server]\n"
            f"name = {_toml_str(self.server_name)}\n"
            f"data_dir = {_toml_str(str(self.data_dir))}\n"
            "\n[client_api]\n"
            f"bind = {_toml_str(f'127.0.0.1:{self.port}')}\n"
            f"{self.federation_toml()}"
            "\n[xmpp]\nenabled = false\n"
            '\n[registration]\nmode = "open"\n'
            f"{limits}"
            f"\n[logging]\nfilter = {_toml_str(self.log_filter)}\n"
            f"{self.extra_toml}"
        )

    def prepare(self) -> None:
        if not self.binary.is_file():
            raise ServerError(f"no Causeway binary at {self.binary}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())

    def command(self) -> list[str]:
        return [str(self.binary), "serve", "--config", str(self.config_path)]


class Synapse(ServerProcess):
    """Synapse with SQLite and one plain-HTTP client listener on 127.0.0.1."""

    kind = "synapse"

    def __init__(
        self,
        venv: str | Path,
        workdir: Path | None = None,
        port: int | None = None,
        presence: bool = False,
        log_level: str = "INFO",
    ) -> None:
        super().__init__(workdir, port)
        self.venv = Path(venv).resolve()
        self.python = self.venv / "bin" / "python"
        self.config_path = self.workdir / "homeserver.yaml"
        self.presence = presence
        self.log_level = log_level

    def config(self) -> dict[str, Any]:
        high = {"per_second": 100000, "burst_count": 100000}
        wd = self.workdir
        return {
            "server_name": self.server_name,
            "pid_file": str(wd / "homeserver.pid"),
            "report_stats": False,
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(wd / "homeserver.db")}},
            "log_config": str(wd / "log.yaml"),
            "media_store_path": str(wd / "media_store"),
            "signing_key_path": str(wd / "signing.key"),
            "registration_shared_secret": secrets.token_hex(16),
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "enable_registration": True,
            "enable_registration_without_verification": True,
            # (Tests register many users; the lowest cost bcrypt takes.)
            "bcrypt_rounds": 4,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_metrics": False,
            "presence": {"enabled": self.presence},
            "url_preview_enabled": False,
            "rc_message": high,
            "rc_registration": high,
            "rc_registration_token_validity": high,
            "rc_login": {"address": high, "account": high, "failed_attempts": high},
            "rc_admin_redaction": high,
            "rc_joins": {"local": high, "remote": high},
            "rc_joins_per_room": high,
            "rc_key_requests": high,
            "rc_3pid_validation": high,
            "rc_invites": {"per_room": high, "per_user": high, "per_issuer": high},
            "rc_third_party_invite": high,
            "rc_media_create": high,
            "rc_presence": {"per_user": high},
            "rc_delayed_event_mgmt": high,
            "rc_room_creation": high,
            "rc_reports": high,
            "rc_user_directory": high,
            "rc_profile": high,
            "rc_federation": {
                "window_size": 1000,
                "sleep_limit": 100000,
                "sleep_delay": 1,
                "reject_limit": 100000,
                "concurrent": 1000,
            },
        }

    def federation_config(self) -> dict[str, Any]:
        """A TLS federation listener, loopback peers allowed, the private CA trusted, and
        short retry intervals (a test waits seconds, not minutes, for a peer that came back)."""
        if self.tls is None or self.federation_port is None:
            return {}
        return {
            "tls_certificate_path": str(self.tls.cert),
            "tls_private_key_path": str(self.tls.key),
            "federation_custom_ca_list": [str(self.tls.ca)],
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            "allow_public_rooms_over_federation": True,
            # (Synapse publishes no room in its directory by default.)
            "room_list_publication_rules": [{"action": "allow"}],
            "federation": {
                "client_timeout": "20s",
                "max_short_retry_delay": "2s",
                "max_long_retry_delay": "5s",
                "max_short_retries": 3,
                "max_long_retries": 10,
                "destination_min_retry_interval": "1s",
                "destination_retry_multiplier": 1,
                "destination_max_retry_interval": "3s",
            },
        }

    def log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"level": self.log_level, "handlers": ["stderr"]},
            "disable_existing_loggers": False,
        }

    def prepare(self) -> None:
        if not self.python.is_file():
            raise ServerError(f"no Synapse virtualenv at {self.venv}")
        config = self.config()
        if self.tls is not None and self.federation_port is not None:
            config.update(self.federation_config())
            config["listeners"].append({
                "port": self.federation_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["federation"], "compress": False}],
            })
        # JSON is a subset of YAML: no YAML library is needed on this side.
        self.config_path.write_text(json.dumps(config, indent=2))
        (self.workdir / "log.yaml").write_text(json.dumps(self.log_config(), indent=2))
        subprocess.run(  # noqa: S603
            [
                str(self.python), "-m", "synapse.app.homeserver",
                "--config-path", str(self.config_path), "--generate-keys",
            ],
            check=True, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def command(self) -> list[str]:
        return [str(self.python), "-m", "synapse.app.homeserver", "--config-path", str(self.config_path)]


# ---------------------------------------------------------------------------------------------
# Federation on loopback
# ---------------------------------------------------------------------------------------------


class FederationTls:
    """A private certificate authority and a certificate it issued for ``localhost`` (every
    server on loopback is ``localhost:<port>``; TLS names the host without the port)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.crt"
        self.cert = directory / "localhost.crt"
        self.key = directory / "localhost.key"

        def run(*command: str) -> None:
            subprocess.run(command, cwd=directory, check=True,  # noqa: S603
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=Causeway federation test CA",
            "-keyout", "ca.key", "-out", "ca.crt",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        (directory / "localhost.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost\n"
        )
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", "/CN=localhost", "-keyout", "localhost.key", "-out", "localhost.csr")
        run("openssl", "x509", "-req", "-in", "localhost.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "localhost.ext", "-out", "localhost.crt")


def federating(servers: list[ServerProcess], directory: Path) -> FederationTls:
    """Makes servers (not yet started) federate with each other over TLS on loopback."""
    tls = FederationTls(directory)
    for server in servers:
        server.federate(tls)
    for server in servers:
        server.peers = [peer for peer in servers if peer is not server]
    return tls


# ---------------------------------------------------------------------------------------------
# Command line shared by the test scripts
# ---------------------------------------------------------------------------------------------


def test_argparser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--causeway",
        default=os.environ.get("CAUSEWAY_BIN", str(REPO / "target" / "debug" / "causeway")),
        help="path to the causeway binary (default: target/debug/causeway)",
    )
    parser.add_argument(
        "--synapse-venv",
        help="run the test against Synapse from this virtualenv instead of Causeway "
        "(checks the test itself against a reference server)",
    )
    return parser


def server_from_args(args: argparse.Namespace, **causeway_kwargs: Any) -> ServerProcess:
    if args.synapse_venv:
        return Synapse(args.synapse_venv)
    return Causeway(args.causeway, **causeway_kwargs)


def synapse_peer_argparser(description: str) -> argparse.ArgumentParser:
    """The command line of a test with Synapse as Causeway's peer: `--synapse-peer-venv`."""
    parser = test_argparser(description)
    parser.add_argument(
        "--synapse-peer-venv",
        default=os.environ.get("CAUSEWAY_SYNAPSE_VENV", str(REPO / ".venv" / "synapse")),
        help="the Synapse virtualenv of the peer (default: .venv/synapse)",
    )
    return parser


async def with_synapse_peer(
    description: str,
    run: Callable[[Causeway, Synapse, Path], Awaitable[int]],
    workdir_prefix: str,
    **synapse_kwargs: Any,
) -> int:
    """The entry point of a test of Causeway federating with one Synapse: parses the command
    line, starts both servers federating over TLS on loopback, runs `run(causeway, synapse,
    workdir)` and shows both logs' tails when it fails."""
    args = synapse_peer_argparser(description).parse_args()
    if args.synapse_venv:
        print("this test needs Causeway and Synapse together; --synapse-venv does not apply")
        return 0
    causeway = Causeway(args.causeway, log_filter="info,causeway_matrix=debug")
    synapse = Synapse(args.synapse_peer_venv, **synapse_kwargs)
    work = make_workdir(workdir_prefix)
    federating([causeway, synapse], Path(work) / "tls")
    with causeway, synapse:
        synapse.start(timeout=60)
        causeway.start()
        print(f"causeway {causeway.server_name} (client {causeway.base_url}), "
              f"synapse {synapse.server_name} (client {synapse.base_url})")
        code = await run(causeway, synapse, Path(work))
        if code != 0:
            print(causeway.log_tail(60))
            print(synapse.log_tail(60))
            raise SystemExit(code)
        return code


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


class StepFailed(Exception):
    pass


class Checks:
    """Collects precise checks grouped in steps; a step that raises is recorded as failed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.passed = 0
        self.failures: list[str] = []
        self.failed_steps: set[str] = set()
        self.aborted_steps: set[str] = set()  # steps that did not run to their end
        self.step_name = "-"

    def _fail(self, what: str, detail: str | None) -> None:
        label = f"[{self.step_name}] {what}"
        self.failures.append(label)
        print(f"  FAIL {what}", flush=True)
        if detail:
            for line in detail.rstrip().splitlines():
                print(f"       {line}")
        self.failed_steps.add(self.step_name)

    def check(self, cond: bool, what: str, detail: str | None = None, quiet: bool = False) -> bool:
        if cond:
            self.passed += 1
            if not quiet:
                print(f"  ok   {what}", flush=True)
        else:
            self._fail(what, detail)
        return bool(cond)

    def equal(self, actual: Any, expected: Any, what: str, detail: str | None = None) -> bool:
        ok = actual == expected
        msg = f"expected {expected!r}\n got      {actual!r}"
        if detail:
            msg += "\n" + detail
        return self.check(ok, what, None if ok else msg)

    def require(self, cond: bool, what: str, detail: str | None = None, quiet: bool = False) -> None:
        """A check whose failure ends the current step."""
        if not self.check(cond, what, detail, quiet):
            raise StepFailed(what)

    async def step(
        self, name: str, fn: Callable[[], Awaitable[None]], needs: tuple[str, ...] = ()
    ) -> bool:
        self.step_name = name
        print(f"\n== {name}", flush=True)
        missing = [n for n in needs if n in self.aborted_steps]
        if missing:
            self._fail("skipped", f"depends on unfinished step(s): {', '.join(missing)}")
            self.aborted_steps.add(name)
            return False
        try:
            await fn()
        except StepFailed:
            self.aborted_steps.add(name)
        except Exception as err:  # noqa: BLE001 - any error fails the step, with its traceback
            self._fail(f"unexpected {type(err).__name__}: {err}", traceback.format_exc())
            self.aborted_steps.add(name)
        return name not in self.failed_steps

    def summary(self) -> int:
        print()
        if self.failures:
            print(f"{self.name}: {len(self.failures)} check(s) failed, {self.passed} passed:")
            for f in self.failures:
                print(f"  - {f}")
            return 1
        print(f"{self.name}: all {self.passed} checks passed")
        return 0


# ---------------------------------------------------------------------------------------------
# HTTP recording for matrix-nio clients
# ---------------------------------------------------------------------------------------------


def _short(data: Any, limit: int = 1500) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        try:
            data = data.decode()
        except UnicodeDecodeError:
            return f"<{len(data)} bytes of binary data>"
    if not isinstance(data, str):
        return f"<{type(data).__name__} body>"
    return data if len(data) <= limit else data[:limit] + f"... ({len(data)} chars)"


class Exchange:
    def __init__(self, method: str, path: str, request_body: Any, status: int,
                 headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.request_body = request_body
        self.status = status
        self.headers = headers
        self.body = body

    def describe(self) -> str:
        out = [f"request:  {self.method} {self.path}"]
        if isinstance(self.request_body, (str, bytes)) and self.request_body:
            out.append(f"  body:   {_short(self.request_body)}")
        elif self.request_body is not None:
            out.append("  body:   <streamed upload>")
        out.append(f"response: {self.status} Content-Type: {self.headers.get('Content-Type', '-')}")
        cd = self.headers.get("Content-Disposition")
        if cd:
            out.append(f"  Content-Disposition: {cd}")
        out.append(f"  body:   {_short(self.body)}")
        return "\n".join(out)


class HttpRecorder:
    """Wraps ``AsyncClient.send`` to keep the raw exchanges of one matrix-nio client."""

    def __init__(self, client: Any, keep: int = 20) -> None:
        self.exchanges: list[Exchange] = []
        self.by_response: dict[int, Exchange] = {}
        self.keep = keep
        original = client.send

        async def send(method, path, data=None, headers=None, trace_context=None, timeout=None):
            resp = await original(method, path, data, headers, trace_context, timeout)
            body = await resp.read()  # aiohttp caches it: nio reads it again afterwards
            ex = Exchange(method, path, data, resp.status, dict(resp.headers), body)
            self.exchanges.append(ex)
            self.by_response[id(resp)] = ex
            if len(self.exchanges) > self.keep:
                old = self.exchanges.pop(0)
                self.by_response = {k: v for k, v in self.by_response.items() if v is not old}
            return resp

        client.send = send

    def last(self) -> str:
        return self.exchanges[-1].describe() if self.exchanges else "(no HTTP exchange recorded)"

    def of(self, response: Any) -> str:
        """The exchange behind a nio response object (falls back to the last one)."""
        transport = getattr(response, "transport_response", None)
        ex = self.by_response.get(id(transport)) if transport is not None else None
        return ex.describe() if ex else self.last()


# ---------------------------------------------------------------------------------------------
# Raw client-server API helpers (aiohttp)
# ---------------------------------------------------------------------------------------------


async def register_user(session: Any, base_url: str, username: str, password: str,
                        device_id: str | None = None) -> dict[str, Any]:
    """Spec registration: a first POST without auth (401 with a session), then m.login.dummy."""
    url = f"{base_url}/_matrix/client/v3/register"
    body: dict[str, Any] = {"username": username, "password": password}
    if device_id:
        body["device_id"] = device_id
    async with session.post(url, json=body) as resp:
        first = await resp.json(content_type=None)
        if resp.status == 200:
            return first
        if resp.status != 401:
            raise ServerError(f"register {username}: HTTP {resp.status} {first}")
    auth: dict[str, Any] = {"type": "m.login.dummy"}
    if "session" in first:
        auth["session"] = first["session"]
    async with session.post(url, json={**body, "auth": auth}) as resp:
        data = await resp.json(content_type=None)
        if resp.status != 200:
            raise ServerError(f"register {username} (m.login.dummy): HTTP {resp.status} {data}")
        return data


class MatrixUser:
    """A registered Matrix user of a server, over plain HTTP (the client-server API)."""

    def __init__(self, session: Any, server: ServerProcess, registered: dict[str, Any]) -> None:
        self.session = session
        self.server = server
        self.user_id: str = registered["user_id"]
        self.token: str = registered["access_token"]
        self.since: str | None = None

    @classmethod
    async def register(cls, session: Any, server: ServerProcess, name: str,
                       password: str) -> "MatrixUser":
        return cls(session, server, await register_user(session, server.base_url, name, password))

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request to `/_matrix/client/v3{path}`, or to `path` when it is a whole one."""
        url = path if path.startswith("/_matrix/") else f"/_matrix/client/v3{path}"
        async with self.session.request(
            method, f"{self.server.base_url}{url}", json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def state(self, room: str) -> dict[tuple[str, str], dict[str, Any]]:
        """The room's current state by (type, state key); empty when it cannot be read."""
        status, events = await self.call("GET", f"/rooms/{room}/state")
        if status != 200:
            return {}
        return {(e["type"], e["state_key"]): e for e in events}

    async def membership(self, room: str, user_id: str) -> str | None:
        event = (await self.state(room)).get(("m.room.member", user_id))
        return event["content"].get("membership") if event else None

    async def send(self, room: str, content: dict[str, Any] | str,
                   event_type: str = "m.room.message") -> tuple[int, Any]:
        if isinstance(content, str):
            content = {"msgtype": "m.text", "body": content}
        txn = f"t{time.monotonic_ns()}"
        return await self.call("PUT", f"/rooms/{room}/send/{event_type}/{txn}", content)

    async def events(self, room: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's latest events, oldest first (paging back from the present)."""
        status, page = await self.call("GET", f"/rooms/{room}/messages?dir=b&limit={limit}")
        return list(reversed(page.get("chunk", []))) if status == 200 else []

    async def texts(self, room: str) -> list[str]:
        return [e["content"].get("body", "") for e in await self.events(room)
                if e.get("type") == "m.room.message"]

    async def sync_until(self, found: Callable[[dict[str, Any]], Any],
                         timeout: float = 60.0) -> Any:
        """Syncs from where the last sync stopped until `found(response)` is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            query = "timeout=1000" + (f"&since={self.since}" if self.since else "")
            status, data = await self.call("GET", f"/sync?{query}")
            if status == 200:
                self.since = data.get("next_batch", self.since)
                result = found(data)
                if result:
                    return result
            else:
                await asyncio.sleep(0.5)
        return None


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> bool:
    """Whether `check()` comes true within `timeout` seconds, asking every half second."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await check():
            return True
        await asyncio.sleep(0.5)
    return bool(await check())


def run_async_test(main: Callable[[], Awaitable[int]]) -> None:
    """Runs an async test entry point and exits with its code (1 on an uncaught error)."""
    try:
        code = asyncio.run(main())
    except ServerError as err:
        print(f"\nserver error: {err}", file=sys.stderr)
        code = 1
    sys.exit(code)
