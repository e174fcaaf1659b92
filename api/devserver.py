"""`make run`: the whole of StudioX in one terminal (`python -m api.devserver`).

Migrates the database, then runs the API (gunicorn), a Celery worker and Celery beat from
`Procfile.dev`, prints the URL, the docs and a dev token as soon as the API answers, and
stops everything on Ctrl-C.

The processes are supervised here rather than by `honcho start` because of how they must
be stopped: honcho sends SIGTERM to each process *group*, which hits a prefork worker's
pool children directly and kills the task they run. Here SIGTERM goes to each program
alone (gunicorn finishes its requests, the worker its tasks: a warm shutdown), and only
what is still alive after the grace period is killed, group and all.

With no DATABASE_URL / CELERY_BROKER_URL it uses the embedded defaults under var/ (or
STUDIOX_VAR_DIR): a SQLite file and kombu's filesystem broker, so nothing but Python is
needed. AUTH_MODE defaults to `dev` here, and only here, with a random DEV_JWT_SECRET
kept in var/ so tokens survive restarts; production settings never default to either.
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from dotenv import dotenv_values
from honcho.environ import parse_procfile

from shared.config import PROJECT_ROOT, Settings

PROCFILE = PROJECT_ROOT / "Procfile.dev"
DEV_USER = "dev-user"
# How long Ctrl-C waits for gunicorn to finish requests and the worker to finish its
# tasks before what is left is killed. A task cut short is not lost: its lease runs out
# and beat's sweeper queues it again.
STOP_GRACE_S = 30
READY_TIMEOUT_S = 90


def main() -> int:
    env = _environment()
    try:
        settings = Settings.from_env(env)
        settings.check_safe()
    except ValueError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    host = env["HOST"]
    if not _port_free(host, settings.port):
        print(
            f"make run: port {settings.port} on {host} is in use; "
            "stop what uses it or choose another: PORT=3001 make run",
            file=sys.stderr,
        )
        return 2

    _describe(settings)
    migrate = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "api", "db", "upgrade"],
        env=env,
        cwd=PROJECT_ROOT,
    )
    if migrate.returncode != 0:
        print("make run: the migrations failed (see above); nothing started.", file=sys.stderr)
        return migrate.returncode

    stack = Stack(parse_procfile(PROCFILE.read_text()).processes, env)
    threading.Thread(target=_announce, args=(settings, host), daemon=True).start()
    return stack.run()


class Stack:
    """Start the Procfile's processes, relay their output, stop them all together."""

    def __init__(self, commands: dict[str, str], env: dict[str, str]):
        self.commands = commands
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.width = max(len(name) for name in commands)
        self.stop_requested = threading.Event()
        self.print_lock = threading.Lock()

    def run(self) -> int:
        """Run until Ctrl-C / SIGTERM, or until one process ends; then stop the rest.

        Returns 0 for a requested stop, else the exit code of the process that ended.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop_requested.set())
        for name, command in self.commands.items():
            self._start(name, command)
        failed = None
        while not self.stop_requested.wait(0.2):
            ended = [(name, p.returncode) for name, p in self.procs.items() if p.poll() is not None]
            if ended:
                failed = ended[0]
                self._say(f"{failed[0]} exited (rc={failed[1]}); stopping the others")
                break
        self._stop()
        return 0 if failed is None else (failed[1] or 1)

    def _start(self, name: str, command: str) -> None:
        proc = subprocess.Popen(
            # exec: the pid we signal is the program's, not a shell's that would not pass
            # the signal on.
            ["/bin/sh", "-c", f"exec {command}"],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C in the terminal reaches only us, and we
            # decide who gets which signal.
            start_new_session=True,
        )
        self.procs[name] = proc
        self._say(f"{name} started (pid {proc.pid})")
        threading.Thread(target=self._relay, args=(name, proc), daemon=True).start()

    def _relay(self, name: str, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stdout.readline, b""):
            self._print(name, raw.decode(errors="replace").rstrip("\n"))

    def _stop(self) -> None:
        alive = {name: p for name, p in self.procs.items() if p.poll() is None}
        for name, proc in alive.items():
            self._say(f"stopping {name} (SIGTERM to pid {proc.pid})")
            _signal(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for name, proc in alive.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"{name} still running after {STOP_GRACE_S} s; killing it")
        for proc in self.procs.values():
            # Whatever is left in each group (a stuck program, an orphaned pool child).
            _signal(proc.pid, signal.SIGKILL, group=True)
            proc.wait()
        self._say("all stopped")

    def _say(self, message: str) -> None:
        self._print("system", message)

    def _print(self, name: str, line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        with self.print_lock:
            print(f"{stamp} {name:<{max(self.width, 6)}} | {line}", flush=True)


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _environment() -> dict[str, str]:
    """The processes' environment: ours, .env for what is unset, and the dev defaults."""
    env = dict(os.environ)
    dotenv = PROJECT_ROOT / ".env"
    if dotenv.exists():  # as `honcho start` and `flask` would; the real environment wins
        for name, value in dotenv_values(dotenv).items():
            if value is not None and not env.get(name):
                env[name] = value
    if not env.get("AUTH_MODE"):
        env["AUTH_MODE"] = "dev"
    var_dir = Path(Settings.from_env(env).var_dir)
    var_dir.mkdir(parents=True, exist_ok=True)
    if env["AUTH_MODE"] == "dev" and not env.get("DEV_JWT_SECRET"):
        env["DEV_JWT_SECRET"] = _dev_secret(var_dir / "dev_jwt_secret")
    # A developer's API listens on this machine only, unless HOST says otherwise.
    env["HOST"] = env.get("HOST") or "127.0.0.1"
    env["BEAT_SCHEDULE_FILE"] = env.get("BEAT_SCHEDULE_FILE") or str(
        var_dir / "celerybeat-schedule"
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    # Procfile commands (gunicorn, celery) from this interpreter's environment.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _dev_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    return secret


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _describe(settings: Settings) -> None:
    database = (
        "SQLite " + settings.database_url.split("///", 1)[-1]
        if settings.is_sqlite
        else "PostgreSQL"
    )
    broker = settings.broker_url.split("://", 1)[0]
    broker = (
        "filesystem " + settings.broker_url[len("filesystem://") :]
        if broker == "filesystem"
        else broker
    )
    print(f"make run: database {database}; broker {broker}; auth {settings.auth_mode}", flush=True)


def _announce(settings: Settings, host: str) -> None:
    """Print how to use the stack once the API answers."""
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{local}:{settings.port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        print(f"make run: the API did not answer on {base} within {READY_TIMEOUT_S} s", flush=True)
        return
    lines = ["", "StudioX is running.", f"  URL:    {base}", f"  Docs:   {base}/docs"]
    if settings.auth_mode == "dev":
        from api.auth import make_dev_token

        token = make_dev_token(settings, DEV_USER)
        body = json.dumps({"type": "image_analysis", "input": {"image_base64": _sample_png()}})
        lines += [
            f"  Token:  {token}",
            f"          (AUTH_MODE=dev, user {DEV_USER!r}, valid 30 days; more with",
            "           `flask --app api auth dev-token <user>`)",
            "  Try:",
            f"    TOKEN={token}",
            f'    curl -s -X POST {base}/api/tasks -H "Authorization: Bearer $TOKEN" \\',
            f"      -H 'Content-Type: application/json' -d '{body}'",
            f'    curl -s {base}/api/tasks -H "Authorization: Bearer $TOKEN"',
        ]
    else:
        lines.append(f"  Auth:   AUTH_MODE={settings.auth_mode}: send a Clerk session token.")
    lines += ["  Stop:   Ctrl-C", ""]
    print("\n".join(lines), flush=True)


def _sample_png() -> str:
    """A tiny image for the curl example."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 40, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


if __name__ == "__main__":
    sys.exit(main())
