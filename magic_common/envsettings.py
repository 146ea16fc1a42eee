"""Settings from environment variables, with each package's own defaults.

Every package of influx-magic that reads configuration declares the keys it owns and their
defaults in one `Settings` of its own (`influx_magic.settings`, `localflux.influxdb.settings`,
`machine_simulator.settings`, ...); the local system's composition root (`localsystem.settings`)
joins them into the registry that `.env.example` documents. This module only knows how to read
a value: the environment first, then a `.env` file at the project root (read once, never
overriding variables already set), then the declared default.

Relative paths resolve against the project root, never the current directory: Mage changes
directory into its project and honcho starts each process from the root, and both must find the
same `.local/` folders. The project root is `$INFLUX_MAGIC_ROOT` when set, else the nearest
folder at or above the working directory that holds the Mage project `influx-magic/` (a
checkout of this repository), else the working directory.

>>> s = Settings({"DATA_DIR": ".local/x", "PORT": "8181"})
>>> s.path("DATA_DIR", {"DATA_DIR": "/abs/x"})
PosixPath('/abs/x')
>>> s.integer("PORT", {"PORT": ""})
8181
>>> s.integer("PORT", {"PORT": "eighty"})
Traceback (most recent call last):
ValueError: PORT must be an integer, got 'eighty'
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT_VARIABLE = "INFLUX_MAGIC_ROOT"
_PROJECT_MARKER = Path("influx-magic") / "metadata.yaml"

_dotenv_loaded = False


def project_root(env: Mapping[str, str] | None = None) -> Path:
    """The folder relative settings resolve against (see the module docstring)."""
    explicit = (env or {}).get(ROOT_VARIABLE, "") or os.environ.get(ROOT_VARIABLE, "")
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / _PROJECT_MARKER).is_file():
            return folder
    return here


def load_dotenv(path: Path | None = None) -> None:
    """Read `KEY=VALUE` lines from the project's `.env` into os.environ, once.

    Variables already in the environment win, as with docker compose and honcho, so a test or a
    shell export always overrides the file.
    """
    global _dotenv_loaded
    if _dotenv_loaded and path is None:
        return
    _dotenv_loaded = True
    env_file = path or project_root() / ".env"
    if not env_file.is_file():
        return
    for raw in env_file.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(key, value)


class Settings:
    """The keys one package owns, with their defaults, and typed access to their values.

    `fallbacks` maps a key to another key whose value it takes when empty (a webhook for Mage's
    own notices that defaults to the alerts' webhook, say).
    """

    def __init__(
        self, defaults: Mapping[str, str], fallbacks: Mapping[str, str] | None = None
    ) -> None:
        self.defaults: dict[str, str] = dict(defaults)
        self.fallbacks: dict[str, str] = dict(fallbacks or {})

    def __contains__(self, name: object) -> bool:
        return name in self.defaults

    def get(self, name: str, env: Mapping[str, str] | None = None) -> str:
        """The value: the environment (after `.env`), else the default.

        An empty value counts as unset for settings whose default is not empty (an empty
        `INFLUX_HOST=` in `.env` means "use the default", not "no host").
        """
        if name not in self.defaults:
            raise KeyError(
                f"{name} is not a documented setting; add it to .env.example and its defaults"
            )
        if env is None:
            load_dotenv()
            env = os.environ
        value = env.get(name, "")
        if not value and name in self.fallbacks:
            return self.get(self.fallbacks[name], env)
        return value if value else self.defaults[name]

    def integer(self, name: str, env: Mapping[str, str] | None = None) -> int:
        """An integer setting, with an error that names the variable when it is not a number."""
        value = self.get(name, env)
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name} must be an integer, got {value!r}") from None

    def number(self, name: str, env: Mapping[str, str] | None = None) -> float:
        """A number setting (seconds, say), with an error that names the variable."""
        value = self.get(name, env)
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{name} must be a number, got {value!r}") from None

    def path(self, name: str, env: Mapping[str, str] | None = None) -> Path:
        """A path setting; relative values resolve against the project root."""
        path = Path(self.get(name, env)).expanduser()
        if path.is_absolute():
            return path
        return project_root(env) / path


def joined(parts: Iterable[Settings]) -> Settings:
    """One `Settings` holding every key of `parts` (a key declared twice must agree)."""
    defaults: dict[str, str] = {}
    fallbacks: dict[str, str] = {}
    for part in parts:
        for key, value in part.defaults.items():
            if defaults.get(key, value) != value:
                raise ValueError(f"{key} has two defaults: {defaults[key]!r} and {value!r}")
            defaults[key] = value
        fallbacks.update(part.fallbacks)
    return Settings(defaults, fallbacks)
