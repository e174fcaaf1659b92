"""The `studiox` command, called in-process through `main(argv)` (plus one subprocess run
of the installed script), against the real app and worker."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import PROJECT_ROOT
from studiox_client import Client
from studiox_client import config as stored_login
from studiox_client.cli import main


@pytest.fixture()
def studiox(capsys):
    """`studiox("tasks", "list")` -> (exit status, stdout, stderr)."""

    def run(*argv: str):
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture()
def logged_in(monkeypatch, base_url, new_key):
    """The environment of someone who exported STUDIOX_URL and STUDIOX_API_KEY."""
    key = new_key()
    monkeypatch.setenv("STUDIOX_URL", base_url)
    monkeypatch.setenv("STUDIOX_API_KEY", key)
    return key


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("studiox: error: ")
    return lines[0]


def test_a_missing_key_is_a_clear_error(studiox, base_url, monkeypatch):
    monkeypatch.setenv("STUDIOX_URL", base_url)
    status, out, err = studiox("credits")
    assert status == 2 and out == ""
    assert "studiox login" in one_line_error(err)


def test_login_stores_url_and_key_privately_then_commands_use_them(studiox, base_url, new_key):
    key = new_key()
    status, out, _ = studiox("login", "--url", base_url, "--key", key)
    assert status == 0 and "user_client" in out
    path = stored_login.config_path()
    assert json.loads(path.read_text()) == {"url": base_url, "api_key": key}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    status, out, _ = studiox("credits")
    assert status == 0
    assert out.startswith("10 credits (10 from the free plan, 0 purchased).")

    status, _, _ = studiox("logout")
    assert status == 0 and not path.exists()


def test_login_refuses_a_wrong_key_and_stores_nothing(studiox, base_url):
    status, _, err = studiox("login", "--url", base_url, "--key", "sx_live_wrong")
    assert status == 1
    assert "refused the API key" in one_line_error(err)
    assert not stored_login.config_path().exists()


def test_environment_overrides_the_stored_login(studiox, base_url, new_key, monkeypatch):
    studiox("login", "--url", base_url, "--key", new_key())
    monkeypatch.setenv("STUDIOX_API_KEY", "sx_live_revoked_or_wrong")
    status, _, err = studiox("credits")
    assert status == 1 and "refused the API key" in one_line_error(err)
    monkeypatch.delenv("STUDIOX_API_KEY")
    # Another server named by STUDIOX_URL never receives the key stored for this one.
    monkeypatch.setenv("STUDIOX_URL", "http://127.0.0.1:9")
    status, _, err = studiox("credits")
    assert status == 2 and "No API key" in one_line_error(err)


def test_credits_as_json(studiox, logged_in):
    status, out, _ = studiox("credits", "--json")
    assert status == 0
    data = json.loads(out)
    assert data["total"] == 10 and data["plan"] == "free"


def test_run_shows_progress_prints_output_and_lists(studiox, logged_in, worker):
    status, out, err = studiox(
        "run",
        "echo",
        "--input",
        "message=hi there",
        "--input",
        "steps=3",
        "--input",
        "step_seconds=0.2",
    )
    assert status == 0, err
    assert "succeeded" in out and "echo: hi there" in out
    assert "100%" in err and "[" in err  # the progress bar, one line per change off a tty
    task_id = out.split()[1]

    status, out, _ = studiox("tasks", "list")
    assert status == 0 and task_id in out and "succeeded" in out
    status, out, _ = studiox("tasks", "list", "--json")
    assert [t["id"] for t in json.loads(out)] == [task_id]
    status, out, _ = studiox("tasks", "get", task_id)
    assert status == 0 and "status:    succeeded" in out and "echo: hi there" in out
    status, out, _ = studiox("transactions")
    assert status == 0 and "task_charge" in out and "signup_grant" in out


def test_run_as_json(studiox, logged_in, worker):
    status, out, err = studiox("run", "echo", "--input-json", '{"message": "j"}', "--json")
    assert status == 0, err
    result = json.loads(out)
    assert result["task"]["output"]["echo"] == "j" and result["files"] == []
    assert err == ""  # no progress bar in JSON mode


def test_run_of_a_failing_task_exits_1(studiox, logged_in, worker):
    status, out, err = studiox("run", "echo", "--input", "fail=permanent")
    assert status == 1
    assert "failed: echo_failed" in err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["run", "echo", "--input", "steps=0"], 1, "input.steps"),
        (["run", "echo", "--input", "no-equals-sign"], 2, "key=value"),
        (["run", "image_analysis", "--image", "missing.png"], 2, "cannot read image"),
        (["run", "echo", "--input-json", "[1, 2]"], 2, "JSON object"),
        (["run", "echo", "--input-json", "{nope"], 2, "not valid JSON"),
        (["run", "no_such_type"], 1, "Unknown task type"),
        (["tasks", "get", "not-a-task"], 1, "No such task"),
    ],
)
def test_bad_input_is_one_clear_line(studiox, logged_in, argv, status, message):
    code, out, err = studiox(*argv)
    assert code == status and out == ""
    assert message in one_line_error(err)


def test_insufficient_credits_says_how_many(studiox, logged_in):
    studiox("run", "echo_pricey", "--timeout", "0")  # 7 of 10 credits, then stop waiting
    status, _, err = studiox("run", "echo_pricey")
    assert status == 1
    assert "needs 7, you have 3" in one_line_error(err)


def test_tasks_cancel(studiox, logged_in, base_url):
    with Client(base_url, logged_in) as client:
        task = client.tasks.create("echo", {"steps": 100, "step_seconds": 0.1})
        status, out, _ = studiox("tasks", "cancel", task.id)
        assert status == 0
        assert "canceled" in out or "Cancel requested" in out
        assert client.tasks.wait(task, timeout=15).status == "canceled"
    status, out, err = studiox("tasks", "cancel", task.id, "--json")
    assert status == 0 and json.loads(out)["status"] == "canceled"


def test_usage_errors_exit_2(studiox):
    assert studiox()[0] == 2
    assert studiox("tasks")[0] == 2
    assert studiox("--version")[0] == 0


def test_the_installed_command_runs(base_url, logged_in):
    script = Path(sys.executable).parent / "studiox"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "studiox_client"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [*command, "credits", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == 10
    missing = subprocess.run(
        [*command, "credits"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "STUDIOX_API_KEY": ""},
    )
    assert missing.returncode == 2 and "No API key" in missing.stderr


def test_login_reads_the_key_from_stdin(studiox, base_url, new_key, monkeypatch):
    key = new_key()
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    status, out, _ = studiox("login", "--url", base_url, "--json")
    assert status == 0 and json.loads(out)["user"] == "user_client"
    assert stored_login.load() == {"url": base_url, "api_key": key}


def test_tasks_get_can_wait_for_the_end(studiox, logged_in, base_url, worker):
    with Client(base_url, logged_in) as client:
        task = client.tasks.create("echo", {"steps": 3, "step_seconds": 0.2, "message": "w"})
    status, out, err = studiox("tasks", "get", task.id, "--wait", "--json")
    assert status == 0, err
    assert json.loads(out)["status"] == "succeeded"
