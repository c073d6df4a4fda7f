"""The gateway's web server (admin UI and /dicomweb) for tests: in a thread of the test
process (werkzeug's make_server, threaded), or as the real `pacs-gateway web` process when
its memory is what is measured; API tokens; dicomweb-client and raw requests against it."""

from __future__ import annotations

import email.parser
import email.policy
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient
from sqlalchemy import Engine
from werkzeug.serving import make_server

from gateway.dicomweb.tokens import Scope, create_token
from gateway.settings import GatewaySettings
from gateway.web import create_app
from tests.conftest import REPO, free_port, settings_environment, wait_for_port


@dataclass
class WebServer:
    settings: GatewaySettings
    engine: Engine
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base}/dicomweb"

    def token(self, name: str, scope: Scope = Scope.BOTH) -> str:
        return create_token(self.engine, name, scope, actor="test", source_address=None)

    def client(self, secret: str) -> DICOMwebClient:
        return DICOMwebClient(url=self.dicomweb, headers={"Authorization": f"Bearer {secret}"})


class ThreadedWebServer:
    """create_app(settings) served by werkzeug in a thread; `stop()` ends it."""

    def __init__(self, settings: GatewaySettings, engine: Engine) -> None:
        self.port = free_port()
        self.server = make_server(
            "127.0.0.1", self.port, create_app(settings, engine), threaded=True
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.web = WebServer(settings, engine, self.port)

    def start(self) -> WebServer:
        self.thread.start()
        return self.web

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class WebProcess:
    """`pacs-gateway web` as its own OS process (its RSS is measured by psutil)."""

    def __init__(self, settings: GatewaySettings, workdir: Path) -> None:
        self.settings = settings
        self.log = workdir / "web.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "web"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=settings_environment(self.settings),
            )
        wait_for_port(self.settings.http_port, timeout_s=60)
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def multipart_body(parts: list[bytes], boundary: str = "test-boundary-8b1f") -> tuple[bytes, str]:
    """A STOW-RS body of application/dicom parts and its Content-Type."""
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
            for part in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def parse_multipart(response: requests.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part, by the standard library's MIME parser (not the
    gateway's own)."""
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    assert message.is_multipart(), (
        f"expected a multipart answer, found {message.get_content_type()}"
    )
    return [
        (str(part["Content-Type"]), part.get_payload(decode=True) or b"")
        for part in message.iter_parts()
    ]
