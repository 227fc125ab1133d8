import pytest

from safety import ChannelPlacement, NeedleSite, Patient, Refusal, Region, Side, check_placement

L, R, M = Side.LEFT, Side.RIGHT, Side.MIDLINE
THORAX_RULES = {"placement.transthoracic", "placement.bridges_thorax"}


def rules_for(a, b, patient=Patient()) -> set[str]:
    pair = ChannelPlacement(NeedleSite(*a), NeedleSite(*b))
    return {r.rule for r in check_placement({3: pair}, patient)}


@pytest.mark.parametrize("a,b", [
    ((Region.FOREARM, L), (Region.HAND, L)),
    ((Region.THIGH, R), (Region.LOWER_LEG, R)),
    ((Region.LUMBOSACRAL, L), (Region.LUMBOSACRAL, R)),
    ((Region.CHEST, R), (Region.CHEST, R)),
    ((Region.NECK_BACK, L), (Region.NECK_BACK, L)),
    ((Region.HAND, R), (Region.UPPER_ARM, R)),
    ((Region.UPPER_BACK, R), (Region.SHOULDER, R)),
    ((Region.NECK_BACK, M), (Region.UPPER_BACK, M)),
    ((Region.THIGH, L), (Region.THIGH, R)),
    ((Region.ABDOMEN, L), (Region.ABDOMEN, R)),
    ((Region.UPPER_BACK, L), (Region.UPPER_BACK, L)),      # paraspinal, behind the chest
    ((Region.NECK_BACK, R), (Region.SHOULDER, R)),         # upper trapezius
    ((Region.LUMBOSACRAL, L), (Region.BUTTOCK, L)),
    ((Region.SACRAL, M), (Region.THIGH, R)),
])
def test_allowed_pairs(a, b):
    assert rules_for(a, b) == set()


@pytest.mark.parametrize("region", [Region.HEAD, Region.EYE, Region.MOUTH, Region.NECK_FRONT])
def test_head_eyes_mouth_front_of_neck_refused(region):
    assert "placement.head_neck" in rules_for((region, M), (Region.NECK_BACK, M))


@pytest.mark.parametrize("region", [Region.CHEST, Region.UPPER_BACK])
def test_left_right_bridge_across_thorax(region):
    assert "placement.bridges_thorax" in rules_for((region, L), (region, R))
    assert "placement.bridges_thorax" not in rules_for((region, L), (region, L))


@pytest.mark.parametrize("a,b", [
    ((Region.CHEST, L), (Region.UPPER_BACK, L)),        # front to back
    ((Region.CHEST, M), (Region.UPPER_BACK, M)),
    ((Region.UPPER_ARM, L), (Region.UPPER_ARM, R)),     # arm to arm
    ((Region.HAND, L), (Region.ABDOMEN, R)),            # left arm to right trunk
    ((Region.CHEST, L), (Region.FOREARM, R)),
    ((Region.HAND, R), (Region.CHEST, L)),
    ((Region.FOREARM, L), (Region.CHEST, M)),           # left arm to sternum
    ((Region.HAND, L), (Region.THIGH, L)),              # arm to leg runs through the trunk
])
def test_transthoracic_paths_refused(a, b):
    assert rules_for(a, b) & THORAX_RULES
    assert rules_for(b, a) & THORAX_RULES


def test_implanted_device_refuses_everything():
    refusals = check_placement({1: ChannelPlacement(NeedleSite(Region.HAND, L), NeedleSite(Region.FOREARM, L))},
                               Patient(implanted_device=True))
    assert [r.rule for r in refusals] == ["placement.implanted_device"]
    assert check_placement({}, Patient(implanted_device=True))


@pytest.mark.parametrize("region", [Region.ABDOMEN, Region.LUMBOSACRAL, Region.SACRAL])
def test_pregnancy_sites(region):
    assert "placement.pregnancy" in rules_for((region, L), (region, L), Patient(pregnant=True))
    assert "placement.pregnancy" not in rules_for((region, L), (region, L))
    assert "placement.pregnancy" not in rules_for((Region.FOOT, L), (Region.LOWER_LEG, L), Patient(pregnant=True))


def test_limbs_need_a_side():
    with pytest.raises(Refusal) as exc:
        NeedleSite(Region.HAND, M)
    assert exc.value.rule == "placement.invalid_site"


def test_refusal_names_channel_and_pair():
    [refusal] = [r for r in check_placement({2: ChannelPlacement(NeedleSite(Region.CHEST, L),
                                                                 NeedleSite(Region.UPPER_BACK, L))}, Patient())]
    assert refusal.channel == 2
    assert str(refusal).startswith("pair left chest <-> left upper back makes a current path that may cross the "
                                   "chest (the heart) on channel 2: needle pairs stay within one arm")


# --- the paths the first rule set let through --------------------------------------------


@pytest.mark.parametrize("a,b", [
    ((Region.CHEST, M), (Region.CHEST, L)),             # sternum to left chest: over the heart
    ((Region.CHEST, M), (Region.SHOULDER, L)),
])
def test_no_current_path_from_the_sternum_to_the_left_chest(a, b):
    assert rules_for(a, b) & THORAX_RULES and rules_for(b, a) & THORAX_RULES


@pytest.mark.parametrize("arm", [(Region.UPPER_ARM, R), (Region.FOREARM, L), (Region.HAND, R)])
def test_no_current_path_from_either_arm_to_the_sternum(arm):
    assert rules_for(arm, (Region.CHEST, M)) & THORAX_RULES


@pytest.mark.parametrize("side", [L, R])
@pytest.mark.parametrize("limb", [Region.HAND, Region.FOREARM, Region.UPPER_ARM])
def test_no_current_path_from_a_hand_or_arm_to_the_chest_of_the_same_side(limb, side):
    assert "placement.transthoracic" in rules_for((limb, side), (Region.CHEST, side))


def test_no_current_across_the_back_of_the_neck():
    assert "placement.across_neck" in rules_for((Region.NECK_BACK, L), (Region.NECK_BACK, R))
    assert "placement.across_neck" not in rules_for((Region.NECK_BACK, L), (Region.NECK_BACK, M))


@pytest.mark.parametrize("a,b", [
    ((Region.HIP, L), (Region.HIP, R)),
    ((Region.THIGH, L), (Region.THIGH, R)),
    ((Region.HIP, R), (Region.THIGH, L)),
    ((Region.BUTTOCK, L), (Region.BUTTOCK, R)),
])
def test_no_current_across_the_pelvis_in_pregnancy(a, b):
    assert "placement.pregnancy" in rules_for(a, b, Patient(pregnant=True))
    assert "placement.pregnancy" not in rules_for(a, b)                       # allowed when not pregnant
    one_side = (b[0], a[1])
    if not {a[0], b[0]} & {Region.BUTTOCK, Region.HIP}:     # buttocks and hips are refused on one side too
        assert "placement.pregnancy" not in rules_for(a, one_side, Patient(pregnant=True))


def test_site_names_read_plainly():
    assert str(NeedleSite(Region.LOWER_LEG, L, "SP6")) == "left lower leg (SP6)"


# --- issue 19: an allow-list, across channels -----------------------------------------------


@pytest.mark.parametrize("a,b", [
    ((Region.HAND, L), (Region.ABDOMEN, L)),
    ((Region.UPPER_ARM, R), (Region.SACRAL, M)),
    ((Region.CHEST, L), (Region.LUMBOSACRAL, L)),
    ((Region.CHEST, M), (Region.ABDOMEN, M)),              # sternum to abdomen
    ((Region.HAND, L), (Region.NECK_BACK, R)),             # hand to the opposite back of the neck
    ((Region.UPPER_BACK, R), (Region.ABDOMEN, R)),
    ((Region.CHEST, L), (Region.CHEST, L)),                # over the heart, for everyone
    ((Region.SHOULDER, L), (Region.CHEST, L)),
    ((Region.NECK_BACK, L), (Region.CHEST, L)),
    ((Region.CHEST, M), (Region.CHEST, R)),                # the sternum lies over the heart
])
def test_the_pairs_the_review_found_crossing_the_thorax_are_refused(a, b):
    assert rules_for(a, b) & THORAX_RULES and rules_for(b, a) & THORAX_RULES


def test_channels_that_run_together_count_as_pairs():
    """One channel per hand ran together: current from one hand to the other crosses the chest."""
    hands = {1: ChannelPlacement(NeedleSite(Region.HAND, L), NeedleSite(Region.FOREARM, L)),
             2: ChannelPlacement(NeedleSite(Region.HAND, R), NeedleSite(Region.FOREARM, R))}
    refusals = check_placement(hands, Patient())
    assert refusals and {r.rule for r in refusals} == {"placement.between_channels"}
    assert "between channels 1 and 2, which run together" in str(refusals[0])
    legs = {1: ChannelPlacement(NeedleSite(Region.LOWER_LEG, L, "ST36"), NeedleSite(Region.LOWER_LEG, L, "SP6")),
            2: ChannelPlacement(NeedleSite(Region.LOWER_LEG, R, "ST36"), NeedleSite(Region.LOWER_LEG, R, "SP6"))}
    assert check_placement(legs, Patient()) == []
    assert {r.rule for r in check_placement(legs, Patient(pregnant=True))} == {"placement.pregnancy",
                                                                                "placement.between_channels"}


@pytest.mark.parametrize("point", ["LI4", "SP6", "GB21", "BL60", "BL67"])
def test_pregnancy_points_are_refused(point):
    site = NeedleSite(Region.SHOULDER if point == "GB21" else Region.FOOT, L, point)
    other = NeedleSite(Region.UPPER_ARM if point == "GB21" else Region.LOWER_LEG, L)
    assert "placement.pregnancy" in {r.rule for r in check_placement({1: ChannelPlacement(site, other)},
                                                                      Patient(pregnant=True))}
