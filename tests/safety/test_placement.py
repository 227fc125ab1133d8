import pytest

from safety import ChannelPlacement, NeedleSite, Patient, Refusal, Region, Side, check_placement

L, R, M = Side.LEFT, Side.RIGHT, Side.MIDLINE


def rules_for(a, b, patient=Patient()) -> set[str]:
    pair = ChannelPlacement(NeedleSite(*a), NeedleSite(*b))
    return {r.rule for r in check_placement({3: pair}, patient)}


@pytest.mark.parametrize("a,b", [
    ((Region.FOREARM, L), (Region.HAND, L)),
    ((Region.THIGH, R), (Region.LOWER_LEG, R)),
    ((Region.LUMBOSACRAL, L), (Region.LUMBOSACRAL, R)),
    ((Region.CHEST, R), (Region.CHEST, M)),
    ((Region.NECK_BACK, L), (Region.NECK_BACK, L)),
    ((Region.HAND, R), (Region.UPPER_ARM, R)),
    ((Region.UPPER_BACK, R), (Region.SHOULDER, R)),
    ((Region.NECK_BACK, M), (Region.UPPER_BACK, M)),
    ((Region.THIGH, L), (Region.THIGH, R)),
    ((Region.ABDOMEN, L), (Region.ABDOMEN, R)),
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
    assert "placement.transthoracic" in rules_for(a, b)
    assert "placement.transthoracic" in rules_for(b, a)


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
    assert str(refusal) == "pair left chest <-> left upper back makes a current path across the heart on channel 2"


# --- the paths the first rule set let through --------------------------------------------


@pytest.mark.parametrize("a,b", [
    ((Region.CHEST, M), (Region.CHEST, L)),             # sternum to left chest: over the heart
    ((Region.CHEST, M), (Region.SHOULDER, L)),
])
def test_no_current_path_from_the_sternum_to_the_left_chest(a, b):
    assert "placement.transthoracic" in rules_for(a, b)
    assert "placement.transthoracic" in rules_for(b, a)


@pytest.mark.parametrize("arm", [(Region.UPPER_ARM, R), (Region.FOREARM, L), (Region.HAND, R)])
def test_no_current_path_from_either_arm_to_the_sternum(arm):
    assert "placement.transthoracic" in rules_for(arm, (Region.CHEST, M))


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
    assert "placement.pregnancy" not in rules_for(a, (b[0], a[1]), Patient(pregnant=True))  # one side only


def test_site_names_read_plainly():
    assert str(NeedleSite(Region.LOWER_LEG, L, "SP6")) == "left lower leg (SP6)"
