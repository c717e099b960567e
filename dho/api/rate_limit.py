"""Per-gateway rate limit for HTTP ingest: a token bucket per gateway, in this process."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """`rate` messages per second with bursts of `burst`; rate 0 means no limit."""

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def retry_after(self, key: str, now: float | None = None) -> int:
        """0 when `key` may send now (a token is taken), else whole seconds to wait."""
        if self.rate <= 0:
            return 0
        moment = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), moment)
        bucket.tokens = min(self.burst, bucket.tokens + (moment - bucket.updated) * self.rate)
        bucket.updated = moment
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))
