"""docker-compose.yml as Compose sees it: variables substituted, then parsed as YAML.

Compose's interpolation, for the forms the stack uses: `$NAME`, `${NAME}`, `${NAME:-default}`,
`${NAME-default}`, `${NAME:?error}`, `${NAME?error}`, `$$`, and defaults that hold references
themselves (`${MAGE_PUBLIC_HOST:-http://127.0.0.1:${MAGE_PORT:-6789}}`), as Compose allows.

>>> interpolate("${A:-x${B:-2}y}", {"B": "7"}), interpolate("${A-d}", {"A": ""}), interpolate("$$A", {})
('x7y', '', '$A')
>>> [(r.name, r.op) for r in references("${A:-${B}} $C")]
[('A', ':-'), ('B', None), ('C', None)]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tests.support import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
SAMPLE_TOKEN = "apiv3_sample-Token_0123456789abcdefABCDEF"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])(.*))?", re.S)


class MissingVariable(LookupError):
    """A `${NAME:?error}` whose variable is unset (or empty): Compose stops with the error."""


@dataclass(frozen=True)
class Reference:
    """One variable reference; `arg` is the default or error text, not yet substituted."""

    name: str
    op: str | None
    arg: str | None


def _scan(text: str) -> Iterator[tuple[int, int, Reference | None]]:
    """(start, end, reference) of every `$` form in `text`; None for `$$`."""
    i = 0
    while (i := text.find("$", i)) != -1:
        if text.startswith("$$", i):
            yield i, i + 2, None
            i += 2
        elif text.startswith("${", i):
            end, depth = i + 2, 1
            while depth:
                if end >= len(text):
                    raise ValueError(f"unterminated ${{ at {text[i : i + 40]!r}")
                if text.startswith("${", end):
                    depth, end = depth + 1, end + 2
                    continue
                depth -= text[end] == "}"
                end += 1
            match = _BRACED.fullmatch(text[i + 2 : end - 1])
            if match is None:
                raise ValueError(f"invalid reference {text[i:end]!r}")
            yield i, end, Reference(match[1], match[2], match[3])
            i = end
        elif match := _NAME.match(text, i + 1):
            yield i, match.end(), Reference(match[0], None, None)
            i = match.end()
        else:
            i += 1


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """`text` with every reference substituted as Compose does."""
    out: list[str] = []
    last = 0
    for start, end, ref in _scan(text):
        out.append(text[last:start])
        last = end
        if ref is None:
            out.append("$")
            continue
        value = env.get(ref.name)
        unset = value is None or (value == "" and ref.op is not None and ref.op.startswith(":"))
        if ref.op in (":-", "-"):
            out.append(interpolate(ref.arg or "", env) if unset else value)
        elif ref.op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{ref.name}: {interpolate(ref.arg or '', env)}")
            out.append(value)
        else:
            out.append(value or "")
    out.append(text[last:])
    return "".join(out)


def references(text: str) -> list[Reference]:
    """Every reference in `text`, those inside defaults and errors included, in order."""
    found: list[Reference] = []
    for _, _, ref in _scan(text):
        if ref is not None:
            found.append(ref)
            found.extend(references(ref.arg or ""))
    return found


def env_example() -> dict[str, str]:
    """The documented settings with their defaults, as a copied `.env` holds them."""
    text = (REPO_ROOT / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.M))


def filled_env(**changes: str) -> dict[str, str]:
    """A `.env` copied from `.env.example` with the secrets filled in, plus `changes`."""
    return {
        **env_example(),
        "INFLUX_TOKEN": SAMPLE_TOKEN,
        "DEFAULT_OWNER_PASSWORD": "pw",
        "GRAFANA_ADMIN_PASSWORD": "gpw",
        **changes,
    }


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose sees it after substitution (default: `filled_env()`)."""
    return yaml.safe_load(
        interpolate(COMPOSE_FILE.read_text(), filled_env() if env is None else env)
    )
