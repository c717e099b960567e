"""All tables; importing this module registers them on `Base.metadata`."""

from dho.db.models.alerts import Alert, AlertEvidence, DeliveryAttempt, OutboxDelivery
from dho.db.models.care import (
    PatientPause,
    PatientPlan,
    QuestionnaireResponseRow,
    RuleState,
    SchedulerCheckpoint,
)
from dho.db.models.ingest import ObservationRow, ObservationVersion, Quarantine, RawMessage
from dho.db.models.registry import (
    CareTeam,
    CareTeamMember,
    Device,
    DeviceAssignment,
    Gateway,
    GatewayOrganization,
    Organization,
    Patient,
)

__all__ = [
    "Alert",
    "AlertEvidence",
    "CareTeam",
    "CareTeamMember",
    "DeliveryAttempt",
    "Device",
    "DeviceAssignment",
    "Gateway",
    "GatewayOrganization",
    "ObservationRow",
    "ObservationVersion",
    "Organization",
    "OutboxDelivery",
    "Patient",
    "PatientPause",
    "PatientPlan",
    "Quarantine",
    "QuestionnaireResponseRow",
    "RawMessage",
    "RuleState",
    "SchedulerCheckpoint",
]
