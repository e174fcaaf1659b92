"""The `studiox` command: run tasks, watch them, fetch their files, check credits.

    studiox login --url https://api.example.com          # asks for the API key
    studiox run image_analysis --image cat.jpg
    studiox run advanced_editing --image cat.jpg \\
        --input operations='[{"op": "grayscale"}]' --out edited/
    studiox tasks list --status failed
    studiox credits --json

Text for people by default, JSON with --json. Exit status: 0 done, 1 the API refused or
the task failed, 2 bad usage or input (or no API key), 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from studiox_client import config
from studiox_client.client import Client, __version__
from studiox_client.errors import (
    APIError,
    ConfigurationError,
    InsufficientCredits,
    StudioXError,
    TaskFailed,
    Unauthorized,
    WaitTimeout,
)
from studiox_client.models import Task

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad arguments or input files: exit status 2."""


# --- output helpers -------------------------------------------------------------------


def _out(text: str = "") -> None:
    print(text, file=sys.stdout)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str), file=sys.stdout)


def _fmt_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _fmt_time(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def _flatten(details: Any, prefix: str = "") -> list[str]:
    """{"input": {"steps": ["Too big."]}} -> ["input.steps: Too big."] (one line each)."""
    if isinstance(details, dict):
        lines = []
        for key, value in details.items():
            lines += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return lines
    if isinstance(details, list) and all(isinstance(v, str) for v in details):
        return [f"{prefix}: {' '.join(details)}" if prefix else " ".join(details)]
    return [f"{prefix}: {_fmt_value(details)}" if prefix else _fmt_value(details)]


def describe_error(exc: StudioXError) -> str:
    """One line saying what went wrong, with the facts a user needs to act on it."""
    if isinstance(exc, InsufficientCredits):
        return (
            f"not enough credits: this needs {exc.required}, you have {exc.available} "
            "(see `studiox credits`)."
        )
    if isinstance(exc, Unauthorized):
        return (
            f"the server refused the API key ({exc.message}); run `studiox login` or "
            "set STUDIOX_API_KEY."
        )
    if isinstance(exc, APIError):
        text = exc.message
        fields = [line for line in _flatten(exc.details) if not line.startswith("request_id")]
        if fields:
            text += " (" + "; ".join(fields) + ")"
        if exc.status >= 500 and exc.request_id:
            text += f" [request id {exc.request_id}]"
        return text
    return exc.message


def _print_task(task: Task) -> None:
    rows = [
        ("id", task.id),
        ("type", task.type),
        (
            "status",
            task.status
            + (" (cancel requested)" if task.cancel_requested and not task.ended else ""),
        ),
        ("progress", f"{task.progress:.0%}"),
        ("cost", f"{task.cost} credit{'s' if task.cost != 1 else ''}"),
        ("created", _fmt_time(task.created_at)),
        ("started", _fmt_time(task.started_at)),
        ("completed", _fmt_time(task.completed_at)),
    ]
    if task.error:
        rows.append(("error", f"{task.error.code}: {task.error.message}"))
    for name, value in rows:
        _out(f"{name + ':':<11}{value}")
    if task.output:
        _out("output:")
        for key, value in task.output.items():
            _out(f"  {key}: {_fmt_value(value)}")
    if task.artifacts:
        _out("artifacts:")
        for artifact in task.artifacts:
            _out(f"  {artifact.name}  {artifact.content_type}  {artifact.size} bytes")


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; elsewhere (logs, pipes) a line per
    change, so the output stays readable."""

    WIDTH = 30

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""

    def update(self, task: Task) -> None:
        filled = round(task.progress * self.WIDTH)
        text = (
            f"{task.type} {task.id[:8]} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"{task.progress:4.0%} {task.status}"
        )
        if text == self.last:
            return
        if self.tty:
            self.stream.write("\r" + text.ljust(len(self.last)))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.last = text

    def finish(self) -> None:
        if self.tty and self.last:
            self.stream.write("\n")
            self.stream.flush()


# --- building a task's input ------------------------------------------------------------


def parse_inputs(pairs: Sequence[str], input_json: str | None) -> dict[str, Any]:
    """--input-json (or @file), then each --input key=value; values that parse as JSON
    (numbers, true, lists, objects) are taken as JSON, anything else as a string."""
    data: dict[str, Any] = {}
    if input_json:
        text = input_json
        if input_json.startswith("@"):
            try:
                text = Path(input_json[1:]).read_text()
            except OSError as exc:
                raise UsageError(f"cannot read {input_json[1:]!r}: {exc.strerror}") from None
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--input-json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--input-json must be a JSON object.")
        data.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--input takes key=value, not {pair!r}.")
        try:
            data[key.strip()] = json.loads(value)
        except ValueError:
            data[key.strip()] = value
    return data


def _read_image(path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read image {path!r}: {exc.strerror or exc}") from None
    if not raw:
        raise UsageError(f"image {path!r} is empty.")
    return base64.b64encode(raw).decode()


def _image_field(client: Client, type_name: str) -> str:
    """Where a task type takes its image(s): `image_base64` (one) or `images` (a list),
    read from the server's catalogue so new types work without a new CLI."""
    try:
        types = client.task_types()
    except StudioXError:
        types = []
    for item in types:
        if item.get("type") == type_name:
            properties = item.get("input_schema", {}).get("properties", {})
            if "images" in properties and "image_base64" not in properties:
                return "images"
            return "image_base64"
    return "image_base64"  # unlisted types: let the server judge the input


def add_images(
    client: Client, type_name: str, data: dict, images: list[str], urls: list[str]
) -> None:
    sources = [{"image_base64": _read_image(p)} for p in images]
    sources += [{"image_url": u} for u in urls]
    if not sources:
        return
    if _image_field(client, type_name) == "images":
        data.setdefault("images", []).extend(sources)
    elif len(sources) > 1:
        raise UsageError(f"{type_name} takes one image; {len(sources)} were given.")
    else:
        data.update(sources[0])


# --- commands --------------------------------------------------------------------------


def _client(args) -> Client:
    return Client(timeout=args.http_timeout)


def cmd_login(args) -> int:
    url = (
        args.url or os.environ.get(config.URL_ENV) or config.load().get("url") or config.DEFAULT_URL
    ).rstrip("/")
    key = args.key
    if not key:
        if sys.stdin.isatty():
            key = getpass.getpass("API key (sx_live_...): ")
        else:
            key = sys.stdin.readline()
    key = (key or "").strip()
    if not key:
        raise UsageError("no API key given (use --key, or type it when asked).")
    who = None
    if not args.no_verify:
        with Client(url, key, timeout=args.http_timeout) as client:
            me = client.me()  # refuses a wrong key before we store it
        who = me.get("email") or me.get("clerk_id")
    path = config.save(url, key)
    if args.json:
        _print_json({"url": url, "user": who, "config": str(path)})
    else:
        _out(f"Logged in to {url}" + (f" as {who}" if who else "") + f"; saved to {path}.")
    return EXIT_OK


def cmd_logout(args) -> int:
    removed = config.remove()
    _out("Logged out." if removed else "Not logged in.")
    return EXIT_OK


def cmd_run(args) -> int:
    data = parse_inputs(args.input, args.input_json)
    with _client(args) as client:
        add_images(client, args.type, data, args.image, args.image_url)
        bar = None if args.json or args.quiet else ProgressBar(sys.stderr)
        seen: list[Task] = []

        def on_update(task: Task) -> None:
            seen[:] = [task]
            if bar:
                bar.update(task)

        try:
            task = client.tasks.run(args.type, data, timeout=args.timeout, on_update=on_update)
        except TaskFailed as exc:
            if bar:
                bar.finish()
            if args.json:
                _print_json({"task": exc.task.raw, "files": []})
            raise
        except KeyboardInterrupt:
            if bar:
                bar.finish()
            if not seen:
                raise
            print(
                f"studiox: interrupted; task {seen[0].id} keeps running "
                f"(`studiox tasks cancel {seen[0].id}` stops it).",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        if bar:
            bar.finish()
        files: list[Path] = []
        if task.artifacts and not args.no_download:
            folder = Path(args.out) if args.out else Path.cwd() / f"studiox-{task.id}"
            files = client.artifacts.download_all(task, folder)
    if args.json:
        _print_json({"task": task.raw, "files": [str(f) for f in files]})
        return EXIT_OK
    _out(f"Task {task.id} {task.status} ({task.cost} credit{'s' if task.cost != 1 else ''}).")
    if task.output:
        _out("output:")
        for key, value in task.output.items():
            _out(f"  {key}: {_fmt_value(value)}")
    for path in files:
        _out(f"saved {path} ({path.stat().st_size} bytes)")
    return EXIT_OK


def cmd_tasks_list(args) -> int:
    with _client(args) as client:
        tasks = list(
            client.tasks.list(
                status=args.status,
                type=args.type,
                limit=None if args.all else args.limit,
                page_size=100,
            )
        )
    if args.json:
        _print_json([t.raw for t in tasks])
        return EXIT_OK
    if not tasks:
        _out("No tasks.")
        return EXIT_OK
    _out(f"{'ID':<36}  {'TYPE':<18} {'STATUS':<10} {'PROGRESS':>8} {'COST':>4}  CREATED")
    for t in tasks:
        _out(
            f"{t.id:<36}  {t.type:<18} {t.status:<10} {t.progress:>8.0%} {t.cost:>4}  "
            f"{_fmt_time(t.created_at)}"
        )
    return EXIT_OK


def cmd_tasks_get(args) -> int:
    with _client(args) as client:
        task = client.tasks.get(args.id)
        if args.wait:
            bar = None if args.json else ProgressBar(sys.stderr)
            task = client.tasks.wait(task, args.timeout, on_update=bar.update if bar else None)
            if bar:
                bar.finish()
    if args.json:
        _print_json(task.raw)
    else:
        _print_task(task)
    return EXIT_OK


def cmd_tasks_cancel(args) -> int:
    with _client(args) as client:
        task = client.tasks.cancel(args.id)
    if args.json:
        _print_json(task.raw)
    elif task.status == "canceled":
        _out(
            f"Task {task.id} canceled; {task.cost} credit{'s' if task.cost != 1 else ''} refunded."
        )
    else:
        _out(f"Cancel requested: task {task.id} stops at its next step and is then refunded.")
    return EXIT_OK


def cmd_credits(args) -> int:
    with _client(args) as client:
        credits = client.credits()
    if args.json:
        _print_json(credits.raw)
    else:
        _out(
            f"{credits.total} credits ({credits.plan_credits} from the {credits.plan} plan, "
            f"{credits.purchased_credits} purchased)."
        )
        _out(
            f"The plan gives {credits.monthly_credits} a month; next reset "
            f"{_fmt_time(credits.next_reset_at)}."
        )
    return EXIT_OK


def cmd_transactions(args) -> int:
    with _client(args) as client:
        entries = []
        for entry in client.transactions(page_size=min(args.limit, 100)):
            entries.append(entry)
            if len(entries) >= args.limit:
                break
    if args.json:
        _print_json([e.raw for e in entries])
        return EXIT_OK
    for e in entries:
        task = f"  task {e.task_id}" if e.task_id else ""
        _out(
            f"{_fmt_time(e.created_at)}  {e.delta:+5d}  {e.reason:<13} {e.bucket:<9} "
            f"balance {e.balance_after}{task}"
        )
    if not entries:
        _out("No transactions.")
    return EXIT_OK


# --- the parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument(
        "--http-timeout", type=float, default=30.0, metavar="S", help=argparse.SUPPRESS
    )

    parser = argparse.ArgumentParser(
        prog="studiox",
        description="Run StudioX AI tasks from the command line. The server and key come "
        "from STUDIOX_URL and STUDIOX_API_KEY, else from `studiox login`.",
    )
    parser.add_argument("--version", action="version", version=f"studiox {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    login = commands.add_parser("login", parents=[common], help="store the server URL and key")
    login.add_argument("--url", help=f"the API's base URL (default {config.DEFAULT_URL})")
    login.add_argument("--key", help="the API key (asked for when omitted)")
    login.add_argument(
        "--no-verify", action="store_true", help="store without checking the key with the server"
    )
    login.set_defaults(handler=cmd_login)

    logout = commands.add_parser("logout", parents=[common], help="forget the stored login")
    logout.set_defaults(handler=cmd_logout)

    run = commands.add_parser(
        "run", parents=[common], help="run a task, show its progress, print its output"
    )
    run.add_argument("type", help="task type, e.g. image_analysis")
    run.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image file to upload (repeat for types taking several)",
    )
    run.add_argument(
        "--image-url",
        action="append",
        default=[],
        metavar="URL",
        help="an image by URL instead of a file",
    )
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input field; VALUE is JSON if it parses, else a string",
    )
    run.add_argument("--input-json", metavar="JSON|@FILE", help="the input as a JSON object")
    run.add_argument(
        "--out", metavar="DIR", help="where to save output files (default ./studiox-<task id>)"
    )
    run.add_argument("--no-download", action="store_true", help="do not save output files")
    run.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="give up waiting after S seconds (the task keeps running)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    run.set_defaults(handler=cmd_run)

    tasks = commands.add_parser("tasks", help="list, show or cancel tasks")
    tasks_commands = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    listing = tasks_commands.add_parser("list", parents=[common], help="your tasks, newest first")
    listing.add_argument(
        "--status", choices=["queued", "processing", "succeeded", "failed", "canceled"]
    )
    listing.add_argument("--type")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    listing.add_argument("--all", action="store_true", help="every task, however many")
    listing.set_defaults(handler=cmd_tasks_list)
    get = tasks_commands.add_parser("get", parents=[common], help="one task")
    get.add_argument("id")
    get.add_argument("--wait", action="store_true", help="wait until it ends")
    get.add_argument("--timeout", type=float, default=600.0, metavar="S")
    get.set_defaults(handler=cmd_tasks_get)
    cancel = tasks_commands.add_parser(
        "cancel", parents=[common], help="cancel a task (refunds it)"
    )
    cancel.add_argument("id")
    cancel.set_defaults(handler=cmd_tasks_cancel)

    credits = commands.add_parser("credits", parents=[common], help="your balance")
    credits.set_defaults(handler=cmd_credits)

    transactions = commands.add_parser(
        "transactions", parents=[common], help="your credit ledger, newest first"
    )
    transactions.add_argument("--limit", type=int, default=20)
    transactions.set_defaults(handler=cmd_transactions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"studiox: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigurationError as exc:
        print(f"studiox: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except WaitTimeout as exc:
        print(
            f"studiox: error: {exc.message} Check on it with `studiox tasks get {exc.task.id}`.",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except TaskFailed as exc:
        print(f"studiox: error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except StudioXError as exc:
        print(f"studiox: error: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "\nstudiox: interrupted (a task already submitted keeps running; "
            "`studiox tasks cancel <id>` stops it).",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
