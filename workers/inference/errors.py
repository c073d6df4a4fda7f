"""Errors of the inference client: transient ones may be retried, permanent ones not."""

from __future__ import annotations


class InferenceError(Exception):
    """Base class."""


class PermanentInferenceError(InferenceError):
    """Retrying cannot help: unknown model, wrong shape or dtype, bad input series."""


class TransientInferenceError(InferenceError):
    """The server is unavailable, loading, or slow; a later call may succeed."""


class CircuitOpenError(TransientInferenceError):
    """Calls are short-circuited after repeated failures."""


class DeadlineExceededError(TransientInferenceError):
    """The study's overall deadline passed (retries included)."""


class SeriesError(PermanentInferenceError):
    """The input series cannot be made into a volume (missing slices, mixed geometry...)."""
