"""The symptom questionnaires under config/symptoms/: every Questionnaire valid R4, its
rules consistent with it, the answer codes in one CodeSystem; broken files are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fhirclient.models.codesystem import CodeSystem  # type: ignore[import-untyped]
from fhirclient.models.questionnaire import Questionnaire  # type: ignore[import-untyped]

from dho.catalogue import CatalogueError
from dho.questionnaires.catalogue import ANSWER_SYSTEM, FOLDER, load_questionnaires
from dho.questionnaires.responses import judge_answers, parse_response
from dho.rules.thresholds import Band

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
FILES = sorted(p for p in (CONFIG / FOLDER).glob("*.json") if p.name != "rules.schema.json")
CODES = json.loads((CONFIG / FOLDER / "codesystems" / "symptom-answer.json").read_text())


def test_the_set_loads_and_covers_copd_and_heart_failure() -> None:
    catalogue = load_questionnaires(CONFIG)
    assert {q.id for q in catalogue.by_url.values()} == {p.stem for p in FILES}
    assert {"copd-symptoms", "heart-failure-symptoms"} <= {p.stem for p in FILES}
    for definition in catalogue.by_url.values():
        assert set(definition.texts) == {Band.GREEN, Band.YELLOW, Band.RED}
        assert "116 117" in definition.texts[Band.RED].patient
        assert definition.schedule is not None
        assert "feeling" in definition.items  # "how do you feel today"
        assert any(Band.RED in item.colours.values() for item in definition.items.values())


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_questionnaire_is_valid_r4_with_codes_from_the_code_system(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    Questionnaire(data, strict=True)
    concepts = {c["code"]: c["display"] for c in CODES["concept"]}
    for item in data["item"]:
        assert item["text"] and item["required"] is True
        for option in item["answerOption"]:
            coding = option["valueCoding"]
            assert coding["system"] == ANSWER_SYSTEM
            assert concepts.get(coding["code"]) == coding["display"], coding


def test_the_code_system_is_valid_r4_and_names_each_code_once() -> None:
    CodeSystem(CODES, strict=True)
    codes = [c["code"] for c in CODES["concept"]]
    assert len(codes) == len(set(codes)) == CODES["count"]
    assert CODES["url"] == ANSWER_SYSTEM


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["answers"].update({"mood": {"bad": "yellow"}}), "unknown items"),
        (lambda r: r["answers"]["feeling"].update({"awful": "red"}), "does not offer"),
        (lambda r: r.update({"questionnaire": "other"}), "must name"),
        (lambda r: r["answers"]["feeling"].update({"bad": "purple"}), "purple"),
        (lambda r: r.pop("colours"), "colours"),
    ],
)
def test_broken_rules_are_refused_naming_the_file(
    tmp_path: Path, edit: object, message: str
) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG / FOLDER, config / FOLDER)
    path = config / FOLDER / "copd-symptoms.rules.yaml"
    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(rules)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(rules, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogueError, match=message) as raised:
        load_questionnaires(config)
    assert "copd-symptoms" in str(raised.value)


def test_a_questionnaire_without_rules_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG / FOLDER, config / FOLDER)
    (config / FOLDER / "heart-failure-symptoms.rules.yaml").unlink()
    with pytest.raises(CatalogueError, match="no rules file"):
        load_questionnaires(config)


COPD_USUAL = {
    "breathlessness": "usual",
    "cough": "no",
    "sputum": "unchanged",
    "fever": "no",
    "feeling": "as-usual",
}


@pytest.mark.parametrize(
    ("changes", "colour", "flagged"),
    [
        ({}, Band.GREEN, []),
        ({"cough": "yes"}, Band.YELLOW, ["cough"]),
        ({"cough": "yes", "fever": "yes"}, Band.YELLOW, ["cough", "fever"]),  # 2 < 3 yellow
        ({"cough": "yes", "fever": "yes", "sputum": "changed-colour"}, Band.RED, None),  # 3
        ({"breathlessness": "much-worse"}, Band.RED, ["breathlessness"]),
        ({"feeling": "bad"}, Band.YELLOW, ["feeling"]),
        ({"feeling": "very-bad"}, Band.RED, ["feeling"]),
        ({"sputum": "none", "feeling": "good"}, Band.GREEN, []),
    ],
)
def test_copd_replies_at_each_colour(
    changes: dict[str, str], colour: Band, flagged: list[str] | None
) -> None:
    catalogue = load_questionnaires(CONFIG)
    definition = catalogue.get("copd-symptoms")
    assert definition is not None
    resource = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": definition.url,
        "status": "completed",
        "subject": {"reference": "Patient/p-1"},
        "authored": "2026-12-01T09:00:00+01:00",
        "item": [
            {"linkId": k, "answer": [{"valueCoding": {"system": ANSWER_SYSTEM, "code": v}}]}
            for k, v in (COPD_USUAL | changes).items()
        ],
    }
    judged = judge_answers(parse_response(resource, catalogue))
    assert judged.colour == colour
    assert judged.texts == definition.texts[colour]
    if flagged is not None:
        assert sorted(judged.flagged) == flagged
