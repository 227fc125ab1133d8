"""The screening checklist every visit answers before any stimulation.

Questions, refusals and warnings follow Houghton PE, Nussbaum EL, Hoens AM. Electrophysical
agents — contraindications and precautions: an evidence-based approach to clinical decision
making in physical therapy. Physiother Can. 2010;62(5):1-80. doi:10.3138/ptc.62.5 (electrical
stimulation chapter), adapted to needles: the current enters below the skin, so bleeding risk
and fainting with needling are asked too. A contraindication refuses (nothing is sent); a
precaution is a warning the clinician must see. Answers are plain yes/no so they can be
recorded with the visit and read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .errors import Refusal
from .limits import Sensitivity
from .placement import ChannelPlacement, Patient, Region

REFERENCE = ("Houghton PE, Nussbaum EL, Hoens AM. Electrophysical agents. Contraindications and precautions: "
             "an evidence-based approach to clinical decision making in physical therapy. Physiother Can. "
             "2010;62(5):1-80. doi:10.3138/ptc.62.5")


class Question(StrEnum):
    IMPLANTED_DEVICE = "implanted_device"
    PREGNANT = "pregnant"
    MALIGNANCY_AT_SITE = "malignancy_at_site"
    CLOT_AT_SITE = "clot_at_site"
    SKIN_AT_SITE = "skin_at_site"
    BLEEDING_RISK = "bleeding_risk"
    EPILEPSY = "epilepsy"
    HEART_DISEASE = "heart_disease"
    METAL_IN_PATH = "metal_in_path"
    REDUCED_SENSATION = "reduced_sensation"
    CANNOT_REPORT = "cannot_report"
    FAINTS_WITH_NEEDLING = "faints_with_needling"


QUESTIONS: Mapping[Question, str] = {
    Question.IMPLANTED_DEVICE: "Does the patient have a pacemaker, defibrillator or any other implanted electronic device?",
    Question.PREGNANT: "Is the patient pregnant, or could she be?",
    Question.MALIGNANCY_AT_SITE: "Is there active cancer at or near today's needle sites?",
    Question.CLOT_AT_SITE: "Is there a known or suspected blood clot (DVT) or thrombophlebitis near today's sites?",
    Question.SKIN_AT_SITE: "Is the skin at today's sites broken, infected, or treated with radiotherapy recently?",
    Question.BLEEDING_RISK: "Does the patient have a bleeding disorder or take blood thinners?",
    Question.EPILEPSY: "Does the patient have epilepsy?",
    Question.HEART_DISEASE: "Does the patient have heart disease (rhythm problems, heart failure, recent heart attack)?",
    Question.METAL_IN_PATH: "Is there metal (a plate, screws, a joint replacement) between or near today's needles?",
    Question.REDUCED_SENSATION: "Is sensation reduced at today's sites (neuropathy, numb or scarred skin)?",
    Question.CANNOT_REPORT: "Is the patient unable to tell you clearly what they feel (cognition, language, age)?",
    Question.FAINTS_WITH_NEEDLING: "Has the patient fainted or felt faint with needles or injections before?",
}

# Answers about the patient rather than about today's needle sites: an implant, a pregnancy, a
# bleeding disorder or blood thinners, epilepsy, heart disease, metal in the body, neuropathy,
# cancer, what the patient can report, a history of fainting with needles. Each outlasts the
# days between visits, so a yes carries over: the next visit shows it and takes it back only
# when asked again by name (`--no bleeding_risk`), never by `--no all`. A known clot and broken
# or infected skin at the sites are findings of today's look at the limb and the skin, made
# afresh at every visit (a clot is referred on, skin heals or the sites move): last visit's yes
# is shown, not carried.
PERSISTENT: frozenset[Question] = frozenset(Question) - {Question.CLOT_AT_SITE, Question.SKIN_AT_SITE}

# Answers that rule out stimulation at every site and every dose, and so end the visit at
# screening: the placement rules refuse any needle site with an implanted electronic device,
# and `screen` refuses any session when the patient cannot report what they feel. The other
# refusals depend on today's sites (choose others and screen again).
ENDS_VISIT: Mapping[Question, str] = {
    Question.IMPLANTED_DEVICE: "a pacemaker, defibrillator or other implanted electronic device rules out "
                               "electrical stimulation at any site",
    Question.CANNOT_REPORT: "the patient cannot tell you reliably what they feel, and every dose depends on it",
}


@dataclass(frozen=True)
class Screening:
    """One visit's answers: `True` means yes. Every question must be answered."""

    answers: Mapping[Question, bool]

    @classmethod
    def all_no(cls) -> Screening:
        return cls({q: False for q in Question})

    def __getitem__(self, question: Question) -> bool:
        return self.answers[question]

    @property
    def unanswered(self) -> tuple[Question, ...]:
        return tuple(q for q in Question if q not in self.answers)

    def ends_visit(self) -> tuple[str, ...]:
        """Why no session of this visit could ever stimulate (ENDS_VISIT), in plain words."""
        return tuple(why for q, why in ENDS_VISIT.items() if self.answers.get(q))

    def patient(self) -> Patient:
        """What the placement rules need to know."""
        return Patient(implanted_device=self.answers.get(Question.IMPLANTED_DEVICE, False),
                       pregnant=self.answers.get(Question.PREGNANT, False))


@dataclass(frozen=True)
class ScreeningVerdict:
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.refusals


def _refuse(rule: str, message: str, channel: int | None = None) -> Refusal:
    return Refusal(rule, message, value=True, limit=False, channel=channel)


def screen(screening: Screening, placements: Mapping[int, ChannelPlacement],
           sensitivity: Sensitivity | None = None) -> ScreeningVerdict:
    """Refusals and warnings from the answers and today's needle sites.

    The placement rules (`check_placement`) judge implanted devices and pregnancy (sites,
    points, pelvis) from `Screening.patient()`; this adds what depends on the other answers."""
    if screening.unanswered:
        missing = ", ".join(QUESTIONS[q] for q in screening.unanswered)
        return ScreeningVerdict((Refusal("screening.incomplete", f"screening is not finished; still to answer: {missing}",
                                         value=len(screening.unanswered), limit=0),))
    refusals: list[Refusal] = []
    warnings: list[str] = []
    yes = screening.answers.get
    sites = [(ch, site) for ch, p in sorted(placements.items()) for site in (p.a, p.b)]

    for question, what in ((Question.MALIGNANCY_AT_SITE, "active cancer"),
                           (Question.CLOT_AT_SITE, "a blood clot or thrombophlebitis"),
                           (Question.SKIN_AT_SITE, "broken, infected or irradiated skin")):
        if yes(question):
            refusals.append(_refuse(f"screening.{question.value}",
                                    f"no stimulation at or near {what}: choose needle sites away from it, "
                                    "then screen again"))
    if yes(Question.CANNOT_REPORT):
        refusals.append(_refuse("screening.cannot_report",
                                "no stimulation: dosing depends on the patient telling you what they feel, "
                                "and this patient cannot report it reliably"))
    if yes(Question.EPILEPSY):
        refusals += [_refuse("screening.epilepsy", f"no needles on the {site} on channel {ch} with epilepsy: "
                             "choose sites below the neck", ch)
                     for ch, site in sites if site.region is Region.NECK_BACK]
        warnings.append("epilepsy: have a plan for a seizure; stop at once if the patient feels unwell")
    if yes(Question.HEART_DISEASE):
        refusals += [_refuse("screening.heart_disease", f"no needles on the {site} on channel {ch} with heart "
                             "disease: choose sites away from the chest", ch)
                     for ch, site in sites if site.region is Region.CHEST]
        warnings.append("heart disease: keep the current away from the chest and watch the patient throughout")
    if yes(Question.REDUCED_SENSATION):
        if sensitivity is Sensitivity.HYPOSENSITIVE:
            refusals.append(_refuse("screening.reduced_sensation",
                                    "reduced sensation is a reason for care, not for stronger doses: use the "
                                    "typical or hypersensitive profile"))
        warnings.append("reduced sensation: titrate where the patient can feel, check the skin and the needles "
                        "during and after the session")
    if yes(Question.METAL_IN_PATH):
        warnings.append("metal near the current path: place the needles so the current does not cross it and "
                        "stop if the patient feels heat or a sharp change")
    if yes(Question.BLEEDING_RISK):
        warnings.append("bleeding risk: press each site for longer after removing the needles and check it "
                        "before the patient leaves")
    if yes(Question.FAINTS_WITH_NEEDLING):
        warnings.append("has fainted with needles: treat lying down and stay with the patient")
    return ScreeningVerdict(tuple(refusals), tuple(warnings))

