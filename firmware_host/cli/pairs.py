"""The needle pairs of a session, one per channel: from `--pair CH SITES MM` (repeated), from
repeated `--channel/--sites/--inserted` groups, or from today's visit set-up (typed once per
visit, `visit_setup`). A flag repeated without its partners is refused, naming it: nothing is
ever silently dropped."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from safety import ChannelPlacement, Needle, NeedleSite, Refusal, Region, Side

SITES_HELP = (
    "the channel's two needles as SIDE:REGION[:POINT],SIDE:REGION[:POINT], e.g. left:forearm,left:hand:LI4; "
    "regions: " + ", ".join(r.value for r in Region) + "; sides: left, right, midline"
)
DEFAULT_NEEDLE = "0.25x15"


@dataclass(frozen=True)
class Pair:
    """One channel's needles: the two sites, how deep they are in (mm), the needle (DxL mm)."""

    channel: int
    sites: str
    inserted_mm: float | None
    needle: str = DEFAULT_NEEDLE

    def placement(self) -> ChannelPlacement:
        return parse_sites(self.sites)

    def safety_needle(self) -> Needle:
        return parse_needle(self.needle, self.inserted_mm)

    def program_needle(self) -> Any:
        """As a program file writes it (`waveforms.Needle`)."""
        from ..waveforms.program import Needle as NeedleSpec
        from ..waveforms.program import Site

        placement, (diameter, length) = self.placement(), needle_size(self.needle)
        return NeedleSpec(diameter_mm=diameter, length_mm=length, inserted_mm=self.safety_needle().length_mm,
                          site_a=Site(region=placement.a.region, side=placement.a.side, point=placement.a.point),
                          site_b=Site(region=placement.b.region, side=placement.b.side, point=placement.b.point))

    def describe(self) -> str:
        placement = self.placement()
        depth = "" if self.inserted_mm is None else f", in {self.inserted_mm:g} mm"
        return f"channel {self.channel}: {placement.a} / {placement.b}, needles {self.needle} mm{depth}"

    def as_dict(self) -> dict[str, Any]:
        return {"sites": self.sites, "inserted_mm": self.inserted_mm, "needle": self.needle}


def add_pair_options(parser: argparse.ArgumentParser, what: str = "") -> None:
    """--pair, --channel/--sites/--inserted (each repeatable, in groups) and --needle."""
    parser.add_argument("--pair", nargs=3, action="append", metavar=("CH", "SITES", "MM"),
                        help="a channel, its two needle sites and how deep the needles are in (mm), e.g. --pair 1 "
                             "left:forearm,left:hand:LI4 10; repeat for each channel" + what)
    parser.add_argument("--channel", type=int, action="append", metavar="CH",
                        help="a channel (1-based), with its own --sites (repeat the group for more channels); "
                             "alone, picks that channel of today's set-up")
    parser.add_argument("--sites", action="append", metavar="SIDE:REGION,SIDE:REGION", help=SITES_HELP)
    parser.add_argument("--inserted", type=float, action="append", metavar="MM",
                        help="how deep the needles are in, in mm (the conducting part the charge-density rule "
                             "judges): once for every channel, or once per --channel")
    parser.add_argument("--needle", metavar="DIAMETER_MMxLENGTH_MM",
                        help=f"needle diameter and nominal length in mm (default {DEFAULT_NEEDLE})")


def given_pairs(args: argparse.Namespace) -> dict[int, Pair]:
    """The pairs typed on the command line (empty when none were), in channel order; raises
    Refusal for a group that does not add up, naming the flag."""
    needle = getattr(args, "needle", None) or DEFAULT_NEEDLE
    channels, sites, depths = (getattr(args, name, None) or [] for name in ("channel", "sites", "inserted"))
    typed = getattr(args, "pair", None) or []
    if typed and (sites or depths or len(channels) > 1):
        raise Refusal("usage.conflict", "give the needle pairs one way: --pair CH SITES MM for each channel, or "
                      "--channel/--sites/--inserted groups", value="--pair", limit="one way")
    pairs: list[Pair] = [_typed(triple, needle) for triple in typed]
    if sites:
        chosen = channels or ([1] if len(sites) == 1 else [])
        if len(chosen) != len(sites):
            many, few = (("--sites", "--channel") if len(sites) > len(chosen) else ("--channel", "--sites"))
            raise Refusal("usage.repeated", f"{many} is given {_times(max(len(sites), len(chosen)))} but {few} "
                          f"{_times(min(len(sites), len(chosen)))}: give one --sites for each --channel, in the same "
                          "order (or --pair CH SITES MM for each channel)", value=many, limit=few)
        if len(depths) not in (0, 1, len(sites)):
            raise Refusal("usage.repeated", f"--inserted is given {_times(len(depths))} for {len(sites)} channels: "
                          "give it once for every channel, or once after each --sites", value="--inserted",
                          limit=f"1 or {len(sites)}")
        depth = (lambda i: depths[i]) if len(depths) > 1 else (lambda i: depths[0] if depths else None)
        pairs = [Pair(ch, text, depth(i), needle) for i, (ch, text) in enumerate(zip(chosen, sites))]
    elif depths and len(depths) > 1:
        raise Refusal("usage.repeated", f"--inserted is given {_times(len(depths))} without --sites: give --pair CH "
                      "SITES MM for each channel", value="--inserted", limit="--sites")
    seen: set[int] = set()
    for pair in pairs:
        if pair.channel in seen:
            raise Refusal("usage.repeated", f"channel {pair.channel} is given twice: give each channel once, with "
                          "its own sites", value=pair.channel, limit="once")
        seen.add(pair.channel)
    return {p.channel: p for p in sorted(pairs, key=lambda p: p.channel)}


def picked(args: argparse.Namespace, available: dict[int, Pair]) -> dict[int, Pair]:
    """`available` narrowed to the channels named by --channel alone (without --sites), if any,
    with --inserted and --needle, when given, applied to them."""
    wanted = getattr(args, "channel", None) or []
    if getattr(args, "sites", None) or not wanted:
        chosen = available
    else:
        missing = [ch for ch in wanted if ch not in available]
        if missing:
            have = ", ".join(map(str, available)) or "none"
            raise Refusal("setup.sites", f"channel {missing[0]} has no needle sites yet (today's set-up has channel(s) "
                          f"{have}): give --sites SIDE:REGION,SIDE:REGION and --inserted MM for it",
                          value=missing[0], limit=have)
        chosen = {ch: available[ch] for ch in sorted(set(wanted))}
    depths = getattr(args, "inserted", None) or []
    if len(depths) == 1 and not getattr(args, "sites", None):
        chosen = {ch: Pair(ch, p.sites, depths[0], p.needle) for ch, p in chosen.items()}
    if getattr(args, "needle", None):
        chosen = {ch: Pair(ch, p.sites, p.inserted_mm, args.needle) for ch, p in chosen.items()}
    return chosen


def _typed(triple: list[str], needle: str) -> Pair:
    channel, sites, depth = triple
    try:
        number = int(channel)
        mm = float(depth)
        if number < 1:
            raise ValueError
    except ValueError:
        raise Refusal("setup.pair", f"--pair {' '.join(triple)}: give the channel (1, 2, ...), the two sites and the "
                      "depth in mm, e.g. --pair 1 left:forearm,left:hand:LI4 10", value=" ".join(triple),
                      limit="CH SITES MM") from None
    parse_sites(sites)
    return Pair(number, sites, mm, needle)


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def parse_sites(text: str) -> ChannelPlacement:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise Refusal("setup.sites", f"--sites needs two needle sites separated by a comma, got {text!r}",
                      value=text, limit="SIDE:REGION,SIDE:REGION")
    return ChannelPlacement(*(_site(part) for part in parts))


def _site(text: str) -> NeedleSite:
    side, _, rest = text.partition(":")
    region, _, point = rest.partition(":")
    try:
        return NeedleSite(Region(region.strip().lower()), Side(side.strip().lower()), point.strip() or None)
    except ValueError:
        raise Refusal("setup.sites", f"needle site {text!r} is not SIDE:REGION[:POINT] (e.g. left:forearm or "
                      "left:hand:LI4)", value=text, limit="SIDE:REGION[:POINT]") from None


def needle_size(text: str) -> tuple[float, float]:
    """(diameter, nominal length) from DxL."""
    diameter, sep, length = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        return float(diameter), float(length)
    except ValueError:
        raise Refusal("setup.needle", f"--needle {text!r} is not DIAMETER_MMxLENGTH_MM (e.g. 0.25x15)",
                      value=text, limit="DIAMETER_MMxLENGTH_MM") from None


def parse_needle(text: str, inserted_mm: float | None) -> Needle:
    """The needle as the safety rules judge it: its diameter and the depth it is inserted (the
    nominal size is checked to be a needle's too)."""
    diameter, length = needle_size(text)
    Needle(diameter, length)
    if inserted_mm is None:
        raise Refusal("setup.needle", "give --inserted MM: how deep the needles are in (the charge-density rule "
                      "judges the inserted part, not the nominal length)", value=None, limit="> 0")
    if not 0 < inserted_mm <= length:
        raise Refusal("setup.needle", f"--inserted {inserted_mm:g} mm: give how deep the needle is in, above 0 "
                      f"and at most its length ({length:g} mm; --needle DIAMETERxLENGTH for a longer one)",
                      value=inserted_mm, limit=length)
    return Needle(diameter, inserted_mm)
