"""Symptom questionnaires: the config set, R4 validity, scoring at every boundary, refused replies."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fhirclient.models.codesystem import CodeSystem
from fhirclient.models.fhirabstractbase import FHIRValidationError
from fhirclient.models.questionnaire import Questionnaire
from fhirclient.models.questionnaireresponse import QuestionnaireResponse

from dho.catalogue import CatalogueError
from dho.rules.questionnaires import (
    ANSWER_SYSTEM,
    ORDINAL_VALUE,
    QUESTIONNAIRES_DIR,
    QuestionnaireConfigError,
    QuestionnaireError,
    load_questionnaires,
    parse_response,
    score,
)
from dho.rules.thresholds import Band

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
FOLDER = CONFIG / QUESTIONNAIRES_DIR
QUESTIONNAIRES = load_questionnaires(CONFIG)
RESOURCES = sorted(p for p in FOLDER.glob("*.json") if not p.name.endswith(".schema.json"))
EXAMPLES = sorted((FOLDER / "examples").glob("*.json"))
GREEN_COPD = {"breathlessness": "as-usual", "sputum": "no", "fever": "no", "wellbeing": "as-usual"}
GREEN_HF = {"breathlessness": "as-usual", "swelling": "as-usual", "pillows": "no"} | {
    "wellbeing": "as-usual"
}


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _reply(key: str, answers: dict[str, str], **top: Any) -> dict[str, Any]:
    questionnaire = QUESTIONNAIRES[key]
    items = [
        {"linkId": link, "answer": [{"valueCoding": {"system": ANSWER_SYSTEM, "code": code}}]}
        for link, code in answers.items()
    ]
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire.canonical,
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-11-24T08:30:00+01:00",
        "item": items,
    } | top


# --- the config set ----------------------------------------------------------------------


def test_the_whole_set_loads_with_copd_and_heart_failure() -> None:
    assert set(QUESTIONNAIRES) == {"symptoms-copd", "symptoms-heart-failure"}
    assert [p.stem for p in RESOURCES] == sorted(QUESTIONNAIRES)
    copd = QUESTIONNAIRES["symptoms-copd"]
    assert list(copd.questions) == ["breathlessness", "sputum", "fever", "wellbeing", "comment"]
    assert (
        copd.rules.schedule.before.isoformat() == "12:00:00" and len(copd.rules.schedule.days) == 7
    )
    hf = QUESTIONNAIRES["symptoms-heart-failure"]
    assert {"breathlessness", "swelling", "pillows", "wellbeing"} <= set(hf.questions)
    assert hf.rules.schedule.days == ("mon", "tue", "wed", "thu", "fri")


@pytest.mark.parametrize("key", sorted(QUESTIONNAIRES))
def test_every_answer_has_a_colour_and_every_colour_its_texts(key: str) -> None:
    questionnaire = QUESTIONNAIRES[key]
    for question in questionnaire.questions.values():
        if question.type == "choice":
            assert set(questionnaire.rules.colours[question.link_id]) == set(question.options)
            assert question.required
        else:
            assert question.link_id not in questionnaire.rules.colours and not question.required
    assert set(questionnaire.rules.texts) == {Band.GREEN, Band.YELLOW, Band.RED}
    assert "116 117" in questionnaire.rules.texts[Band.RED].patient
    assert "113" in questionnaire.rules.texts[Band.RED].patient


@pytest.mark.parametrize("path", RESOURCES, ids=lambda p: p.name)
def test_every_questionnaire_is_valid_r4(path: Path) -> None:
    data = _read(path)
    resource = Questionnaire(data, strict=True)
    assert resource.status == "active" and resource.url and resource.version and resource.name
    for item in data["item"]:
        for option in item.get("answerOption", ()):
            [ordinal] = [e for e in option["extension"] if e["url"] == ORDINAL_VALUE]
            assert isinstance(ordinal["valueDecimal"], int | float)
            assert option["valueCoding"]["system"] == ANSWER_SYSTEM


def test_the_answer_code_system_is_valid_r4_and_defines_every_code_used() -> None:
    data = _read(FOLDER / "codesystems" / "symptom-answer.json")
    CodeSystem(data, strict=True)
    assert data["url"] == ANSWER_SYSTEM and data["count"] == len(data["concept"])
    defined = {c["code"] for c in data["concept"]}
    used = {
        code
        for q in QUESTIONNAIRES.values()
        for item in q.questions.values()
        for code in item.options
    }
    assert used == defined


def test_fhirclient_would_catch_a_broken_questionnaire() -> None:
    broken = _read(RESOURCES[0])
    broken["item"][0]["required"] = "yes"
    with pytest.raises(FHIRValidationError):
        Questionnaire(broken, strict=True)


# --- scoring at every boundary -----------------------------------------------------------

COPD_TABLE = [
    # (changed answers, colour, total, total colour, linkIds in the findings); cut-points 3 / 7
    ({}, Band.GREEN, 0, Band.GREEN, []),
    ({"wellbeing": "worse"}, Band.GREEN, 1, Band.GREEN, []),
    ({"sputum": "more-sputum"}, Band.GREEN, 2, Band.GREEN, []),
    (
        {"sputum": "more-sputum", "wellbeing": "worse"},
        Band.YELLOW,
        3,
        Band.YELLOW,
        ["sputum", "wellbeing", None],
    ),
    ({"breathlessness": "worse"}, Band.YELLOW, 2, Band.GREEN, ["breathlessness"]),
    ({"fever": "yes"}, Band.YELLOW, 2, Band.GREEN, ["fever"]),
    ({"wellbeing": "much-worse"}, Band.YELLOW, 3, Band.YELLOW, ["wellbeing", None]),
    (
        {"breathlessness": "worse", "sputum": "discoloured-sputum", "wellbeing": "worse"},
        Band.YELLOW,
        6,
        Band.YELLOW,
        ["breathlessness", "sputum", "wellbeing", None],
    ),
    (
        {"breathlessness": "worse", "sputum": "discoloured-sputum", "fever": "yes"},
        Band.RED,
        7,
        Band.RED,
        ["breathlessness", "sputum", "fever", None],
    ),
    ({"breathlessness": "much-worse"}, Band.RED, 4, Band.YELLOW, ["breathlessness"]),
    ({"breathlessness": "better", "wellbeing": "better"}, Band.GREEN, 0, Band.GREEN, []),
]
HF_TABLE = [
    ({}, Band.GREEN, 0, Band.GREEN, []),
    ({"wellbeing": "worse"}, Band.GREEN, 1, Band.GREEN, []),
    ({"pillows": "yes"}, Band.YELLOW, 2, Band.GREEN, ["pillows"]),
    ({"swelling": "much-worse"}, Band.YELLOW, 3, Band.YELLOW, ["swelling", None]),
    (
        {"breathlessness": "worse", "swelling": "worse", "pillows": "yes"},
        Band.YELLOW,
        6,
        Band.YELLOW,
        ["breathlessness", "swelling", "pillows", None],
    ),
    (
        {"breathlessness": "worse", "swelling": "worse", "pillows": "yes", "wellbeing": "worse"},
        Band.RED,
        7,
        Band.RED,
        ["breathlessness", "swelling", "pillows", "wellbeing", None],
    ),
    ({"breathlessness": "much-worse"}, Band.RED, 4, Band.YELLOW, ["breathlessness"]),
]


@pytest.mark.parametrize(
    ("key", "changed", "colour", "total", "total_colour", "drivers"),
    [("symptoms-copd", *row) for row in COPD_TABLE]
    + [("symptoms-heart-failure", *row) for row in HF_TABLE],
)
def test_scoring_at_every_boundary(
    key: str,
    changed: dict[str, str],
    colour: Band,
    total: int,
    total_colour: Band,
    drivers: list[str | None],
) -> None:
    base = GREEN_COPD if key == "symptoms-copd" else GREEN_HF
    questionnaire = QUESTIONNAIRES[key]
    judged = score(parse_response(_reply(key, base | changed), QUESTIONNAIRES), questionnaire.rules)
    assert (judged.colour, judged.total, judged.total_colour) == (
        colour,
        Decimal(total),
        total_colour,
    )
    assert [f.link_id for f in judged.findings] == drivers
    assert judged.texts == questionnaire.rules.texts[colour]
    assert (judged.questionnaire, judged.version) == (key, questionnaire.version)


def test_a_finding_names_the_question_the_answer_and_the_total() -> None:
    reply = _reply("symptoms-copd", GREEN_COPD | {"sputum": "more-sputum", "wellbeing": "worse"})
    judged = score(parse_response(reply, QUESTIONNAIRES), QUESTIONNAIRES["symptoms-copd"].rules)
    sputum, wellbeing, total = judged.findings
    assert (sputum.code, sputum.colour, sputum.score) == ("more-sputum", Band.GREEN, Decimal(2))
    assert "oppspytt" in sputum.text and sputum.text.endswith("Mer hoste eller oppspytt enn vanlig")
    assert wellbeing.code == "worse"
    assert (total.colour, total.score) == (Band.YELLOW, Decimal(3))
    assert total.text == "Samlet poengsum 3 (gul fra 3, rød fra 7)"


def test_without_total_cut_points_only_the_answers_count() -> None:
    rules = replace(QUESTIONNAIRES["symptoms-copd"].rules, total=None)
    changed = {"breathlessness": "worse", "sputum": "discoloured-sputum", "fever": "yes"}
    judged = score(
        parse_response(_reply("symptoms-copd", GREEN_COPD | changed), QUESTIONNAIRES), rules
    )
    assert (judged.colour, judged.total_colour, judged.total) == (
        Band.YELLOW,
        Band.GREEN,
        Decimal(7),
    )
    assert [f.link_id for f in judged.findings] == ["breathlessness", "sputum", "fever"]


def test_rules_of_another_questionnaire_are_refused() -> None:
    answers = parse_response(_reply("symptoms-copd", GREEN_COPD), QUESTIONNAIRES)
    with pytest.raises(ValueError, match="cannot score"):
        score(answers, QUESTIONNAIRES["symptoms-heart-failure"].rules)


# --- the examples -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "colour", "total", "drivers"),
    [
        (
            FOLDER / "examples" / "symptoms-copd.response.json",
            Band.YELLOW,
            6,
            ["breathlessness", "sputum", "wellbeing", None],
        ),
        (
            FOLDER / "examples" / "symptoms-heart-failure.response.json",
            Band.RED,
            7,
            ["breathlessness", "swelling", "pillows", "wellbeing", None],
        ),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else None,
)
def test_each_example_is_valid_r4_and_scores_as_expected(
    path: Path, colour: Band, total: int, drivers: list[str | None]
) -> None:
    data = _read(path)
    QuestionnaireResponse(data, strict=True)
    answers = parse_response(data, QUESTIONNAIRES)
    judged = score(answers, QUESTIONNAIRES[answers.questionnaire].rules)
    assert (judged.colour, judged.total) == (colour, Decimal(total))
    assert [f.link_id for f in judged.findings] == drivers
    assert answers.patient is not None and answers.patient.startswith("Patient/")
    assert answers.authored.utcoffset() == timedelta(hours=1)


def test_there_is_an_example_per_questionnaire_and_free_text_is_kept() -> None:
    assert sorted(p.name.removesuffix(".response.json") for p in EXAMPLES) == sorted(QUESTIONNAIRES)
    answers = parse_response(
        _read(FOLDER / "examples" / "symptoms-heart-failure.response.json"), QUESTIONNAIRES
    )
    comment = answers.get("comment")
    assert comment is not None and comment.text and "hovne" in comment.text and comment.code is None


# --- accepted variants ------------------------------------------------------------------


def test_accepted_variants() -> None:
    bare = _reply("symptoms-copd", GREEN_COPD, status="amended", authored="2026-11-24T07:30:00Z")
    del bare["subject"]
    bare["questionnaire"] = QUESTIONNAIRES["symptoms-copd"].url  # no |version: the current one
    answers = parse_response(bare, QUESTIONNAIRES)
    assert (answers.status, answers.patient, answers.authored.utcoffset()) == (
        "amended",
        None,
        timedelta(0),
    )
    assert [a.link_id for a in answers.answers] == [
        "breathlessness",
        "sputum",
        "fever",
        "wellbeing",
    ]
    reordered = _reply("symptoms-copd", dict(reversed(list(GREEN_COPD.items()))))
    assert [a.link_id for a in parse_response(reordered, QUESTIONNAIRES).answers] == list(
        GREEN_COPD
    )


# --- refused replies --------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], object]


def _set(**fields: Any) -> Mutation:
    return lambda r: r | fields


def _drop(field: str) -> Mutation:
    return lambda r: {k: v for k, v in r.items() if k != field}


def _item(index: int, **fields: Any) -> Mutation:
    def mutate(r: dict[str, Any]) -> dict[str, Any]:
        r["item"][index] = r["item"][index] | fields
        return r

    return mutate


def _answer(index: int, answer: object) -> Mutation:
    return _item(index, answer=[answer])


def _coding(**coding: Any) -> dict[str, Any]:
    return {"valueCoding": {"system": ANSWER_SYSTEM} | coding}


def _append(item: object) -> Mutation:
    return lambda r: r | {"item": [*r["item"], item]}


NASTY: list[tuple[str, Mutation, str]] = [
    ("a list", lambda r: [r], "malformed"),
    ("a string", lambda r: json.dumps(r), "malformed"),
    ("null", lambda r: None, "malformed"),
    ("an Observation", _set(resourceType="Observation"), "not-a-questionnaire-response"),
    ("no resourceType", _drop("resourceType"), "not-a-questionnaire-response"),
    ("in progress", _set(status="in-progress"), "not-completed"),
    ("entered in error", _set(status="entered-in-error"), "not-completed"),
    ("no status", _drop("status"), "not-completed"),
    ("status a number", _set(status=1), "not-completed"),
    (
        "unknown questionnaire",
        _set(questionnaire="https://dho.example.no/fhir/Questionnaire/nope|1.0.0"),
        "unknown-questionnaire",
    ),
    ("no questionnaire", _drop("questionnaire"), "unknown-questionnaire"),
    ("questionnaire a number", _set(questionnaire=42), "unknown-questionnaire"),
    (
        "wrong version",
        _set(questionnaire="https://dho.example.no/fhir/Questionnaire/symptoms-copd|2.0.0"),
        "wrong-version",
    ),
    ("authored without offset", _set(authored="2026-11-24T08:30:00"), "authored-without-offset"),
    ("authored a date", _set(authored="2026-11-24"), "bad-authored"),
    ("no authored", _drop("authored"), "bad-authored"),
    ("authored a number", _set(authored=20261124), "bad-authored"),
    ("authored 30 February", _set(authored="2026-02-30T08:00:00+01:00"), "bad-authored"),
    ("authored offset +25:00", _set(authored="2026-11-24T08:00:00+25:00"), "bad-authored"),
    ("subject a Group", _set(subject={"reference": "Group/1"}), "bad-subject"),
    ("subject a string", _set(subject="Patient/p1"), "bad-subject"),
    ("subject without reference", _set(subject={"display": "Kari"}), "bad-subject"),
    ("unknown linkId", _item(0, linkId="pain"), "unknown-link-id"),
    ("another questionnaire's linkId", _item(1, linkId="swelling"), "unknown-link-id"),
    ("duplicate item", lambda r: r | {"item": [*r["item"], r["item"][0]]}, "duplicate-item"),
    (
        "two answers",
        _item(0, answer=[_coding(code="worse"), _coding(code="as-usual")]),
        "too-many-answers",
    ),
    ("valueString for a choice", _answer(0, {"valueString": "verre"}), "wrong-answer-type"),
    ("valueBoolean for a choice", _answer(2, {"valueBoolean": True}), "wrong-answer-type"),
    ("valueCoding a string", _answer(0, {"valueCoding": "worse"}), "wrong-answer-type"),
    (
        "valueCoding without system",
        _answer(0, {"valueCoding": {"code": "worse"}}),
        "wrong-answer-type",
    ),
    ("valueCoding code a number", _answer(0, _coding(code=2)), "wrong-answer-type"),
    (
        "coding for the free text",
        _append({"linkId": "comment", "answer": [_coding(code="yes")]}),
        "wrong-answer-type",
    ),
    (
        "free text a number",
        _append({"linkId": "comment", "answer": [{"valueString": 5}]}),
        "wrong-answer-type",
    ),
    (
        "free text blank",
        _append({"linkId": "comment", "answer": [{"valueString": "  "}]}),
        "wrong-answer-type",
    ),
    ("unknown code", _answer(0, _coding(code="terrible")), "unknown-answer-code"),
    ("another item's code", _answer(0, _coding(code="discoloured-sputum")), "unknown-answer-code"),
    (
        "another code system",
        _answer(0, {"valueCoding": {"system": "http://snomed.info/sct", "code": "worse"}}),
        "unknown-answer-code",
    ),
    (
        "missing required item",
        lambda r: r | {"item": r["item"][:2] + r["item"][3:]},
        "missing-required",
    ),
    ("required item without answer", _item(2, answer=[]), "missing-required"),
    ("no items", _drop("item"), "missing-required"),
    ("item an object", _set(item={"linkId": "fever"}), "malformed"),
    ("item entry a string", _set(item=["fever"]), "malformed"),
    ("linkId a number", _item(0, linkId=1), "malformed"),
    ("answer an object", _item(0, answer=_coding(code="worse")), "malformed"),
    ("answer entry a string", _answer(0, "worse"), "malformed"),
    (
        "answer with two values",
        _answer(0, _coding(code="worse") | {"valueString": "x"}),
        "malformed",
    ),
    ("answer without a value", _answer(0, {}), "malformed"),
    ("nested items", _item(0, item=[{"linkId": "fever"}]), "malformed"),
]


@pytest.mark.parametrize(
    ("mutate", "code"), [row[1:] for row in NASTY], ids=[row[0] for row in NASTY]
)
def test_a_nasty_reply_is_refused_with_its_code(mutate: Mutation, code: str) -> None:
    good = _reply("symptoms-copd", GREEN_COPD)
    parse_response(copy.deepcopy(good), QUESTIONNAIRES)  # the unmutated reply is fine
    with pytest.raises(QuestionnaireError) as caught:
        parse_response(mutate(copy.deepcopy(good)), QUESTIONNAIRES)
    assert caught.value.code == code
    assert caught.value.message and str(caught.value).startswith(f"{code}: ")


# --- a broken config is refused, naming the file -----------------------------------------


def _yaml_edit(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    def apply(folder: Path) -> Path:
        path = folder / name
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        edit(data)
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    return apply


def _json_edit(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    def apply(folder: Path) -> Path:
        path = folder / name
        data = _read(path)
        edit(data)
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return path

    return apply


def _remove(name: str, named: str) -> Callable[[Path], Path]:
    def apply(folder: Path) -> Path:
        (folder / name).unlink()
        return folder / named

    return apply


def _first_option(data: dict[str, Any]) -> dict[str, Any]:
    option: dict[str, Any] = data["item"][0]["answerOption"][0]
    return option


BROKEN: list[tuple[str, Callable[[Path], Path], str]] = [
    (
        "rule for an unknown linkId",
        _yaml_edit("symptoms-copd.rules.yaml", lambda d: d["answers"].update(pain={"yes": "red"})),
        "no choice item pain",
    ),
    (
        "rule for an unknown answer code",
        _yaml_edit(
            "symptoms-copd.rules.yaml", lambda d: d["answers"]["fever"].update(maybe="yellow")
        ),
        "no answer codes ['maybe']",
    ),
    (
        "rule for the free-text item",
        _yaml_edit(
            "symptoms-copd.rules.yaml", lambda d: d["answers"].update(comment={"yes": "red"})
        ),
        "no choice item comment",
    ),
    (
        "an answer without a colour",
        _yaml_edit("symptoms-copd.rules.yaml", lambda d: d["answers"]["fever"].pop("yes")),
        "no colour for ['yes']",
    ),
    (
        "total above the highest score",
        _yaml_edit("symptoms-copd.rules.yaml", lambda d: d["total_score"].update(red_high=13)),
        "above the highest total 12",
    ),
    (
        "total cut-points out of order",
        _yaml_edit("symptoms-copd.rules.yaml", lambda d: d["total_score"].update(yellow_high=8)),
        "yellow_high must be below red_high",
    ),
    (
        "a colour that is no colour",
        _yaml_edit(
            "symptoms-copd.rules.yaml", lambda d: d["answers"]["fever"].update(yes="purple")
        ),
        "$.answers.fever.yes: 'purple'",
    ),
    (
        "no schedule",
        _yaml_edit("symptoms-copd.rules.yaml", lambda d: d.pop("schedule")),
        "'schedule' is a required property",
    ),
    (
        "code not in the code system",
        _json_edit(
            "symptoms-copd.json", lambda d: _first_option(d)["valueCoding"].update(code="fine")
        ),
        "symptom-answer|fine is not in",
    ),
    (
        "display not the code system's",
        _json_edit(
            "symptoms-copd.json", lambda d: _first_option(d)["valueCoding"].update(display="Bra")
        ),
        "better must display 'Bedre enn vanlig'",
    ),
    (
        "an option without its score",
        _json_edit("symptoms-copd.json", lambda d: _first_option(d).pop("extension")),
        "'extension' is a required property",
    ),
    (
        "id not the file name",
        _json_edit("symptoms-copd.json", lambda d: d.update(id="copd")),
        "id 'copd' must equal the file name",
    ),
    (
        "a draft questionnaire",
        _json_edit("symptoms-copd.json", lambda d: d.update(status="draft")),
        "$.status: 'active' was expected",
    ),
    (
        "a duplicate linkId",
        _json_edit("symptoms-copd.json", lambda d: d["item"].append(d["item"][0])),
        "linkId breathlessness is used twice",
    ),
    (
        "an answer offered twice",
        _json_edit(
            "symptoms-copd.json", lambda d: d["item"][0]["answerOption"].append(_first_option(d))
        ),
        "answer better is offered twice",
    ),
    (
        "a group item",
        _json_edit("symptoms-copd.json", lambda d: d["item"][0].update(item=[{"linkId": "x"}])),
        "$.item[0]: is not allowed",
    ),
    (
        "no rules beside the questionnaire",
        _remove("symptoms-copd.rules.yaml", "symptoms-copd.json"),
        "no symptoms-copd.rules.yaml beside it",
    ),
    (
        "rules without a questionnaire",
        _remove("symptoms-copd.json", "symptoms-copd.rules.yaml"),
        "no Questionnaire symptoms-copd.json",
    ),
]


@pytest.mark.parametrize(
    ("breaks", "says"), [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN]
)
def test_a_broken_config_is_refused_naming_the_file(
    tmp_path: Path, breaks: Callable[[Path], Path], says: str
) -> None:
    folder = tmp_path / QUESTIONNAIRES_DIR
    shutil.copytree(FOLDER, folder)
    assert load_questionnaires(tmp_path)  # the copy loads before it is broken
    named = breaks(folder)
    with pytest.raises(CatalogueError) as caught:
        load_questionnaires(tmp_path)
    assert str(named) in str(caught.value) and says in str(caught.value)


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / QUESTIONNAIRES_DIR).mkdir()
    with pytest.raises(QuestionnaireConfigError, match="no questionnaires"):
        load_questionnaires(tmp_path)
