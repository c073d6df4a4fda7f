"""Start and stop a real Triton Inference Server (from the nvidia-pytriton wheel).

The wheel lives in its own virtual environment (``.venv-triton``, made by
``triton_models/setup_triton_env.sh``) because its Python backend needs numpy<2.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.inference_config import InferenceSettings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRITON_VENV = REPO_ROOT / ".venv-triton"


class TritonServerError(RuntimeError):
    """tritonserver could not be found, started, or did not become ready."""


@dataclass(frozen=True)
class TritonInstallation:
    venv: Path
    binary: Path
    backend_directory: Path
    cache_directory: Path
    libs: Path
    site_packages: Path

    @classmethod
    def find(cls, venv: Path | None = None) -> TritonInstallation:
        venv = (venv or DEFAULT_TRITON_VENV).resolve()
        candidates = sorted(venv.glob("lib/python3*/site-packages"))
        if not candidates:
            raise TritonServerError(
                f"expected a virtual environment with nvidia-pytriton at {venv}, found none; "
                "run: bash triton_models/setup_triton_env.sh"
            )
        site = candidates[-1]
        dist = site / "pytriton" / "tritonserver"
        inst = cls(
            venv=venv,
            binary=dist / "bin" / "tritonserver",
            backend_directory=dist / "backends",
            cache_directory=dist / "caches",
            libs=site / "nvidia_pytriton.libs",
            site_packages=site,
        )
        stub = inst.backend_directory / "python" / "triton_python_backend_stub"
        for path in (inst.binary, inst.libs, stub):
            if not path.exists():
                raise TritonServerError(
                    f"expected {path} in the Triton environment, found nothing; "
                    "run: bash triton_models/setup_triton_env.sh"
                )
        return inst

    def python_libdir(self) -> Path | None:
        """LIBDIR of the venv's base interpreter (its libpython3.X.so, for the stub)."""
        cfg = self.venv / "pyvenv.cfg"
        if not cfg.exists():
            return None
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                libdir = Path(value.strip()).parent / "lib"
                if any(libdir.glob("libpython3*.so*")):
                    return libdir
        return None

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(self.libs)]
        libdir = self.python_libdir()
        if libdir is not None:
            paths.append(str(libdir))  # libpython of the same minor version as the venv
        if env.get("LD_LIBRARY_PATH"):
            paths.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(paths)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        # The Python backend stub embeds the system's libpython; point it at the venv.
        env["PYTHONPATH"] = str(self.site_packages)
        env.pop("PYTHONHOME", None)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the model repository
        return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_names(model_repository: Path) -> list[str]:
    return sorted(p.parent.name for p in Path(model_repository).glob("*/config.pbtxt"))


class TritonServer:
    """tritonserver as a subprocess; a context manager that waits for readiness."""

    def __init__(
        self,
        model_repository: Path,
        *,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        model_config_name: str | None = None,
        venv: Path | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 120.0,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.model_config_name = model_config_name
        self.venv = venv
        self.startup_timeout_s = startup_timeout_s
        self.host = host
        self.extra_args = extra_args
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @classmethod
    def from_settings(cls, settings: InferenceSettings, **kwargs: object) -> TritonServer:
        return cls(
            settings.model_repository,
            http_port=settings.triton_http_port,
            grpc_port=settings.triton_grpc_port,
            metrics_port=settings.triton_metrics_port,
            model_config_name=settings.triton_model_config_name,
            startup_timeout_s=settings.triton_startup_timeout_s,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, inst: TritonInstallation) -> list[str]:
        cmd = [
            str(inst.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={inst.backend_directory}",
            f"--cache-directory={inst.cache_directory}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--log-verbose=0",
        ]
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        cmd.extend(self.extra_args)
        return cmd

    def start(self, wait: bool = True) -> TritonServer:
        if self.is_running():
            return self
        inst = TritonInstallation.find(self.venv)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._log_file = log_file
        cmd = self.command(inst)
        log.info("starting tritonserver (grpc %s), log %s", self.grpc_url, self.log_path)
        self._process = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=inst.environment(),
            start_new_session=True,
        )
        if wait:
            try:
                self.wait_ready(self.startup_timeout_s)
            except BaseException:
                self.stop()
                raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the server and every model of the repository are ready."""
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout_s
        models = model_names(self.model_repository)
        client = grpcclient.InferenceServerClient(url=self.grpc_url)
        try:
            while True:
                if self._process is None or self._process.poll() is not None:
                    code = self._process.returncode if self._process else None
                    raise TritonServerError(
                        f"tritonserver exited with code {code} before it was ready; "
                        f"log tail:\n{self.log_tail()}"
                    )
                try:
                    if client.is_server_ready(client_timeout=2.0) and all(
                        client.is_model_ready(m, client_timeout=2.0) for m in models
                    ):
                        return
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise TritonServerError(
                        f"expected tritonserver and models {models} ready within {timeout_s:.0f}"
                        f" s, found them not ready; log tail:\n{self.log_tail()}"
                    )
                time.sleep(0.2)
        finally:
            client.close()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (graceful unload), then SIGKILL of the process group after timeout_s."""
        proc = self._process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._process = None
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_triton_forever(settings: InferenceSettings, venv: Path | None = None) -> int:
    """Serve ``settings.model_repository`` until SIGINT/SIGTERM (for ``pacs-gateway triton``).

    The server log goes to a temporary file named on stderr. Returns the exit code.
    """
    server = TritonServer.from_settings(settings, venv=venv)
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    old_int = signal.signal(signal.SIGINT, _stop)
    old_term = signal.signal(signal.SIGTERM, _stop)
    try:
        server.start()
        print(
            f"tritonserver ready: grpc {server.grpc_url}, http {settings.triton_http_port}, "
            f"models {model_names(server.model_repository)}, log {server.log_path}",
            file=sys.stderr,
            flush=True,
        )
        while not stopping:
            if not server.is_running():
                print(f"tritonserver exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
