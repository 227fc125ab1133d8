"""Needle placement and contraindication rules from the session set-up.

Regions (`Region`): HEAD (scalp and face), EYE, MOUTH, NECK_FRONT, NECK_BACK, SHOULDER,
CHEST, UPPER_BACK, ABDOMEN, LUMBOSACRAL (lumbar spine to the lumbosacral junction),
SACRAL, BUTTOCK, UPPER_ARM, FOREARM, HAND, HIP, THIGH, KNEE, LOWER_LEG, FOOT.
Limbs, shoulder, hip and buttock need a side; the trunk, head and neck may be MIDLINE.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping

from .errors import Refusal


class Region(str, Enum):
    HEAD = "head"
    EYE = "eye"
    MOUTH = "mouth"
    NECK_FRONT = "neck_front"
    NECK_BACK = "neck_back"
    SHOULDER = "shoulder"
    CHEST = "chest"
    UPPER_BACK = "upper_back"
    ABDOMEN = "abdomen"
    LUMBOSACRAL = "lumbosacral"
    SACRAL = "sacral"
    BUTTOCK = "buttock"
    UPPER_ARM = "upper_arm"
    FOREARM = "forearm"
    HAND = "hand"
    HIP = "hip"
    THIGH = "thigh"
    KNEE = "knee"
    LOWER_LEG = "lower_leg"
    FOOT = "foot"


class Side(str, Enum):
    LEFT = "left"
    RIGHT = "right"
    MIDLINE = "midline"


FORBIDDEN_SITES = frozenset({Region.HEAD, Region.EYE, Region.MOUTH, Region.NECK_FRONT})
THORAX = frozenset({Region.CHEST, Region.UPPER_BACK})
UPPER_LIMB = frozenset({Region.SHOULDER, Region.UPPER_ARM, Region.FOREARM, Region.HAND})
TRUNK = frozenset({Region.CHEST, Region.UPPER_BACK, Region.ABDOMEN, Region.LUMBOSACRAL, Region.SACRAL})
LOWER_LIMB = frozenset({Region.BUTTOCK, Region.HIP, Region.THIGH, Region.KNEE, Region.LOWER_LEG, Region.FOOT})
PREGNANCY_FORBIDDEN = frozenset({Region.ABDOMEN, Region.LUMBOSACRAL, Region.SACRAL})
ARM = frozenset({Region.UPPER_ARM, Region.FOREARM, Region.HAND})
MIDLINE_ALLOWED = FORBIDDEN_SITES | TRUNK | {Region.NECK_BACK}
OPPOSITE = {Side.LEFT: Side.RIGHT, Side.RIGHT: Side.LEFT}


@dataclass(frozen=True)
class NeedleSite:
    """Where one needle goes: the region the rules judge, its side, and the point's name if given."""

    region: Region
    side: Side
    point: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.region, Region) or not isinstance(self.side, Side):
            raise Refusal("placement.invalid_site", f"needle site {self.region!r}/{self.side!r} is not a known site",
                          value=(self.region, self.side), limit="Region and Side")
        if self.side is Side.MIDLINE and self.region not in MIDLINE_ALLOWED:
            raise Refusal("placement.invalid_site", f"{self.region.value} needs a side (left or right), not midline",
                          value=self.side.value, limit="left/right", detail=self.region.value)

    def __str__(self) -> str:
        where = f"{self.side.value} {self.region.value.replace('_', ' ')}"
        return f"{where} ({self.point})" if self.point else where


@dataclass(frozen=True)
class ChannelPlacement:
    """The two needles of one channel."""

    a: NeedleSite
    b: NeedleSite


@dataclass(frozen=True)
class Patient:
    implanted_device: bool = False   # pacemaker, ICD or any other implanted electronic device
    pregnant: bool = False


def _crosses_heart(a: NeedleSite, b: NeedleSite) -> bool:
    """Conservative transthoracic test: the current path may pass through the heart."""
    regions = {a.region, b.region}
    if regions == THORAX:                                   # chest <-> upper back
        return True
    upper = UPPER_LIMB | THORAX
    if (a.region in upper and b.region in LOWER_LIMB) or (b.region in upper and a.region in LOWER_LIMB):
        return True                                         # arm/thorax <-> leg runs through the trunk
    if OPPOSITE.get(a.side) is b.side:                      # left <-> right
        return (a.region in upper and b.region in upper | TRUNK) or (b.region in upper and a.region in upper | TRUNK)
    for limb, other in ((a, b), (b, a)):
        if limb.region in UPPER_LIMB and other.side is Side.MIDLINE:
            if other.region is Region.CHEST:                # either arm <-> sternum
                return True
            if limb.side is Side.LEFT and other.region is Region.UPPER_BACK:   # left arm <-> thoracic spine
                return True
        if limb.region in ARM and other.region is Region.CHEST and limb.side is other.side:
            return True                                     # hand/arm <-> chest of the same side
        if limb.region is Region.CHEST and limb.side is Side.MIDLINE and other.side is Side.LEFT and other.region in upper:
            return True                                     # sternum <-> left chest, the heart below
    return False


def check_placement(placements: Mapping[int, ChannelPlacement], patient: Patient) -> list[Refusal]:
    """Every placement refusal for the session (empty when the set-up may be used)."""
    refusals: list[Refusal] = []
    if patient.implanted_device:
        refusals.append(Refusal("placement.implanted_device",
                                "stimulation refused: the patient has a pacemaker, ICD or other implanted "
                                "electronic device", value=True, limit=False))
    for ch, p in sorted(placements.items()):
        pair = f"{p.a} <-> {p.b}"
        for site in (p.a, p.b):
            if site.region in FORBIDDEN_SITES:
                refusals.append(Refusal("placement.head_neck", f"needle on the {site} is refused on channel {ch}",
                                        value=str(site), limit="no head, eye, mouth or front of neck", channel=ch))
            if patient.pregnant and site.region in PREGNANCY_FORBIDDEN:
                refusals.append(Refusal("placement.pregnancy",
                                        f"needle on the {site} is refused in pregnancy on channel {ch}",
                                        value=str(site), limit="no abdominal, lumbosacral or sacral site",
                                        channel=ch))
        if OPPOSITE.get(p.a.side) is p.b.side and p.a.region is p.b.region is Region.NECK_BACK:
            refusals.append(Refusal("placement.across_neck",
                                    f"pair {pair} puts the current across the neck on channel {ch}",
                                    value=pair, limit="both needles on one side of the neck", channel=ch))
        if (patient.pregnant and OPPOSITE.get(p.a.side) is p.b.side
                and {p.a.region, p.b.region} <= LOWER_LIMB):
            refusals.append(Refusal("placement.pregnancy",
                                    f"pair {pair} puts the current across the pelvis in pregnancy on channel {ch}",
                                    value=pair, limit="both needles on one side in pregnancy", channel=ch))
        if OPPOSITE.get(p.a.side) is p.b.side and (p.a.region in THORAX or p.b.region in THORAX):
            refusals.append(Refusal("placement.bridges_thorax",
                                    f"pair {pair} bridges left and right across the thorax on channel {ch}",
                                    value=pair, limit="one side of the chest/upper back", channel=ch))
        if _crosses_heart(p.a, p.b):
            refusals.append(Refusal("placement.transthoracic",
                                    f"pair {pair} makes a current path across the heart on channel {ch}",
                                    value=pair, limit="no transthoracic path", channel=ch))
    return refusals
