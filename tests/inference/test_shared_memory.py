"""Tensors through POSIX shared memory to the local Triton: same answers as plain gRPC, and
a Triton restart (which forgets the registered regions) is survived."""

from __future__ import annotations

import numpy as np

from gateway.inference_config import InferenceSettings
from workers.inference.client import classification_spec, segmentation_spec
from workers.inference.runners import Deadline, TritonRunner


def test_shared_memory_and_grpc_give_the_same_outputs(
    triton_settings: InferenceSettings,
) -> None:
    rng = np.random.default_rng(3)
    shared = TritonRunner(triton_settings)
    plain = TritonRunner(triton_settings.model_copy(update={"triton_shared_memory": False}))
    try:
        assert shared.uses_shared_memory and not plain.uses_shared_memory
        for spec in (segmentation_spec(triton_settings), classification_spec(triton_settings)):
            for batch in (2, 5):  # a larger second batch grows the regions
                x = rng.normal(size=(batch, *spec.input_shape)).astype(np.float32)
                a = shared.infer(spec, x, Deadline(60))
                b = plain.infer(spec, x, Deadline(60))
                assert a.shape == (batch, *spec.output_shape)
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    finally:
        shared.close()
        plain.close()


def test_remote_triton_uses_grpc_only(triton_settings: InferenceSettings) -> None:
    remote = triton_settings.model_copy(update={"triton_grpc_url": "10.255.255.1:8001"})
    runner = TritonRunner(remote)
    try:
        assert not runner.uses_shared_memory
    finally:
        runner.close()
