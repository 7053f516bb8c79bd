"""Start and stop a throwaway qtoaster home for the benchmark, through the ``qtoaster`` CLI.

The home is ``WORKDIR/qtoaster-home``, recreated on every ``configure()``:

    qtoaster init --home H --me bench.test --smtp 127.0.0.1:PORT
    qtoaster domain add bench.test --home H
    qtoaster user add user@bench.test --password x --home H
    qtoaster run --home H     (one stdout line containing "ready" once it serves; SIGTERM stops)

Mail lands in ``H/domains/bench.test/user/Maildir/new/``.  ``settings`` (optional) rewrites
keys of the generated qtoaster.toml right after ``init``, before the directory is touched
(e.g. ``{"chkuser": {"mode": '"off"'}, "database": {"url": '"postgresql://..."'}}``; values
are TOML literals), so ``domain add`` and ``user add`` already use that database.
``control_files`` (optional) writes extra ``H/control/NAME`` files right after ``init``
(e.g. ``{"smtproutes": ":127.0.0.1:2525"}``); empty by default, so the home is unchanged.

Invariants: the home keeps qtoaster's defaults, in particular ``[queue] fsync = true``
(``configure()`` refuses a home whose qtoaster.toml turns it off); the server is our child,
in its own session, and ``stop()`` ends it by its pid (SIGTERM, then SIGKILL to its process
group after a deadline); its stdout and stderr go to ``WORKDIR/qtoaster.log``.
"""

from __future__ import annotations

import argparse
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from idle_memory import raise_nofile

REPO = Path(__file__).resolve().parent.parent
QTOASTER = REPO / ".venv" / "bin" / "qtoaster"
DOMAIN = "bench.test"
MAILBOX = "user"


@dataclass
class QtoasterServer:
    workdir: Path
    port: int = 10026
    qtoaster: Path = QTOASTER
    name: str = "qtoaster"
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    control_files: dict[str, str] = field(default_factory=dict)  # name -> contents
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def home(self) -> Path:
        return self.workdir / "qtoaster-home"

    @property
    def log_file(self) -> Path:
        return self.workdir / "qtoaster.log"

    @property
    def maildir_new(self) -> Path:
        return self.home / "domains" / DOMAIN / MAILBOX / "Maildir" / "new"

    @property
    def servercert(self) -> Path:
        """The key + certificate PEM that ``init`` made (RSA 2048); STARTTLS uses it."""
        return self.home / "control" / "servercert.pem"

    def install_cert(self, cert: Path, key: Path) -> None:
        """``qtoaster cert install CERT --key KEY``: replace servercert.pem (restart after)."""
        argv = [str(self.qtoaster), "cert", "install", str(cert), "--key", str(key)]
        subprocess.run([*argv, "--home", str(self.home)], check=True, stdout=subprocess.DEVNULL)

    def setup_commands(self) -> list[list[str]]:
        q, h = str(self.qtoaster), str(self.home)
        return [
            [q, "init", "--home", h, "--me", DOMAIN, "--smtp", f"127.0.0.1:{self.port}"],
            [q, "domain", "add", DOMAIN, "--home", h],
            [q, "user", "add", f"{MAILBOX}@{DOMAIN}", "--password", "x", "--home", h],
        ]

    def run_command(self) -> list[str]:
        return [str(self.qtoaster), "run", "--home", str(self.home)]

    def configure(self) -> None:
        if self.home.exists():
            shutil.rmtree(self.home)
        init, *rest = self.setup_commands()
        subprocess.run(init, check=True, stdout=subprocess.DEVNULL)
        toml = self.home / "qtoaster.toml"
        if self.settings:
            toml.write_text(override_toml(toml.read_text(), self.settings))
        for name, contents in self.control_files.items():
            (self.home / "control" / name).write_text(contents)
        for argv in rest:
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        settings = tomllib.loads(toml.read_text())
        if settings.get("queue", {}).get("fsync", True) is not True:
            raise RuntimeError("the benchmark needs [queue] fsync = true (the default)")
        # The load counts new/ from the start; the user's Maildir may be created lazily.
        for sub in ("new", "cur", "tmp"):
            (self.maildir_new.parent / sub).mkdir(parents=True, exist_ok=True)

    def start(self, deadline_s: float = 60.0) -> None:
        # The server inherits our limit: it must hold 10,000 idle connections.
        raise_nofile(20000)
        log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            self.run_command(), stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        log.close()
        assert self._process.stdout is not None
        line = _read_ready(self._process, deadline_s)
        print(f"qtoaster: {line.strip()}", flush=True)
        # Keep draining stdout so a chatty server never blocks on a full pipe.
        threading.Thread(
            target=_copy, args=(self._process.stdout, self.log_file), daemon=True
        ).start()

    def master_pid(self) -> int:
        if self._process is None:
            raise RuntimeError("qtoaster is not running")
        return self._process.pid

    def stop(self, deadline_s: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group start() created, by its id
            process.wait(timeout=deadline_s)


def override_toml(text: str, overrides: dict[str, dict[str, str]]) -> str:
    """``text`` with ``overrides[table][key] = literal`` set: an existing ``key = ...`` line
    of that table is replaced, a missing key goes right under the table's header, a missing
    table is appended.  Comments and the other lines stay as they were."""
    lines = text.splitlines()
    pending = {table: dict(keys) for table, keys in overrides.items()}
    out: list[str] = []
    table = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            table = stripped.strip("[]").strip()
            out.append(line)
            out.extend(f"{k} = {v}" for k, v in pending.get(table, {}).items())
            pending.pop(table, None)
            continue
        key = stripped.partition("=")[0].strip()
        if table in overrides and key in overrides[table] and not stripped.startswith("#"):
            continue  # already written under the header
        out.append(line)
    for table, keys in pending.items():
        out += ["", f"[{table}]", *(f"{k} = {v}" for k, v in keys.items())]
    result = "\n".join(out) + "\n"
    tomllib.loads(result)  # fail here, not in qtoaster, on a bad literal
    return result


def _read_ready(process: subprocess.Popen[bytes], deadline_s: float) -> str:
    """The first stdout line containing "ready", within the deadline, else raise."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + deadline_s
    buffer = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.1):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"qtoaster run exited (rc={process.wait()}) before ready")
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if "ready" in line:
                    return line
    finally:
        selector.close()
    process.kill()
    raise TimeoutError(f"qtoaster run printed no 'ready' line in {deadline_s}s")


def _copy(stream: IO[bytes], path: Path) -> None:
    with path.open("ab") as log:
        for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
            log.write(chunk)
            log.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/qtoaster-bench"))
    parser.add_argument("--port", type=int, default=10026)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    server = QtoasterServer(args.workdir, args.port)
    if args.dry_run:
        for argv_ in [*server.setup_commands(), server.run_command()]:
            print(shlex.join(argv_))
        print(f"# mail lands in {server.maildir_new}")
        return 0
    # A smoke check: set up, start, deliver one message with smtp-source, stop.
    from load import Load, run_load

    args.workdir.mkdir(parents=True, exist_ok=True)
    server.configure()
    server.start()
    try:
        result = run_load(server, Load(1024, 1, 1), deadline_s=30.0)
    finally:
        server.stop()
    print(f"delivered {result.delivered}/1 in {result.seconds:.3f}s")
    return 0 if result.delivered == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
