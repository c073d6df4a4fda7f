"""Model runners: Triton over gRPC, or onnxruntime in process, behind one Protocol."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import numpy as np
from numpy.typing import NDArray

from gateway.inference_config import InferenceSettings
from workers.inference.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    InferenceError,
    PermanentInferenceError,
    TransientInferenceError,
)
from workers.inference.findings import ModelIdentity
from workers.inference.triton_pool import TritonPool
from workers.inference.triton_shm import SharedMemoryError, SystemSharedMemory

log = logging.getLogger(__name__)
T = TypeVar("T")

INPUT_NAME = "image"


@dataclass(frozen=True)
class ModelSpec:
    """What the client expects of a model: its tensor names and per-item shapes."""

    name: str
    version: str
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    output_shape: tuple[int, ...]
    dtype: str = "FP32"
    """Data type of both tensors, as Triton names it: 'FP32' or 'FP16'."""

    @property
    def numpy_dtype(self) -> type[np.floating[Any]]:
        return np.float16 if self.dtype == "FP16" else np.float32


class Deadline:
    """An absolute deadline on the monotonic clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.expires = clock() + seconds

    def remaining(self) -> float:
        return self.expires - self._clock()


class ModelRunner(Protocol):
    """Runs one model on a batch; same behaviour for Triton and onnxruntime."""

    name: str

    def check_model(self, spec: ModelSpec, deadline: Deadline) -> ModelIdentity:
        """Ready and as expected (tensor names, shapes, version), or raise."""
        ...

    def infer(
        self, spec: ModelSpec, batch: NDArray[np.float32], deadline: Deadline
    ) -> NDArray[np.float32]:
        """(N, *input_shape) float32 -> (N, *output_shape) float32; the tensors travel as
        ``spec.dtype``."""
        ...

    def close(self) -> None: ...


def _check_metadata(
    spec: ModelSpec,
    inputs: list[tuple[str, list[int], str]],
    outputs: list[tuple[str, list[int], str]],
) -> None:
    """Compare a model's declared tensors with what the client will send and read."""
    want_in = (spec.input_name, [-1, *spec.input_shape], spec.dtype)
    want_out = (spec.output_name, [-1, *spec.output_shape], spec.dtype)
    for kind, want, found in (("input", want_in, inputs), ("output", want_out, outputs)):
        names = [f[0] for f in found]
        if want[0] not in names:
            raise PermanentInferenceError(
                f"model {spec.name!r}: expected {kind} {want[0]!r}, found {names}"
            )
        f = found[names.index(want[0])]
        dims = [d if d >= 0 else -1 for d in f[1]]
        if dims != want[1] or f[2] != want[2]:
            raise PermanentInferenceError(
                f"model {spec.name!r} {kind} {want[0]!r}: expected {want[2]} {want[1]}, "
                f"found {f[2]} {dims}"
            )


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_s`` lets one try."""

    def __init__(
        self, threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None and self._clock() < self._opened_at + self.reset_s

    def retry_after(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self.reset_s - self._clock())

    def before_call(self) -> None:
        wait = self.retry_after()
        if wait > 0:
            raise CircuitOpenError(
                f"circuit open after {self._failures} consecutive failures; retry in {wait:.1f} s"
            )

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold:
                self._opened_at = self._clock()


@dataclass
class TritonEndpoint:
    """One Triton server as a runner sees it: its client, shared memory and breaker."""

    url: str
    client: Any
    breaker: CircuitBreaker
    shm: SystemSharedMemory | None = None
    shm_lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        if self.shm is not None:
            self.shm.close()
        self.client.close()


class TritonRunner:
    """Triton Inference Server over gRPC: binary tensors, deadlines, retries, breaker; with
    several servers (``grpc_urls``), balancing and failover (`TritonPool`)."""

    name = "triton"

    def __init__(self, settings: InferenceSettings, sleep: Callable[[float], None] = time.sleep):
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.settings = settings
        urls = settings.grpc_urls
        self.url = ", ".join(urls)
        self.endpoints = [self._endpoint(url) for url in urls]
        self.pool = TritonPool(urls, settings.triton_failover_cooldown_s)
        self._sleep = sleep

    def _endpoint(self, url: str) -> TritonEndpoint:
        s = self.settings
        client = self._grpc.InferenceServerClient(url=url)
        endpoint = TritonEndpoint(
            url, client, CircuitBreaker(s.circuit_failure_threshold, s.circuit_reset_s)
        )
        if s.triton_shared_memory and _on_this_host(url):
            endpoint.shm = SystemSharedMemory(client)
        return endpoint

    @property
    def breaker(self) -> CircuitBreaker:
        """The first server's breaker (the only one with a single server)."""
        return self.endpoints[0].breaker

    @breaker.setter
    def breaker(self, breaker: CircuitBreaker) -> None:
        self.endpoints[0].breaker = breaker

    @property
    def uses_shared_memory(self) -> bool:
        return any(e.shm is not None for e in self.endpoints)

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()

    # -- error handling -------------------------------------------------------------------
    @staticmethod
    def classify(exc: Exception) -> InferenceError:
        """Transient (retry) or permanent (fail fast), with a readable message."""
        status = ""
        message = str(exc)
        if hasattr(exc, "status") and callable(exc.status):
            status = str(exc.status() or "")
        if hasattr(exc, "message") and callable(exc.message):
            message = str(exc.message() or message)
        transient_codes = (
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
            "RESOURCE_EXHAUSTED",
            "ABORTED",
            "CANCELLED",
            "UNKNOWN",
        )
        low = message.lower()
        if any(code in status for code in transient_codes) or (
            "not ready" in low or "loading" in low or "unavailable" in low
        ):
            return TransientInferenceError(f"Triton {status or 'error'}: {message}")
        return PermanentInferenceError(f"Triton {status or 'error'}: {message}")

    def _call(self, what: str, deadline: Deadline, fn: Callable[[float], T]) -> T:
        """``fn(timeout)`` on whichever server the pool picks (see `_call_on`)."""
        return self._call_on(what, deadline, lambda _endpoint, timeout: fn(timeout))

    def _call_on(
        self, what: str, deadline: Deadline, fn: Callable[[TritonEndpoint, float], T]
    ) -> T:
        """Run ``fn(endpoint, timeout)`` with retries, exponential back-off and each server's
        circuit breaker. A transient failure moves to another server at once while one is
        left that has not failed (and is not cooling down); when none is, back off. A
        permanent error (bad input, unknown model) is raised: another server would say the
        same."""
        s = self.settings
        delay = s.backoff_initial_s
        attempt = 0
        tried: set[int] = set()
        last: InferenceError | None = None
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise DeadlineExceededError(
                    f"{what}: no answer from Triton at {self.url} within the deadline of "
                    f"{deadline.seconds:.0f} s after {attempt} attempt(s); last error: {last}"
                )
            opened = {i for i, e in enumerate(self.endpoints) if e.breaker.is_open}
            index = self.pool.acquire(avoid=tried | opened, kind=what)
            endpoint = self.endpoints[index]
            try:
                endpoint.breaker.before_call()
            except CircuitOpenError as exc:  # every server's circuit is open: wait
                self.pool.release(index, failed=None)
                last = exc
                wait = min(endpoint.breaker.retry_after(), remaining)
                self._sleep(max(wait, 0.01))
                continue
            failed = False
            try:
                result = fn(endpoint, min(s.request_timeout_s, remaining))
            except PermanentInferenceError:
                raise
            except Exception as exc:  # tritonclient raises InferenceServerException
                err = exc if isinstance(exc, InferenceError) else self.classify(exc)
                if isinstance(err, PermanentInferenceError):
                    raise err from exc
                failed = True
                endpoint.breaker.failure()
                last = err
                attempt += 1
                if attempt > s.max_retries:
                    raise TransientInferenceError(
                        f"{what}: Triton at {self.url} still failing after {attempt} attempt(s)"
                        f": {err}"
                    ) from exc
                tried.add(index)
                if self.pool.has_alternative(avoid=tried | opened):
                    log.warning(
                        "%s failed on %s (%s); trying another server", what, endpoint.url, err
                    )
                    continue
                tried.clear()
                wait = min(delay, s.backoff_max_s, max(deadline.remaining(), 0.0))
                log.warning("%s failed (%s); retry %d in %.1f s", what, err, attempt, wait)
                self._sleep(wait)
                delay *= s.backoff_multiplier
                continue
            finally:
                self.pool.release(index, failed=failed)
            endpoint.breaker.success()
            return result

    # -- API --------------------------------------------------------------------------------
    def check_model(self, spec: ModelSpec, deadline: Deadline) -> ModelIdentity:
        def ready(endpoint: TritonEndpoint, timeout: float) -> ModelIdentity:
            client = endpoint.client
            if not client.is_model_ready(spec.name, spec.version, client_timeout=timeout):
                try:
                    index = client.get_model_repository_index(as_json=True, client_timeout=timeout)
                except Exception:
                    index = {}
                entries = index.get("models", [])
                known = {m.get("name") for m in entries}
                if index and spec.name not in known:
                    raise PermanentInferenceError(
                        f"model {spec.name!r} is not in Triton's repository at {endpoint.url}; "
                        f"found {sorted(n for n in known if n)}"
                    )
                versions = sorted(
                    str(m.get("version", ""))
                    for m in entries
                    if m.get("name") == spec.name and m.get("version")
                )
                if spec.version and versions and spec.version not in versions:
                    raise PermanentInferenceError(
                        f"model {spec.name!r}: expected version {spec.version}, "
                        f"found versions {versions} in Triton's repository"
                    )
                raise TransientInferenceError(
                    f"model {spec.name!r} version {spec.version or 'latest'} is not ready"
                )
            meta: dict[str, Any] = client.get_model_metadata(
                spec.name, spec.version, as_json=True, client_timeout=timeout
            )
            versions = [str(v) for v in meta.get("versions", [])]
            if spec.version and spec.version not in versions:
                raise PermanentInferenceError(
                    f"model {spec.name!r}: expected version {spec.version}, found {versions}"
                )
            _check_metadata(
                spec,
                [(t["name"], [int(d) for d in t["shape"]], t["datatype"]) for t in meta["inputs"]],
                [(t["name"], [int(d) for d in t["shape"]], t["datatype"]) for t in meta["outputs"]],
            )
            version = spec.version or (max(versions, key=int) if versions else "")
            return ModelIdentity(spec.name, version)

        return self._call_on(f"readiness of {spec.name}", deadline, ready)

    def infer(
        self, spec: ModelSpec, batch: NDArray[np.float32], deadline: Deadline
    ) -> NDArray[np.float32]:
        if tuple(batch.shape[1:]) != spec.input_shape:
            raise PermanentInferenceError(
                f"model {spec.name!r}: expected input (N, {spec.input_shape}), found {batch.shape}"
            )
        data = np.ascontiguousarray(batch, dtype=spec.numpy_dtype)

        def call(endpoint: TritonEndpoint, timeout: float) -> NDArray[np.float32]:
            # shared memory carries FP32 only (its output region is read as float32): FP16
            # models go over plain gRPC
            shm = endpoint.shm
            if shm is not None and spec.dtype == "FP32":
                with endpoint.shm_lock:
                    try:
                        return self._infer_shared(endpoint, shm, spec, data, timeout)
                    except SharedMemoryError as exc:
                        log.warning("shared memory unusable, using gRPC only: %s", exc)
                        shm.close()
                        endpoint.shm = None
                    except Exception as exc:
                        if "shared memory" in str(exc).lower():
                            # Triton restarted and forgot our regions: register them again.
                            shm.reset()
                            raise TransientInferenceError(
                                f"Triton lost shared memory: {exc}"
                            ) from exc
                        raise
            inp = self._grpc.InferInput(spec.input_name, list(data.shape), spec.dtype)
            inp.set_data_from_numpy(data)
            out = self._grpc.InferRequestedOutput(spec.output_name)
            result = endpoint.client.infer(
                spec.name,
                [inp],
                model_version=spec.version,
                outputs=[out],
                client_timeout=timeout,
            )
            arr = result.as_numpy(spec.output_name)
            if arr is None:
                raise PermanentInferenceError(
                    f"model {spec.name!r}: expected output {spec.output_name!r}, found none"
                )
            return np.asarray(arr, dtype=np.float32)

        out = self._call_on(f"inference of {spec.name}", deadline, call)
        want = (data.shape[0], *spec.output_shape)
        if tuple(out.shape) != want:
            raise PermanentInferenceError(
                f"model {spec.name!r}: expected output shape {want}, found {out.shape}"
            )
        return out

    def _infer_shared(
        self,
        endpoint: TritonEndpoint,
        shm: SystemSharedMemory,
        spec: ModelSpec,
        data: NDArray[np.float32],
        timeout: float,
    ) -> NDArray[np.float32]:
        out_shape = (data.shape[0], *spec.output_shape)
        out_bytes = int(np.prod(out_shape)) * 4
        inp = self._grpc.InferInput(spec.input_name, list(data.shape), "FP32")
        inp.set_shared_memory(shm.write_input(data, timeout), data.nbytes)
        out = self._grpc.InferRequestedOutput(spec.output_name)
        out.set_shared_memory(shm.output_region(out_bytes, timeout), out_bytes)
        endpoint.client.infer(
            spec.name,
            [inp],
            model_version=spec.version,
            outputs=[out],
            client_timeout=timeout,
        )
        return shm.read_output(out_shape)


def _on_this_host(url: str) -> bool:
    host = url.rsplit(":", 1)[0].strip("[]").lower()
    return host in ("127.0.0.1", "localhost", "::1")


class OnnxRuntimeRunner:
    """The same models in process with onnxruntime (no server)."""

    name = "onnxruntime"

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self._sessions: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sessions.clear()

    def _resolve(self, spec: ModelSpec) -> tuple[str, Path]:
        folder = Path(self.settings.model_repository) / spec.name
        if not folder.is_dir():
            raise PermanentInferenceError(
                f"model {spec.name!r}: expected folder {folder}, found none"
            )
        versions = sorted(
            (p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=int
        )
        version = spec.version or (versions[-1] if versions else "")
        path = folder / version / "model.onnx"
        if not path.is_file():
            raise PermanentInferenceError(
                f"model {spec.name!r}: expected version {spec.version or 'latest'} at {path}, "
                f"found versions {versions}"
            )
        return version, path

    def _session(self, spec: ModelSpec) -> tuple[str, Any]:
        import onnxruntime as ort

        version, path = self._resolve(spec)
        key = (spec.name, version)
        with self._lock:
            if key not in self._sessions:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.settings.onnx_threads
                opts.inter_op_num_threads = 1
                self._sessions[key] = ort.InferenceSession(
                    str(path), opts, providers=["CPUExecutionProvider"]
                )
            return version, self._sessions[key]

    def check_model(self, spec: ModelSpec, deadline: Deadline) -> ModelIdentity:
        version, sess = self._session(spec)

        def tensors(items: Any) -> list[tuple[str, list[int], str]]:
            kinds = {"tensor(float)": "FP32", "tensor(float16)": "FP16"}
            return [
                (
                    t.name,
                    [d if isinstance(d, int) else -1 for d in t.shape],
                    kinds.get(t.type, t.type),
                )
                for t in items
            ]

        _check_metadata(spec, tensors(sess.get_inputs()), tensors(sess.get_outputs()))
        return ModelIdentity(spec.name, version)

    def infer(
        self, spec: ModelSpec, batch: NDArray[np.float32], deadline: Deadline
    ) -> NDArray[np.float32]:
        if tuple(batch.shape[1:]) != spec.input_shape:
            raise PermanentInferenceError(
                f"model {spec.name!r}: expected input (N, {spec.input_shape}), found {batch.shape}"
            )
        if deadline.remaining() <= 0:
            raise DeadlineExceededError(f"inference of {spec.name}: deadline passed")
        _, sess = self._session(spec)
        feed = np.ascontiguousarray(batch, dtype=spec.numpy_dtype)
        out = sess.run([spec.output_name], {spec.input_name: feed})[0]
        return np.asarray(out, dtype=np.float32)


class OwnsRunner:
    """An analyser that owns its model runner: used as a context manager, it closes it."""

    runner: ModelRunner

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runner.close()


def make_runner(settings: InferenceSettings) -> ModelRunner:
    """The runner chosen by ``settings.runner``."""
    if settings.runner == "triton":
        return TritonRunner(settings)
    return OnnxRuntimeRunner(settings)
