"""Micro-batching: messages from every transport share one queue and one commit per batch.

A batch closes at `batch_max_size` messages or `batch_flush_ms` after its first message.
Each message's callback runs only after its batch committed; an infrastructure failure is
retried with backoff, and nothing is acknowledged meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dho.ingest.failures import is_infrastructure_error
from dho.ingest.measurement import RawMessage
from dho.ingest.pipeline import Pipeline
from dho.ingest.plan import MessageResult

log = logging.getLogger(__name__)

Done = Callable[[MessageResult], None]


class BatcherStopped(RuntimeError):
    """The service is shutting down; the message was not committed."""


@dataclass(slots=True)
class _Pending:
    raw: RawMessage
    done: Done
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class BatchStats:
    batches: int = 0
    messages: int = 0
    retries: int = 0
    last_batch_size: int = 0
    last_commit_ms: float = 0.0


class Batcher:
    """Collects messages into micro-batches and runs them through the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_size: int,
        flush_ms: int,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self._pipeline = pipeline
        self._max_size = max_size
        self._flush_s = flush_ms / 1000
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._stopping = False
        self.stats = BatchStats()

    def submit_nowait(self, raw: RawMessage, done: Done) -> None:
        """Queue a message; `done` runs in the event loop after its batch committed."""
        if self._stopping:
            raise BatcherStopped("not accepting messages: shutting down")
        self._queue.put_nowait(_Pending(raw, done))

    async def submit(self, raw: RawMessage) -> MessageResult:
        """Queue a message and wait until it is committed."""
        future: asyncio.Future[MessageResult] = asyncio.get_running_loop().create_future()

        def done(result: MessageResult) -> None:
            if not future.done():
                future.set_result(result)

        self.submit_nowait(raw, done)
        return await future

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            batch = await self._next_batch()
            await self._process(batch)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking messages and wait (up to `timeout_s`) until the queue is empty."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning("%d messages not stored at shutdown", self._queue.qsize())

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._flush_s
        while len(batch) < self._max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _process(self, batch: list[_Pending]) -> None:
        """Commit the batch, retrying until it succeeds: nothing is answered before that."""
        raws = [pending.raw for pending in batch]
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                results = await self._pipeline.process(raws)
                break
            except Exception as exc:
                attempt += 1
                self.stats.retries += 1
                delay = min(self._retry_max_s, self._retry_base_s * 2 ** min(attempt, 16))
                if is_infrastructure_error(exc):
                    log.warning("storing a batch failed (%s); retrying in %.1f s", exc, delay)
                else:
                    log.exception("storing a batch failed unexpectedly; retrying in %.1f s", delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        self._record_stats(len(batch), started)
        for pending, result in zip(batch, results, strict=True):
            try:
                pending.done(result)
            except Exception:  # a transport's callback must not stop ingest for everyone
                log.exception("answering a committed message on %s failed", pending.raw.topic)
            self._queue.task_done()

    def _record_stats(self, size: int, started: float) -> None:
        self.stats.batches += 1
        self.stats.messages += size
        self.stats.last_batch_size = size
        self.stats.last_commit_ms = (time.perf_counter() - started) * 1000
