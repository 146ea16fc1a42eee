"""Which machine an operator means: a machineID or a unique_id, resolved against the machines
the detector knows.

The detector keys machines by `unique_id` (`slugify(provider)-machineID`); people say
`machine2`. A machineID that two providers share is ambiguous: the command is refused with the
candidates listed, so a mute never lands on the wrong machine. Names are matched exactly as
given (spaces, quotes and commas included), then, failing that, without regard to case.

>>> fleet = [MachineIdentity("acme-m1", "m1", "ACME"), MachineIdentity("zeta-m1", "m1", "Zeta"),
...          MachineIdentity("acme-press-2", "press 2", "ACME")]
>>> resolve("press 2", fleet).unique_id
'acme-press-2'
>>> resolve("m1", fleet)
Traceback (most recent call last):
...
influx_magic.operations.machine_names.UnknownMachine: 'm1' is the machineID of 2 machines: give the unique_id: acme-m1 (provider ACME), zeta-m1 (provider Zeta)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class UnknownMachine(LookupError):
    """No machine, or more than one, answers to the name; the message lists what does."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0])


@dataclass(frozen=True, order=True)
class MachineIdentity:
    """A machine as the detector keys it, and as people and the data name it."""

    unique_id: str
    machine_id: str
    provider: str

    @property
    def label(self) -> str:
        """How messages name it: `machine2 (provider Acme, acme-machine2)`."""
        return f"{self.machine_id} (provider {self.provider}, {self.unique_id})"


def identities_from_state(machines: Mapping[str, Sequence[str]]) -> list[MachineIdentity]:
    """The identities the detector recorded (`state.extra["machines"]`: uid -> [id, provider])."""
    found = []
    for uid, names in machines.items():
        machine_id, provider = ([*names] + [uid, ""])[:2]
        found.append(MachineIdentity(str(uid), str(machine_id), str(provider)))
    return sorted(found)


def resolve(name: str, machines: Iterable[MachineIdentity]) -> MachineIdentity:
    """The one machine `name` means (unique_id first, then machineID), or `UnknownMachine`."""
    fleet = list(machines)
    for exact in (True, False):

        def same(a: str, b: str, exact: bool = exact) -> bool:
            return a == b if exact else a.casefold() == b.casefold()

        by_uid = [m for m in fleet if same(m.unique_id, name)]
        if len(by_uid) == 1:
            return by_uid[0]
        by_id = [m for m in fleet if same(m.machine_id, name)]
        if len(by_id) == 1:
            return by_id[0]
        if len(by_id) > 1:
            listed = ", ".join(f"{m.unique_id} (provider {m.provider})" for m in by_id)
            raise UnknownMachine(
                f"{name!r} is the machineID of {len(by_id)} machines: give the unique_id: {listed}"
            )
    known = ", ".join(m.unique_id for m in fleet) or "none yet (no pipeline run has scored any)"
    raise UnknownMachine(f"no machine is called {name!r}; known machines: {known}")
