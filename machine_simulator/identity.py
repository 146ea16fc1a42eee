"""Stable machine identities: a provider and an EAN-8 barcode per machine, derived from the seed.

The upstream simulator drew a random provider on every start, which changed the series key
(`provider` is a tag) and split one machine's history in two. Here the identity is a pure
function of (seed, machine id), so restarts, the web page and the evaluation agree.

>>> machine_identity(42, "machine1") == machine_identity(42, "machine1")
True
>>> ean8_check_digit("9638507")
'4'
>>> all(valid_ean8(machine_identity(7, f"machine{i}").barcode) for i in range(1, 20))
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Company names in the style Faker produced upstream; some carry commas, spaces and "&", which
# line protocol must escape in a tag value.
PROVIDERS: tuple[str, ...] = (
    "Hartmann Antriebstechnik",
    "Nordhoff, Weiss & Partner",
    "Okafor Precision Works",
    "Lindqvist Machining AB",
    "Bauer & Söhne",
    "Castillo, Ortega and Ruiz",
    "Tanaka Seiki",
    "Moreau Industrie",
    "Patel Engineering Ltd",
    "Kowalski Metal",
    "Rossi Meccanica S.p.A.",
    "Brennan Tooling",
)


@dataclass(frozen=True)
class Identity:
    """What the payload's `metadata` says about a machine besides its id."""

    provider: str
    barcode: str


def ean8_check_digit(digits7: str) -> str:
    """The EAN-8 check digit: weights 3,1,3,1,... from the left over seven digits."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(digits7))
    return str((10 - total % 10) % 10)


def valid_ean8(code: str) -> bool:
    return len(code) == 8 and code.isdigit() and ean8_check_digit(code[:7]) == code[7]


def machine_identity(seed: int, machine_id: str) -> Identity:
    """The provider and barcode of `machine_id` under `seed` (string seeding is stable)."""
    rng = random.Random(f"identity:{seed}:{machine_id}")
    digits = "".join(str(rng.randrange(10)) for _ in range(7))
    return Identity(provider=rng.choice(PROVIDERS), barcode=digits + ean8_check_digit(digits))
