"""The questionnaires under `config/symptoms/`: each a FHIR R4 Questionnaire
(`<id>.json`) and the rules that judge its answers (`<id>.rules.yaml`), checked together."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dho.catalogue import CatalogueError, load_yaml
from dho.rules.plans import Schedule, Texts, parse_schedule
from dho.rules.thresholds import Band

FOLDER = "symptoms"
SCHEMA = "rules.schema.json"
ANSWER_SYSTEM = "https://dho.example.no/fhir/CodeSystem/symptom-answer"


class QuestionnaireCatalogueError(CatalogueError):
    """A questionnaire or its rules are invalid; the message names the file."""


@dataclass(frozen=True, slots=True)
class Item:
    link_id: str
    text: str
    required: bool
    options: tuple[str, ...]  # answer codes
    colours: dict[str, Band]  # answer code -> colour; unlisted answers are green


@dataclass(frozen=True, slots=True)
class QuestionnaireDef:
    id: str
    url: str
    version: str
    title: str
    items: dict[str, Item]
    texts: dict[Band, Texts]
    schedule: Schedule | None = None
    red_when_yellow: int | None = None


@dataclass(frozen=True, slots=True)
class QuestionnaireCatalogue:
    by_url: dict[str, QuestionnaireDef]

    def get(self, questionnaire_id: str) -> QuestionnaireDef | None:
        return next((q for q in self.by_url.values() if q.id == questionnaire_id), None)


def load_questionnaires(config_dir: Path) -> QuestionnaireCatalogue:
    folder = config_dir / FOLDER
    found: dict[str, QuestionnaireDef] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name == SCHEMA:
            continue
        rules_path = path.with_suffix(".rules.yaml")
        if not rules_path.is_file():
            raise QuestionnaireCatalogueError(f"{path}: no rules file {rules_path.name}")
        definition = _definition(path, _questionnaire(path), load_yaml(rules_path, folder / SCHEMA))
        if definition.url in found:
            raise QuestionnaireCatalogueError(f"{path}: url {definition.url} is used twice")
        found[definition.url] = definition
    return QuestionnaireCatalogue(found)


def _questionnaire(path: Path) -> dict[str, Any]:
    from fhir.resources.R4B.questionnaire import Questionnaire  # slow: only when loading

    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        Questionnaire.model_validate(data)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise QuestionnaireCatalogueError(f"{path}: not a valid FHIR Questionnaire: {exc}") from exc
    return data


def _definition(path: Path, data: dict[str, Any], rules: dict[str, Any]) -> QuestionnaireDef:
    if data.get("id") != path.stem or rules["questionnaire"] != path.stem:
        raise QuestionnaireCatalogueError(f"{path}: id and rules must name {path.stem!r}")
    for key in ("url", "version", "title"):
        if not data.get(key):
            raise QuestionnaireCatalogueError(f"{path}: needs {key}")
    items = {}
    for raw in data.get("item", ()):
        options = tuple(
            option["valueCoding"]["code"]
            for option in raw.get("answerOption", ())
            if option.get("valueCoding", {}).get("system") == ANSWER_SYSTEM
        )
        if raw.get("type") != "choice" or not options:
            raise QuestionnaireCatalogueError(
                f"{path}: item {raw.get('linkId')}: only choice items coded in {ANSWER_SYSTEM}"
            )
        link_id = raw["linkId"]
        colours = {
            code: Band[colour.upper()] for code, colour in rules["answers"].get(link_id, {}).items()
        }
        unknown = set(colours) - set(options)
        if unknown:
            raise QuestionnaireCatalogueError(
                f"{path}: rules name answers {sorted(unknown)} that item {link_id} does not offer"
            )
        items[link_id] = Item(link_id, raw["text"], bool(raw.get("required")), options, colours)
    unknown_items = set(rules["answers"]) - set(items)
    if unknown_items:
        raise QuestionnaireCatalogueError(
            f"{path}: rules name unknown items {sorted(unknown_items)}"
        )
    texts = {
        Band[colour.upper()]: Texts(t["staff"], t["patient"])
        for colour, t in rules["colours"].items()
    }
    return QuestionnaireDef(
        id=path.stem,
        url=data["url"],
        version=str(data["version"]),
        title=data["title"],
        items=items,
        texts=texts,
        schedule=parse_schedule(rules["schedule"]) if "schedule" in rules else None,
        red_when_yellow=rules.get("red_when_yellow"),
    )
