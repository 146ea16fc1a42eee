"""Ablations of a product configuration: the same detector without one of its members.

A member is a part of the score that can be switched off by a setting. They are read from the
configuration itself, so a member added to `DetectorConfig` shows up here by one line:

- the trees: `n_trees = 0` (`TREES_OFF`); a detector that cannot run without trees refuses the
  setting, and the ablation is listed as unavailable with the detector's own reason;
- every view the statistical member watches (`stat_views`: level, still, fit, ...): the
  configuration with that one view removed;
- every entry of any other tuple-of-names field listed in `MEMBER_FIELDS` (for members a
  future configuration lists the same way, e.g. `("joint", "periodic")`);
- or, when `DetectorConfig` defines `ablations()` returning `{name: overrides}`, exactly those:
  the detector knows its members best.

Names read `without <member>`; each ablation is the base overrides plus its own.

>>> [a.name for a in ablations({})]
['default', 'without trees', 'without level', 'without still', 'without fit', 'without change news', 'without shift news', 'without calibration', 'without refractory period', 'without recurring surprise', 'without daily profile', 'without noise floor']
>>> ablations({})[4].overrides
{'stat_views': ['level', 'still']}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from detection_eval.product_detector import NAB_OVERRIDES, product_config

TREES_OFF = {"n_trees": 0}
MEMBER_FIELDS: tuple[str, ...] = ("stat_views",)


@dataclass(frozen=True)
class Ablation:
    """A named product configuration (`overrides` on the defaults), or why it cannot run."""

    name: str
    overrides: dict
    unavailable: str | None = None

    def spec(self) -> dict:
        """The `--detector` JSON object for it."""
        return {"name": self.name, "product": self.overrides}


def _members(config) -> dict[str, dict]:
    """Each member's name and the overrides that remove it from `config`."""
    custom = getattr(config, "ablations", None)
    if callable(custom):
        return dict(custom())
    members = {"trees": dict(TREES_OFF)}
    for name in MEMBER_FIELDS:
        entries = tuple(getattr(config, name, ()) or ())
        for entry in entries:
            members[str(entry)] = {name: [e for e in entries if e != entry]}
    return members


def runnable(overrides: Mapping) -> str | None:
    """None when the product detector accepts the settings (on one series), else its reason."""
    from fleetwatch.detector import FleetDetector

    try:
        FleetDetector(product_config(overrides, NAB_OVERRIDES))
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def ablations(base: Mapping | None = None, base_name: str = "default") -> list[Ablation]:
    """The base configuration, then one ablation per member it has."""
    base = dict(base or {})
    config = product_config(base)
    out = [Ablation(base_name, base, runnable(base))]
    for member, removal in _members(config).items():
        overrides = {**base, **removal}
        try:
            if product_config(overrides) == config:
                continue  # the member is already off in the base
        except ValueError as exc:
            out.append(Ablation(f"without {member}", overrides, str(exc)))
            continue
        out.append(Ablation(f"without {member}", overrides, runnable(overrides)))
    return out
