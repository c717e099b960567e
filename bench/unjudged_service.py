"""`dho serve` with judging switched off: the end-to-end baseline of `bench.rules_mqtt`.

    python -m bench.unjudged_service

The real service in every other respect (MQTT, batching, every other pipeline stage, the
outbox, the scheduler); only `Pipeline._judge` does nothing, so no reading is judged and no
alert is raised. A benchmark's tool: never run it for patients.
"""

from __future__ import annotations

from typing import Any

from dho.cli import main
from dho.ingest.pipeline import Pipeline


async def _unjudged(self: Pipeline, session: Any, plans: Any) -> None:
    return None


if __name__ == "__main__":
    Pipeline._judge = _unjudged  # type: ignore[method-assign]
    main(["serve"])
