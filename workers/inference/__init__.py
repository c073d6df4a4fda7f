"""The inference client: series -> volume -> models (Triton or onnxruntime) -> findings.

Names are imported on first use: the gateway settings import `workers.inference.config`,
and the DICOM listener must not pay for numpy, scipy, onnxruntime and tritonclient.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InferenceSettings": "config",
    "CircuitOpenError": "errors",
    "DeadlineExceededError": "errors",
    "InferenceError": "errors",
    "PermanentInferenceError": "errors",
    "SeriesError": "errors",
    "TransientInferenceError": "errors",
    "Findings": "findings",
    "ModelIdentity": "findings",
    "NoduleFinding": "findings",
    "InferenceClient": "pipeline",
    "analyse_series": "pipeline",
    "ModelRunner": "runners",
    "OnnxRuntimeRunner": "runners",
    "TritonRunner": "runners",
    "make_runner": "runners",
    "Volume": "series",
    "read_series": "series",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
