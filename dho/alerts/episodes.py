"""Calm alerting, decided: what a rule's finding does to the patient's alert episode.

One open episode per patient and rule. A finding settles the rule's colour with
hysteresis; a colour that rises with no episode open opens one; with one open, a worse
colour raises its severity and anything not green is attached as evidence; an equal or
better colour opens nothing. A plan may ask for a repeat measurement before a single
yellow outlier becomes an alert. Pure: the caller loads and writes the rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from dho.rules.hysteresis import settle
from dho.rules.judge import Finding, PlanRef
from dho.rules.thresholds import Band
from dho.values import value

Action = Literal["none", "open", "raise", "attach", "ask-repeat"]


@value
class RuleMemory:
    """A rule's settled colour for a patient, and a repeat measurement it waits for."""

    band: Band = Band.GREEN
    repeat_until: datetime | None = None
    repeat_observation_id: str | None = None
    repeat_summary: str | None = None
    repeat_plan: PlanRef | None = None


@value
class Episode:
    id: str
    severity: Band


@value
class Outcome:
    action: Action
    memory: RuleMemory


FRESH = RuleMemory()  # a rule that has seen nothing, or only green
_QUIET = Outcome("none", FRESH)


def decide(
    finding: Finding,
    memory: RuleMemory,
    episode: Episode | None,
    *,
    observation_id: str,
    now: datetime,
    repeat_within: timedelta | None = None,
) -> Outcome:
    """The action for one finding, and what the rule remembers afterwards."""
    settled = settle(memory.band, finding.band, finding.held)
    if episode is not None:
        if settled > episode.severity:
            return Outcome("raise", RuleMemory(settled))
        action: Action = "attach" if finding.band > Band.GREEN else "none"
        return Outcome(action, RuleMemory(settled))
    if settled == Band.GREEN:
        return _QUIET
    if memory.repeat_until is not None:
        return Outcome("open", RuleMemory(settled))  # the repeat confirms the outlier
    if settled <= memory.band:
        return Outcome("none", RuleMemory(settled))
    if settled == Band.YELLOW and finding.repeatable and repeat_within is not None:
        waiting = RuleMemory(memory.band, now + repeat_within, observation_id)
        return Outcome("ask-repeat", waiting)
    return Outcome("open", RuleMemory(settled))
