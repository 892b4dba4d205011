"""Runs every interop test (interop-tests/test_*.py) against one Causeway binary.

Each test is a script taking ``--causeway PATH``; it is run with this interpreter (the venv that
holds the client libraries). Its output goes to interop-tests/.work/logs/<test>.log and is shown
when it fails (or always with -v). The last line is ``interop: N passed, N failed``; the exit code
is non-zero if any test failed.

Run: .venv/clients/bin/python interop-tests/run.py --causeway target/debug/causeway
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def copy_output(proc: subprocess.Popen[bytes], log: IO[bytes], echo: bool) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        log.flush()
        if echo:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--causeway", default=str(REPO / "target" / "debug" / "causeway"),
                        help="path to the causeway binary (default: target/debug/causeway)")
    parser.add_argument("--synapse-venv",
                        help="run the tests against Synapse from this venv (checks the tests themselves)")
    parser.add_argument("-k", dest="pattern", default="",
                        help="only tests whose file name contains this text")
    parser.add_argument("-v", "--verbose", action="store_true", help="stream each test's output")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test (default 600)")
    args = parser.parse_args()

    tests = sorted(p for p in HERE.glob("test_*.py") if args.pattern in p.name)
    if not tests:
        print(f"interop: no test matches {args.pattern!r}")
        return 1
    causeway = Path(args.causeway).resolve()
    if not args.synapse_venv and not causeway.is_file():
        print(f"interop: no Causeway binary at {causeway}")
        return 1

    logs = HERE / ".work" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Work directories kept by failed runs of earlier invocations are not needed any more.
    shutil.rmtree(HERE / ".work" / "tmp", ignore_errors=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", CAUSEWAY_TEST_TMPDIR=str(HERE / ".work" / "tmp"))
    target = f"Synapse ({args.synapse_venv})" if args.synapse_venv else str(causeway)
    print(f"interop: {len(tests)} test(s) against {target}", flush=True)

    results: list[tuple[str, bool, float]] = []
    for test in tests:
        cmd = [sys.executable, str(test), "--causeway", str(causeway)]
        if args.synapse_venv:
            cmd += ["--synapse-venv", args.synapse_venv]
        log_path = logs / f"{test.stem}.log"
        print(f"--- {test.name}", flush=True)
        start = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=REPO, env=env)
            copier = threading.Thread(target=copy_output, args=(proc, log, args.verbose))
            copier.start()
            timed_out = False
            try:
                proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.terminate()  # the test turns SIGTERM into an exit that ends its servers
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            copier.join()
        elapsed = time.monotonic() - start
        ok = proc.returncode == 0 and not timed_out
        results.append((test.name, ok, elapsed))
        if not ok and not args.verbose:
            sys.stdout.write(log_path.read_text(errors="replace"))
        status = "PASS" if ok else ("TIMEOUT" if timed_out else f"FAIL (exit {proc.returncode})")
        print(f"{status:<8} {test.name} ({elapsed:.1f} s; log {log_path.relative_to(REPO)})",
              flush=True)

    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print()
    for name, ok, elapsed in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<32} {elapsed:6.1f} s")
    print(f"interop: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
