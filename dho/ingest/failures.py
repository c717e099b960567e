"""How the pipeline classifies failures: bad data, transient conflicts, infrastructure.

Data errors are quarantined and never retried; a conflict with a concurrent writer is
retried at once; an infrastructure failure (database or network down) is retried later
with nothing acknowledged meanwhile.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from dho.ingest.errors import DataError, Reason

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)

# SQLSTATEs of a server that cannot serve right now: connection exceptions (08), insufficient
# resources (53: too many connections, disk full) and 57P (shutting down, "the database
# system is starting up"). Drivers report them as plain DBAPIError, not OperationalError.
UNAVAILABLE_SQLSTATES = ("08", "53", "57P")


class ProcessingError(DataError):
    """A message that made processing fail unexpectedly; quarantined, isolated from its batch."""

    code = "processing-error"
    reason: Reason = "processing-error"


def processing_error(exc: BaseException) -> ProcessingError:
    """The reason stored and answered for an unexpected failure: no SQL, no payload."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return ProcessingError(
        f"unexpected {type(cause).__name__} while processing this message; "
        "it is kept in quarantine and the service log has the details"
    )


def is_transient_conflict(exc: BaseException) -> bool:
    """A deadlock or serialisation failure: running the same work again can succeed."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate in ("40001", "40P01")


def is_infrastructure_error(exc: BaseException) -> bool:
    """True for failures worth retrying later (database or network down)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES):
            return True
    return isinstance(exc, INFRASTRUCTURE_ERRORS)
