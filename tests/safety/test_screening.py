"""The screening checklist: each answer that refuses or warns, and what passes."""

import pytest

from safety import check_placement, ChannelPlacement, NeedleSite, Question, Region, Screening, Sensitivity, Side, screen
from safety.screening import ENDS_VISIT, QUESTIONS, REFERENCE

L, R = Side.LEFT, Side.RIGHT
FOREARM = {1: ChannelPlacement(NeedleSite(Region.FOREARM, L), NeedleSite(Region.HAND, L))}


def answers(*yes: Question) -> Screening:
    return Screening({q: q in yes for q in Question})


def rules(verdict) -> set[str]:
    return {r.rule for r in verdict.refusals}


def test_every_question_is_asked_in_plain_words() -> None:
    assert set(QUESTIONS) == set(Question)
    assert all(text.endswith("?") and "_" not in text for text in QUESTIONS.values())
    assert "10.3138/ptc.62.5" in REFERENCE


def test_nothing_raised_passes() -> None:
    verdict = screen(answers(), FOREARM)
    assert verdict.ok and verdict.warnings == ()


def test_an_unfinished_screening_refuses() -> None:
    verdict = screen(Screening({Question.PREGNANT: False}), FOREARM)
    assert rules(verdict) == {"screening.incomplete"}
    assert "pacemaker" in str(verdict.refusals[0])


@pytest.mark.parametrize("question", [Question.MALIGNANCY_AT_SITE, Question.CLOT_AT_SITE, Question.SKIN_AT_SITE,
                                      Question.CANNOT_REPORT])
def test_contraindications_at_the_site_or_in_the_patient_refuse(question: Question) -> None:
    verdict = screen(answers(question), FOREARM)
    assert rules(verdict) == {f"screening.{question.value}"}
    assert "screening." not in str(verdict.refusals[0])  # plain words, no rule id


def test_epilepsy_keeps_needles_off_the_neck() -> None:
    neck = {2: ChannelPlacement(NeedleSite(Region.NECK_BACK, L), NeedleSite(Region.SHOULDER, L))}
    assert rules(screen(answers(Question.EPILEPSY), neck)) == {"screening.epilepsy"}
    assert screen(answers(Question.EPILEPSY), FOREARM).ok
    assert screen(answers(), neck).ok


def test_heart_disease_keeps_needles_off_the_chest() -> None:
    chest = {1: ChannelPlacement(NeedleSite(Region.CHEST, R), NeedleSite(Region.CHEST, R))}
    verdict = screen(answers(Question.HEART_DISEASE), chest)
    assert rules(verdict) == {"screening.heart_disease"} and verdict.refusals[0].channel == 1
    assert screen(answers(Question.HEART_DISEASE), FOREARM).warnings


@pytest.mark.parametrize("point", ["LI4", "li 4 hegu", "SP6 sanyinjiao", "SP-6", "GB21", "BL60", "bl 67"])
def test_pregnancy_refuses_the_points_held_to_induce_labour(point: str) -> None:
    """Issue 19: LI4/SP6 only got a caution, GB21, BL60 and BL67 nothing. The answer 'pregnant'
    makes them placement refusals (`Screening.patient()` feeds the placement rules)."""
    placement = {1: ChannelPlacement(NeedleSite(Region.LOWER_LEG, L, point), NeedleSite(Region.FOOT, L))}
    pregnant = answers(Question.PREGNANT)
    assert [r.rule for r in check_placement(placement, pregnant.patient())] == ["placement.pregnancy"]
    assert not check_placement(placement, answers().patient())


def test_pregnancy_does_not_refuse_other_points() -> None:
    placement = {1: ChannelPlacement(NeedleSite(Region.HAND, L, "LI42"), NeedleSite(Region.FOREARM, L, "SP60"))}
    assert not check_placement(placement, answers(Question.PREGNANT).patient())


def test_reduced_sensation_is_a_precaution_not_a_stronger_dose() -> None:
    assert rules(screen(answers(Question.REDUCED_SENSATION), FOREARM, Sensitivity.HYPOSENSITIVE)) == {
        "screening.reduced_sensation"}
    verdict = screen(answers(Question.REDUCED_SENSATION), FOREARM, Sensitivity.TYPICAL)
    assert verdict.ok and any("reduced sensation" in w for w in verdict.warnings)


@pytest.mark.parametrize("question,words", [(Question.BLEEDING_RISK, "press each site"),
                                            (Question.FAINTS_WITH_NEEDLING, "lying down"),
                                            (Question.METAL_IN_PATH, "metal")])
def test_precautions_warn(question: Question, words: str) -> None:
    verdict = screen(answers(question), FOREARM)
    assert verdict.ok and any(words in w for w in verdict.warnings)


def test_the_placement_rules_see_the_answers() -> None:
    assert answers(Question.IMPLANTED_DEVICE).patient().implanted_device
    assert answers(Question.PREGNANT).patient().pregnant


@pytest.mark.parametrize("question", list(ENDS_VISIT))
def test_an_answer_that_ends_the_visit_refuses_every_site(question: Question) -> None:
    """What `visit start` ends a visit for is refused by the rules at any placement, so ending
    it there only says sooner what every later command would refuse."""
    placements = [FOREARM, {1: ChannelPlacement(NeedleSite(Region.THIGH, R), NeedleSite(Region.LOWER_LEG, R))},
                  {1: ChannelPlacement(NeedleSite(Region.LUMBOSACRAL, L), NeedleSite(Region.LUMBOSACRAL, L))}]
    screening = answers(question)
    assert screening.ends_visit() == (ENDS_VISIT[question],)
    for placement in placements:
        assert not screen(screening, placement).ok or check_placement(placement, screening.patient())
    assert screen(answers(), placements[1]).ok and not check_placement(placements[1], answers().patient())
    assert answers(*(q for q in Question if q not in ENDS_VISIT)).ends_visit() == ()
