"""Symptom questionnaires (`config/questionnaires/`): load, read a reply, score it. Pure.

Each questionnaire is an R4 Questionnaire `<id>.json` with flat `choice` items (options
coded in the DHO answer code system, each with its score as an `ordinalValue` extension)
and optional free-text `string` items, beside `<id>.rules.yaml`: a colour for every answer
code, optional cut-points on the total score, the texts per colour and the schedule. A
reply's colour is the worst of its answers' colours and the total's band (a total on a
cut-point is the more severe band, as everywhere in the plans). See the folder's README.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from dho.catalogue import CatalogueError, load_yaml, number
from dho.rules.plans import WEEKDAYS, Schedule, Texts
from dho.rules.thresholds import Band, CutPoints

QUESTIONNAIRES_DIR = "questionnaires"
CODE_SYSTEMS_DIR = "codesystems"
RULES_SCHEMA = "rules.schema.json"
QUESTIONNAIRE_SCHEMA = "questionnaire.schema.json"
RULES_SUFFIX = ".rules.yaml"
ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
ANSWER_SYSTEM = "https://dho.example.no/fhir/CodeSystem/symptom-answer"
ACCEPTED_STATUS = frozenset({"completed", "amended"})

ErrorCode = Literal[
    "malformed",  # not a JSON object, or a list/object/field of the wrong JSON type
    "not-a-questionnaire-response",
    "not-completed",  # status is not completed or amended
    "unknown-questionnaire",
    "wrong-version",
    "bad-authored",  # missing, or not a date and time
    "authored-without-offset",
    "bad-subject",  # present but not a reference to Patient/<id>
    "unknown-link-id",
    "duplicate-item",
    "too-many-answers",
    "wrong-answer-type",
    "unknown-answer-code",
    "missing-required",
]

_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(?P<zone>Z|[+-]\d{2}:\d{2})?"
)
_PATIENT = re.compile(r"Patient/[A-Za-z0-9\-.]{1,64}")


class QuestionnaireConfigError(CatalogueError):
    """A questionnaire, its rules or the code system is invalid; the message names the file."""


class QuestionnaireError(ValueError):
    """A QuestionnaireResponse is refused; `code` says why (one `ErrorCode` per failure)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Option:
    code: str
    display: str
    score: Decimal


@dataclass(frozen=True, slots=True)
class Question:
    link_id: str
    text: str
    type: Literal["choice", "string"]
    required: bool
    options: dict[str, Option]  # answer code -> option (choice items only)


@dataclass(frozen=True, slots=True)
class QuestionnaireRules:
    questionnaire: str
    schedule: Schedule
    colours: dict[str, dict[str, Band]]  # linkId -> answer code -> colour, complete
    texts: dict[Band, Texts]
    total: CutPoints | None = None  # yellow_high / red_high on the total score


@dataclass(frozen=True, slots=True)
class SymptomQuestionnaire:
    key: str  # the file name: symptoms-copd
    url: str
    version: str
    title: str
    questions: dict[str, Question]  # in the Questionnaire's order
    rules: QuestionnaireRules

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}"


@dataclass(frozen=True, slots=True)
class Answer:
    link_id: str
    question: str
    code: str | None = None  # choice: the answer code
    display: str | None = None
    score: Decimal = Decimal(0)
    text: str | None = None  # string: the free text


@dataclass(frozen=True, slots=True)
class Answers:
    """A checked reply, its answers in the Questionnaire's order."""

    questionnaire: str
    version: str
    status: str
    authored: datetime  # with its offset as sent
    patient: str | None  # `Patient/<id>` as sent
    answers: tuple[Answer, ...]

    def get(self, link_id: str) -> Answer | None:
        return next((a for a in self.answers if a.link_id == link_id), None)


@dataclass(frozen=True, slots=True)
class Finding:
    """What drove the colour: an answer (`link_id`) or the total score (`link_id` None)."""

    link_id: str | None
    code: str | None
    colour: Band  # the answer's own colour, or the total's band
    score: Decimal
    text: str


@dataclass(frozen=True, slots=True)
class QuestionnaireJudgement:
    questionnaire: str
    version: str
    colour: Band
    total: Decimal
    total_colour: Band
    findings: tuple[Finding, ...]  # empty when green
    texts: Texts


def load_questionnaires(config_dir: Path) -> dict[str, SymptomQuestionnaire]:
    """Every questionnaire under `config/questionnaires/` with its rules, checked together."""
    folder = config_dir / QUESTIONNAIRES_DIR
    codes = _code_systems(folder / CODE_SYSTEMS_DIR)
    resources = {p.stem: p for p in folder.glob("*.json") if not p.name.endswith(".schema.json")}
    rule_files = {p.name.removesuffix(RULES_SUFFIX): p for p in folder.glob(f"*{RULES_SUFFIX}")}
    if not resources:
        raise QuestionnaireConfigError(f"{folder}: no questionnaires")
    found: dict[str, SymptomQuestionnaire] = {}
    for key in sorted(resources.keys() | rule_files.keys()):
        if key not in rule_files:
            raise QuestionnaireConfigError(f"{resources[key]}: no {key}{RULES_SUFFIX} beside it")
        if key not in resources:
            raise QuestionnaireConfigError(f"{rule_files[key]}: no Questionnaire {key}.json")
        found[key] = _questionnaire(key, resources[key], rule_files[key], folder, codes)
    urls = [q.url for q in found.values()]
    if len(set(urls)) != len(urls):
        raise QuestionnaireConfigError(f"{folder}: two questionnaires share a url")
    return found


def parse_response(resource: object, questionnaires: Mapping[str, SymptomQuestionnaire]) -> Answers:
    """The checked answers of an R4 QuestionnaireResponse (JSON); QuestionnaireError if not."""
    if not isinstance(resource, dict):
        raise QuestionnaireError("malformed", "a QuestionnaireResponse must be a JSON object")
    if resource.get("resourceType") != "QuestionnaireResponse":
        raise QuestionnaireError(
            "not-a-questionnaire-response",
            f"resourceType {resource.get('resourceType')!r} is not QuestionnaireResponse",
        )
    status = resource.get("status")
    if not isinstance(status, str) or status not in ACCEPTED_STATUS:
        raise QuestionnaireError(
            "not-completed", f"status {status!r}: only completed or amended replies are scored"
        )
    questionnaire = _find(resource.get("questionnaire"), questionnaires)
    authored = _authored(resource.get("authored"))
    patient = _patient(resource["subject"]) if "subject" in resource else None
    given = _items(resource.get("item", []), questionnaire)
    missing = [
        q.link_id for q in questionnaire.questions.values() if q.required and q.link_id not in given
    ]
    if missing:
        raise QuestionnaireError("missing-required", f"not answered: {', '.join(missing)}")
    ordered = tuple(given[k] for k in questionnaire.questions if k in given)
    return Answers(questionnaire.key, questionnaire.version, status, authored, patient, ordered)


def score(answers: Answers, rules: QuestionnaireRules) -> QuestionnaireJudgement:
    """The reply's colour: the worst of its answers' colours and the total score's band."""
    if answers.questionnaire != rules.questionnaire:
        raise ValueError(f"rules of {rules.questionnaire} cannot score {answers.questionnaire}")
    scored = [(a, rules.colours[a.link_id][a.code]) for a in answers.answers if a.code is not None]
    total = sum((a.score for a, _ in scored), Decimal(0))
    total_colour = rules.total.band(total) if rules.total is not None else Band.GREEN
    colour = max([total_colour, *(c for _, c in scored)])
    findings: list[Finding] = []
    if colour > Band.GREEN:
        by_total = total_colour == colour
        findings = [
            Finding(a.link_id, a.code, own, a.score, f"{a.question} {a.display}")
            for a, own in scored
            if own == colour or (by_total and a.score > 0)
        ]
        if by_total and rules.total is not None:
            text = f"Samlet poengsum {total} ({_cut_points_text(rules.total)})"
            findings.append(Finding(None, None, total_colour, total, text))
    return QuestionnaireJudgement(
        answers.questionnaire,
        answers.version,
        colour,
        total,
        total_colour,
        tuple(findings),
        rules.texts[colour],
    )


def _cut_points_text(points: CutPoints) -> str:
    parts = [("gul", points.yellow_high), ("rød", points.red_high)]
    return ", ".join(f"{name} fra {value}" for name, value in parts if value is not None)


# --- reading a reply ---------------------------------------------------------------------


def _find(
    canonical: object, questionnaires: Mapping[str, SymptomQuestionnaire]
) -> SymptomQuestionnaire:
    if not isinstance(canonical, str) or not canonical:
        raise QuestionnaireError("unknown-questionnaire", "questionnaire must be a canonical url")
    url, _, version = canonical.partition("|")
    known = next((q for q in questionnaires.values() if q.url == url), None)
    if known is None:
        raise QuestionnaireError("unknown-questionnaire", f"no questionnaire {url!r}")
    if version and version != known.version:
        raise QuestionnaireError(
            "wrong-version", f"{known.key} is version {known.version}, not {version!r}"
        )
    return known


def _authored(raw: object) -> datetime:
    match = _DATETIME.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise QuestionnaireError("bad-authored", f"authored {raw!r} is not a date and time")
    if match["zone"] is None:
        raise QuestionnaireError("authored-without-offset", f"authored {raw!r} has no time zone")
    try:
        return datetime.fromisoformat(match.string)
    except ValueError as exc:
        raise QuestionnaireError("bad-authored", f"authored {raw!r}: {exc}") from exc


def _patient(raw: object) -> str:
    reference = raw.get("reference") if isinstance(raw, dict) else None
    if not isinstance(reference, str) or not _PATIENT.fullmatch(reference):
        raise QuestionnaireError("bad-subject", f"subject {raw!r} must reference Patient/<id>")
    return reference


def _items(raw: object, questionnaire: SymptomQuestionnaire) -> dict[str, Answer]:
    if not isinstance(raw, list):
        raise QuestionnaireError("malformed", "item must be a list")
    given: dict[str, Answer] = {}
    for index, item in enumerate(raw):
        where = f"item[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("linkId"), str):
            raise QuestionnaireError("malformed", f"{where} must be an object with a linkId")
        if "item" in item:
            raise QuestionnaireError("malformed", f"{where}: no nested items in this questionnaire")
        link_id = item["linkId"]
        question = questionnaire.questions.get(link_id)
        if question is None:
            raise QuestionnaireError(
                "unknown-link-id", f"{where}: {questionnaire.key} has no {link_id!r}"
            )
        if link_id in given:
            raise QuestionnaireError("duplicate-item", f"{where}: {link_id} is answered twice")
        answers = item.get("answer", [])
        if not isinstance(answers, list):
            raise QuestionnaireError("malformed", f"{where}.answer must be a list")
        if len(answers) > 1:
            raise QuestionnaireError("too-many-answers", f"{where}: {link_id} takes one answer")
        if answers:
            given[link_id] = _answer(answers[0], question, f"{where}.answer[0]")
    return given


def _answer(raw: object, question: Question, where: str) -> Answer:
    values = (
        {k: v for k, v in raw.items() if k.startswith("value")} if isinstance(raw, dict) else {}
    )
    if len(values) != 1:
        raise QuestionnaireError("malformed", f"{where} must be an object with one value[x]")
    [(kind, value)] = values.items()
    if question.type == "string":
        if kind != "valueString" or not isinstance(value, str) or not value.strip():
            raise QuestionnaireError("wrong-answer-type", f"{where}: {question.link_id} takes text")
        return Answer(question.link_id, question.text, text=value)
    if kind != "valueCoding" or not isinstance(value, dict):
        raise QuestionnaireError("wrong-answer-type", f"{where}: {question.link_id} takes a Coding")
    system, code = value.get("system"), value.get("code")
    if not isinstance(system, str) or not isinstance(code, str):
        raise QuestionnaireError("wrong-answer-type", f"{where}: a Coding needs system and code")
    option = question.options.get(code) if system == ANSWER_SYSTEM else None
    if option is None:
        raise QuestionnaireError(
            "unknown-answer-code", f"{where}: {system}|{code} is no answer to {question.link_id}"
        )
    return Answer(question.link_id, question.text, code, option.display, option.score)


# --- loading -----------------------------------------------------------------------------


def _code_systems(folder: Path) -> dict[str, dict[str, str]]:
    systems: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["resourceType"] != "CodeSystem":
                raise ValueError("resourceType must be CodeSystem")
            systems[data["url"]] = {c["code"]: c["display"] for c in data["concept"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise QuestionnaireConfigError(f"{path}: not a usable CodeSystem: {exc!r}") from exc
    return systems


def _questionnaire(
    key: str, path: Path, rules_path: Path, folder: Path, codes: dict[str, dict[str, str]]
) -> SymptomQuestionnaire:
    data = load_yaml(path, folder / QUESTIONNAIRE_SCHEMA)  # JSON is YAML
    if data["id"] != key:
        raise QuestionnaireConfigError(f"{path}: id {data['id']!r} must equal the file name")
    questions: dict[str, Question] = {}
    for raw in data["item"]:
        question = _question(raw, f"{path}: item {raw['linkId']}", codes)
        if question.link_id in questions:
            raise QuestionnaireConfigError(f"{path}: linkId {question.link_id} is used twice")
        questions[question.link_id] = question
    rules = _rules(key, rules_path, folder, questions)
    return SymptomQuestionnaire(key, data["url"], data["version"], data["title"], questions, rules)


def _question(raw: dict[str, Any], where: str, codes: dict[str, dict[str, str]]) -> Question:
    options: dict[str, Option] = {}
    for option in raw.get("answerOption", ()):
        coding = option["valueCoding"]
        system, code = coding["system"], coding["code"]
        if system != ANSWER_SYSTEM or code not in codes.get(system, {}):
            raise QuestionnaireConfigError(f"{where}: {system}|{code} is not in {ANSWER_SYSTEM}")
        if coding["display"] != codes[system][code]:
            raise QuestionnaireConfigError(f"{where}: {code} must display {codes[system][code]!r}")
        if code in options:
            raise QuestionnaireConfigError(f"{where}: answer {code} is offered twice")
        [ordinal] = [e for e in option["extension"] if e["url"] == ORDINAL_VALUE]
        options[code] = Option(code, coding["display"], number(ordinal["valueDecimal"]))
    return Question(raw["linkId"], raw["text"], raw["type"], bool(raw.get("required")), options)


def _rules(
    key: str, path: Path, folder: Path, questions: dict[str, Question]
) -> QuestionnaireRules:
    data = load_yaml(path, folder / RULES_SCHEMA)
    colours: dict[str, dict[str, Band]] = {}
    for link_id, by_code in data["answers"].items():
        question = questions.get(link_id)
        if question is None or question.type != "choice":
            raise QuestionnaireConfigError(f"{path}: answers.{link_id}: no choice item {link_id}")
        unknown = sorted(set(by_code) - set(question.options))
        if unknown:
            raise QuestionnaireConfigError(f"{path}: answers.{link_id}: no answer codes {unknown}")
        colours[link_id] = {code: Band[colour.upper()] for code, colour in by_code.items()}
    for question in questions.values():
        missing = sorted(set(question.options) - set(colours.get(question.link_id, {})))
        if missing:
            raise QuestionnaireConfigError(
                f"{path}: answers.{question.link_id}: no colour for {missing}"
            )
    total = _total(data.get("total_score"), path, questions)
    texts = {Band[c.upper()]: Texts(t["staff"], t["patient"]) for c, t in data["colours"].items()}
    return QuestionnaireRules(key, _schedule(data["schedule"]), colours, texts, total)


def _total(
    raw: dict[str, Any] | None, path: Path, questions: dict[str, Question]
) -> CutPoints | None:
    if raw is None:
        return None
    points = CutPoints(**{k: number(v) for k, v in raw.items()})
    highest = sum(
        (max(o.score for o in q.options.values()) for q in questions.values() if q.options),
        Decimal(0),
    )
    if not points.ordered():
        raise QuestionnaireConfigError(f"{path}: total_score: yellow_high must be below red_high")
    for name, value in raw.items():
        if number(value) > highest:
            raise QuestionnaireConfigError(
                f"{path}: total_score.{name} {value} is above the highest total {highest}"
            )
    return points


def _schedule(raw: dict[str, Any]) -> Schedule:
    hours, minutes = (int(part) for part in raw["before"].split(":"))
    days = tuple(d for d in WEEKDAYS if d in raw.get("days", WEEKDAYS))
    return Schedule(before=time(hours, minutes), days=days)
