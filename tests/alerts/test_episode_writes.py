"""The episode book's rows written (SQLite: a statement per table; PostgreSQL: one statement
for all): an alert opened and raised in the same batch, evidence in order, deliveries of a
new alert, rule states inserted and updated, a change to an alert stored before."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dho import jsonutil
from dho.alerts.episode_book import (
    DeliveryTarget,
    EpisodeBook,
    Report,
    load_episode_book,
)
from dho.alerts.episode_writes import NEW_ALERT_COLUMNS, fold_updates
from dho.alerts.episodes import RuleMemory
from dho.db.models import Alert, AlertEvidence, OutboxDelivery, RuleState
from dho.rules.thresholds import Band
from tests.alerts.episode_support import NOW
from tests.support import PATIENT_A

TARGET = DeliveryTarget("webhook", "http://127.0.0.1:9/hook")
RULE = "range:oxygen-saturation"


def _report(patient: str, band: Band, summary: str) -> Report:
    return Report(
        subject=f"patient:{patient}",
        rule=RULE,
        kind="measurement-out-of-range",
        band=band,
        summary=summary,
        details={"value": summary},
        patient_id=patient,
    )


async def _rows(sessions: async_sessionmaker[AsyncSession], model: Any, order: Any) -> list[Any]:
    async with sessions() as session:
        return list(await session.scalars(select(model).order_by(order)))


def test_changes_to_new_alerts_go_into_their_rows_and_the_rest_become_updates() -> None:
    new = [{"id": "a1", "severity": "yellow", "summary": "s"}]
    updates = {"a1": {"severity": "red", "summary": "worse"}, "old": {"severity": "red"}}
    stored = fold_updates(new, updates)
    assert new == [{"id": "a1", "severity": "red", "summary": "worse"}]
    assert stored == [{"id": "old", "severity": "red"}]


def test_a_new_alert_row_has_exactly_the_columns_written() -> None:
    book = EpisodeBook()
    book.report(_report("p", Band.YELLOW, "spo2 91 %"), NOW)
    assert tuple(book.new_alerts[0]) == NEW_ALERT_COLUMNS


async def test_an_alert_opened_and_raised_in_one_batch_is_stored_raised_with_its_evidence(
    sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    patient = patients[PATIENT_A]
    async with sessions() as session, session.begin():
        book = await load_episode_book(session, [patient], (TARGET,))
        book.report(_report(patient, Band.YELLOW, "spo2 91 % (yellow)"), NOW)
        book.report(_report(patient, Band.RED, "spo2 86 % (red)"), NOW)
        book.report(_report(patient, Band.YELLOW, "spo2 90 % (yellow)"), NOW)
        book.memories[(patient, RULE)] = RuleMemory(Band.RED)
        book.changed_memories.add((patient, RULE))
        await book.flush(session, NOW)

    [alert] = await _rows(sessions, Alert, Alert.created_at)
    assert (alert.severity, alert.summary, alert.open_key) == (
        "red",
        "spo2 86 % (red)",
        f"patient:{patient}|{RULE}",
    )
    assert jsonutil.loads(alert.details) == {"value": "spo2 86 % (red)"}
    evidence = await _rows(sessions, AlertEvidence, AlertEvidence.id)
    assert [(e.alert_id, e.severity, e.summary) for e in evidence] == [
        (alert.id, "yellow", "spo2 91 % (yellow)"),
        (alert.id, "red", "spo2 86 % (red)"),
        (alert.id, "yellow", "spo2 90 % (yellow)"),
    ]
    deliveries = await _rows(sessions, OutboxDelivery, OutboxDelivery.created_at)
    events = sorted(jsonutil.loads(d.payload)["event"] for d in deliveries)
    assert events == ["alert.created", "alert.updated"]
    assert {(d.alert_id, d.channel, d.target, d.status) for d in deliveries} == {
        (alert.id, "webhook", TARGET.target, "pending")
    }
    [state] = await _rows(sessions, RuleState, RuleState.rule)
    assert (state.patient_id, state.rule, state.band) == (patient, RULE, int(Band.RED))
    assert state.updated_at == NOW


async def test_a_later_batch_changes_the_stored_alert_and_rule_state(
    sessions: async_sessionmaker[AsyncSession], patients: dict[str, str]
) -> None:
    patient = patients[PATIENT_A]
    async with sessions() as session, session.begin():
        book = await load_episode_book(session, [patient], ())
        book.report(_report(patient, Band.YELLOW, "spo2 91 % (yellow)"), NOW)
        book.memories[(patient, RULE)] = RuleMemory(Band.YELLOW, NOW + timedelta(minutes=15))
        book.changed_memories.add((patient, RULE))
        await book.flush(session, NOW)
    later = NOW + timedelta(hours=1)
    async with sessions() as session, session.begin():
        book = await load_episode_book(session, [patient], ())
        assert book.memories[(patient, RULE)].repeat_until == NOW + timedelta(minutes=15)
        book.report(_report(patient, Band.RED, "spo2 85 % (red)"), later)
        book.memories[(patient, RULE)] = RuleMemory(Band.RED)
        book.changed_memories.add((patient, RULE))
        await book.flush(session, later)

    [alert] = await _rows(sessions, Alert, Alert.created_at)
    assert (alert.severity, alert.summary) == ("red", "spo2 85 % (red)")
    assert (alert.created_at, alert.updated_at) == (NOW, later)
    evidence = await _rows(sessions, AlertEvidence, AlertEvidence.id)
    assert [e.summary for e in evidence] == ["spo2 91 % (yellow)", "spo2 85 % (red)"]
    [state] = await _rows(sessions, RuleState, RuleState.rule)
    assert (state.band, state.repeat_until, state.updated_at) == (int(Band.RED), None, later)
