"""The cyclic garbage collector set for a long-running service that allocates per message.

CPython's default first threshold (700 container allocations) makes it collect every few
messages; each collection walks every object that survived the earlier ones, such as a
batch still being processed, and the older generations with it. A higher threshold lets
reference counting free a batch's objects first. What exists after start-up (catalogues,
plans, library modules) lives as long as the process: frozen once, no collection walks it.
"""

from __future__ import annotations

import gc

_frozen = False


def tune(first_threshold: int) -> None:
    """Collect less often; the first time in a process, freeze what exists now."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True
    _, second, third = gc.get_threshold()
    gc.set_threshold(first_threshold, second, third)
