"""The client's configuration: which server, which token, which CA to trust.

Stored as JSON in `$RAFTBOX_CONFIG_DIR/config.json` if that is set, else
`$XDG_CONFIG_HOME/raftbox/config.json`, else `~/.config/raftbox/config.json`; the file holds a
bearer token, so it is written with mode 0600 (atomically: temp file, fsync, rename). Commands
take `--config DIR` to override the directory (the tests do).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from raftbox import atomic

CONFIG_FILE = "config.json"


class ConfigError(Exception):
    """No usable configuration (not logged in, or a broken file)."""


@dataclass(frozen=True, slots=True)
class Config:
    server: str  # "https://host:port", no trailing slash
    token: str
    ca: str | None = None  # a CA file to trust (absolute path), None: the system's


def config_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding config.json (see the module doc for the order)."""
    if override:
        return Path(override)
    if env := os.environ.get("RAFTBOX_CONFIG_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "raftbox"


def save(cfg: Config, directory: str | os.PathLike[str] | None = None) -> Path:
    """Write `cfg` (mode 0600); returns the file's path."""
    d = config_dir(directory)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / CONFIG_FILE
    atomic.replace(path, json.dumps(asdict(cfg), indent=2) + "\n", 0o600)
    return path


def load(directory: str | os.PathLike[str] | None = None) -> Config:
    """The saved configuration; `ConfigError` if there is none or it is unreadable."""
    path = config_dir(directory) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
        return Config(server=str(raw["server"]), token=str(raw["token"]), ca=raw.get("ca"))
    except FileNotFoundError:
        raise ConfigError(
            f"not logged in ({path} missing): run `raftbox login URL --token T`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"unreadable config {path}: {e}") from None
