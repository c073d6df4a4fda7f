"""The inference client: series -> volume -> models (Triton or onnxruntime) -> findings."""

from workers.inference.config import InferenceSettings
from workers.inference.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    InferenceError,
    PermanentInferenceError,
    SeriesError,
    TransientInferenceError,
)
from workers.inference.findings import Findings, ModelIdentity, NoduleFinding
from workers.inference.pipeline import InferenceClient, analyse_series
from workers.inference.runners import ModelRunner, OnnxRuntimeRunner, TritonRunner, make_runner
from workers.inference.series import Volume, read_series

__all__ = [
    "CircuitOpenError",
    "DeadlineExceededError",
    "Findings",
    "InferenceClient",
    "InferenceError",
    "InferenceSettings",
    "ModelIdentity",
    "ModelRunner",
    "NoduleFinding",
    "OnnxRuntimeRunner",
    "PermanentInferenceError",
    "SeriesError",
    "TransientInferenceError",
    "TritonRunner",
    "Volume",
    "analyse_series",
    "make_runner",
    "read_series",
]
