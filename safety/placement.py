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
LOW_BACK = frozenset({Region.LUMBOSACRAL, Region.SACRAL})
# In pregnancy: nothing over the abdomen, the lower back, the sacrum, the buttocks or hips, and
# not the points traditionally avoided because they are held to induce labour.
PREGNANCY_FORBIDDEN = frozenset({Region.ABDOMEN, Region.LUMBOSACRAL, Region.SACRAL, Region.BUTTOCK, Region.HIP})
PREGNANCY_POINTS = ("LI4", "SP6", "GB21", "BL60", "BL67")
MIDLINE_ALLOWED = FORBIDDEN_SITES | TRUNK | {Region.NECK_BACK}
OPPOSITE = {Side.LEFT: Side.RIGHT, Side.RIGHT: Side.LEFT}


# The allow-list: a pair is allowed only when a row holds it, in either order. Sides: "any";
# "same" (both left or both right); "same/midline" (the same side, or one needle on the
# midline). Everything else may carry current across the chest (the heart) or the neck.
ALLOWED_PAIRS: tuple[tuple[frozenset[Region], frozenset[Region], str], ...] = (
    (UPPER_LIMB, UPPER_LIMB, "same"),                               # within one arm
    (LOWER_LIMB, LOWER_LIMB, "any"),                                # legs and pelvis
    (LOW_BACK, LOW_BACK | LOWER_LIMB, "any"),                       # low back, to the buttocks and legs
    (frozenset({Region.ABDOMEN}), frozenset({Region.ABDOMEN}) | LOW_BACK | LOWER_LIMB, "any"),  # below the diaphragm
    (frozenset({Region.NECK_BACK}), frozenset({Region.NECK_BACK, Region.UPPER_BACK}), "same/midline"),
    (frozenset({Region.NECK_BACK}), frozenset({Region.SHOULDER}), "same"),              # upper trapezius
    (frozenset({Region.UPPER_BACK}), frozenset({Region.UPPER_BACK}) | LOW_BACK, "same/midline"),  # along the back
    (frozenset({Region.UPPER_BACK}), frozenset({Region.SHOULDER}), "same"),             # shoulder blade
    (frozenset({Region.CHEST}), frozenset({Region.CHEST, Region.SHOULDER}), "right"),   # right chest wall only
)


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


def _sides_fit(a: Side, b: Side, rule: str) -> bool:
    if rule == "any":
        return True
    if rule == "right":
        return a is b is Side.RIGHT
    if rule == "same/midline" and Side.MIDLINE in (a, b):
        return True
    return a is b and a is not Side.MIDLINE


def path_allowed(a: NeedleSite, b: NeedleSite) -> bool:
    """True when the current between `a` and `b` cannot cross the chest (the heart) or the neck:
    the pair is on the allow-list."""
    return any(_sides_fit(a.side, b.side, sides) and ((a.region in one and b.region in other)
                                                      or (b.region in one and a.region in other))
               for one, other, sides in ALLOWED_PAIRS)


def is_point(site: NeedleSite, names: tuple[str, ...]) -> bool:
    """The site names one of these acupuncture points (LI4, li 4, LI-4; not LI40)."""
    point = (site.point or "").upper().replace(" ", "").replace("-", "")
    return any(point.startswith(name) and not point[len(name):len(name) + 1].isdigit() for name in names)


def _pair_refusals(a: NeedleSite, b: NeedleSite, patient: Patient, where: str, channel: int | None) -> list[Refusal]:
    """Why current may not flow between `a` and `b` (`where` says which needles they are)."""
    pair = f"{a} <-> {b}"
    what = f"pair {pair}"
    out = []
    across = OPPOSITE.get(a.side) is b.side
    if patient.pregnant and across and {a.region, b.region} <= LOWER_LIMB:
        out.append(Refusal("placement.pregnancy", f"{what} puts the current across the pelvis in pregnancy {where}",
                           value=pair, limit="both needles on one side in pregnancy", channel=channel))
    if path_allowed(a, b):
        return out
    if across and a.region is b.region is Region.NECK_BACK:
        out.append(Refusal("placement.across_neck", f"{what} puts the current across the neck {where}",
                           value=pair, limit="both needles on one side of the neck", channel=channel))
    elif across and (a.region in THORAX or b.region in THORAX):
        out.append(Refusal("placement.bridges_thorax", f"{what} bridges left and right across the thorax {where}",
                           value=pair, limit="one side of the chest/upper back", channel=channel))
    else:
        out.append(Refusal("placement.transthoracic",
                           f"{what} makes a current path that may cross the chest (the heart) {where}: needle "
                           "pairs stay within one arm, within the legs and pelvis, the low back and abdomen, or "
                           "along one side of the back and neck", value=pair, limit="a pair on the allow-list",
                           channel=channel))
    return out


def check_placement(placements: Mapping[int, ChannelPlacement], patient: Patient) -> list[Refusal]:
    """Every placement refusal for the session (empty when the set-up may be used). The
    channels of one session may run at the same time, so current can flow between the needles
    of different channels too: every such pair must be allowed as well (the ICD has no way for
    a device to declare its outputs isolated from each other)."""
    refusals: list[Refusal] = []
    if patient.implanted_device:
        refusals.append(Refusal("placement.implanted_device",
                                "stimulation refused: the patient has a pacemaker, ICD or other implanted "
                                "electronic device", value=True, limit=False))
    for ch, p in sorted(placements.items()):
        for site in (p.a, p.b):
            if site.region in FORBIDDEN_SITES:
                refusals.append(Refusal("placement.head_neck", f"needle on the {site} is refused on channel {ch}",
                                        value=str(site), limit="no head, eye, mouth or front of neck", channel=ch))
            if patient.pregnant and (site.region in PREGNANCY_FORBIDDEN or is_point(site, PREGNANCY_POINTS)):
                refusals.append(Refusal("placement.pregnancy",
                                        f"needle on the {site} is refused in pregnancy on channel {ch}",
                                        value=str(site), limit="no abdominal, low back, sacral, buttock or hip "
                                        "site, and none of " + ", ".join(PREGNANCY_POINTS), channel=ch))
        refusals += _pair_refusals(p.a, p.b, patient, f"on channel {ch}", ch)
    channels = sorted(placements)
    for i, ch in enumerate(channels):
        for other in channels[i + 1:]:
            pairs = {(a, b) for a in (placements[ch].a, placements[ch].b)
                     for b in (placements[other].a, placements[other].b)}
            for a, b in sorted(pairs, key=str):
                found = _pair_refusals(a, b, patient, f"between channels {ch} and {other}, which run together in one session", ch)
                refusals += [Refusal("placement.between_channels", r.message, value=r.value, limit=r.limit,
                                     channel=ch, detail=r.rule) for r in found]
    return refusals
