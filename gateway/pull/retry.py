"""Try a step against the source archive again after transient failures, with back-off,
as many times as `pull.max_attempts` allows; then (or at once when permanent) give up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from gateway.pull.config import PullSettings
from gateway.pull.errors import SourceError

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

OnRetry = Callable[[int, SourceError, float], None]
"""on_retry(attempt that failed, its error, seconds until the next)."""


class GaveUp(SourceError):
    """The last error after every attempt; `attempts` says how many were made."""

    def __init__(self, last: SourceError, attempts: int) -> None:
        kind = "permanent failure" if last.permanent else f"{attempts} attempts"
        super().__init__(f"{last.reason} ({kind})", permanent=last.permanent)
        self.attempts = attempts


def with_retries(
    step: Callable[[], T],
    settings: PullSettings,
    *,
    stop: threading.Event | None = None,
    on_retry: OnRetry | None = None,
) -> tuple[T, int]:
    """(what `step` returned, attempts made). Raises GaveUp with the last error."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return step(), attempt
        except SourceError as exc:
            if exc.permanent or attempt >= settings.max_attempts:
                raise GaveUp(exc, attempt) from exc
            delay = settings.backoff_s(attempt)
            LOGGER.warning(
                "source archive: attempt %d of %d failed, next in %.1f s: %s",
                attempt,
                settings.max_attempts,
                delay,
                exc.reason,
            )
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise GaveUp(SourceError("stopped while waiting to retry"), attempt) from exc
            else:
                threading.Event().wait(delay)
