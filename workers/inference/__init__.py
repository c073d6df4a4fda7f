"""The inference client: series -> volume -> models (Triton or onnxruntime) -> findings.

Names are imported on first use: importing one name must not pay for numpy, scipy,
onnxruntime and tritonclient all at once. Its settings are the gateway's
(`gateway.inference_config.InferenceSettings`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CircuitOpenError": "errors",
    "DeadlineExceededError": "errors",
    "InferenceError": "errors",
    "PermanentInferenceError": "errors",
    "SeriesError": "errors",
    "TransientInferenceError": "errors",
    "Findings": "findings",
    "ModelIdentity": "findings",
    "NoduleFinding": "findings",
    "InferenceClient": "client",
    "analyse_series": "client",
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
