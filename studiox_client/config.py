"""Where the client finds its server and key: arguments, then the STUDIOX_URL and
STUDIOX_API_KEY environment variables, then what `studiox login` stored."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

DEFAULT_URL = "http://localhost:3000"
URL_ENV = "STUDIOX_URL"
KEY_ENV = "STUDIOX_API_KEY"


def config_path() -> Path:
    """`$XDG_CONFIG_HOME/studiox/config.json` (`~/.config/...` by default; %APPDATA% on Windows)."""
    if os.name == "nt" and os.environ.get("APPDATA"):
        base = Path(os.environ["APPDATA"])
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "studiox" / "config.json"


def load() -> dict:
    """The stored login, or {} (a missing or unreadable file is not an error here)."""
    try:
        data = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(url: str, key: str) -> Path:
    """Store the login readable by the user alone (0600 file in a 0700 folder)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "api_key": key}, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o600)  # in case the file existed with a looser mode
    os.replace(tmp, path)
    return path


def remove() -> bool:
    with contextlib.suppress(FileNotFoundError):
        config_path().unlink()
        return True
    return False


def resolve(url: str | None = None, key: str | None = None) -> tuple[str, str | None]:
    """(base URL, API key): explicit values win, then the environment, then the stored login."""
    stored = load() if not (url and key) else {}
    stored_url = (stored.get("url") or "").rstrip("/")
    url = (url or os.environ.get(URL_ENV) or stored_url or DEFAULT_URL).rstrip("/")
    # The stored key only goes to the server it was stored for: pointing STUDIOX_URL
    # elsewhere must not send it to another host.
    key = key or os.environ.get(KEY_ENV) or (stored.get("api_key") if url == stored_url else None)
    return url, key
