"""The OHIF Viewer's built app served as a site would: its dist/ directory, an app-config.js
whose DICOMweb data source is this same origin's /dicom-web, which is reverse-proxied to
Orthanc's DICOMweb plugin (same origin: no CORS set-up in Orthanc), and index.html for every
viewer route (OHIF is a single-page app)."""

from __future__ import annotations

import json
import mimetypes
import threading
import urllib.error
import urllib.request
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DICOMWEB_PATH = "/dicom-web"
PROXY_TIMEOUT_S = 60.0
# Request headers passed on to Orthanc. Host is one of them: Orthanc writes the BulkDataURIs
# of its metadata from it, so they come back through this proxy.
FORWARDED_REQUEST_HEADERS = ("Accept", "Content-Type", "Host", "Range")
# Hop-by-hop headers and those this server sets itself.
DROPPED_RESPONSE_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}
CONTENT_TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".wasm": "application/wasm",  # WebAssembly.instantiateStreaming insists on it
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".html": "text/html; charset=utf-8",
}


def app_config_js(data_source_name: str = "orthanc") -> str:
    """OHIF's window.config: one DICOMweb data source on this origin's /dicom-web (Orthanc's
    plugin speaks QIDO-RS and WADO-RS there). No onboarding tour over the viewport, and no
    "Do you want to open this Segmentation / track these measurements?" prompts: a SEG or SR
    put in a viewport is loaded as if the user had answered yes."""
    data_source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": data_source_name,
        "configuration": {
            "friendlyName": "Orthanc DICOMweb (test)",
            "name": data_source_name,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "bulkDataURI": {"enabled": True},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "customizationService": {"ohif.tours": {"$set": []}},
        "disableConfirmationPrompts": True,
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "investigationalUseDialog": {"option": "never"},
        "strictZSpacingForVolumeViewport": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 10, "prefetch": 10},
        "showErrorDetails": "always",
        "defaultDataSourceName": data_source_name,
        "dataSources": [data_source],
    }
    # The roots must be absolute URLs of the page's own origin, known only in the browser.
    roots = "".join(
        f"config.dataSources[0].configuration.{key} = window.location.origin + "
        f"{json.dumps(DICOMWEB_PATH)};\n"
        for key in ("qidoRoot", "wadoRoot", "wadoUriRoot")
    )
    return f"var config = {json.dumps(config, indent=2)};\n{roots}window.config = config;\n"


class OhifHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, dist: Path, dicomweb_upstream: str, app_config: str) -> None:
        self.dist = dist.resolve()
        self.dicomweb_upstream = dicomweb_upstream.rstrip("/")
        self.app_config = app_config.encode()
        super().__init__(("127.0.0.1", port), OhifRequestHandler)


class OhifRequestHandler(BaseHTTPRequestHandler):
    server: OhifHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a viewer load is hundreds of requests."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == DICOMWEB_PATH or path.startswith(DICOMWEB_PATH + "/"):
            self._proxy()
        elif path == "/app-config.js":
            self._send(HTTPStatus.OK, self.server.app_config, "application/javascript")
        else:
            self._static(path)

    def do_POST(self) -> None:
        self._proxy()

    def _send(self, status: HTTPStatus | int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _static(self, path: str) -> None:
        dist = self.server.dist
        candidate = (dist / path.lstrip("/")).resolve()
        inside = candidate.is_relative_to(dist)
        if not (inside and candidate.is_file()):
            # A viewer route (/viewer, /segmentation, ...): the single-page app routes it.
            # A missing asset (a name with a suffix) is a 404, so a broken bundle shows.
            if Path(path).suffix and path != "/":
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                return
            candidate = dist / "index.html"
        content_type = CONTENT_TYPES.get(candidate.suffix) or (
            mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        )
        self._send(HTTPStatus.OK, candidate.read_bytes(), content_type)

    def _proxy(self) -> None:
        upstream = self.server.dicomweb_upstream + self.path[len(DICOMWEB_PATH) :]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(upstream, data=body, method=self.command)
        for name in FORWARDED_REQUEST_HEADERS:
            if (value := self.headers.get(name)) is not None:
                request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=PROXY_TIMEOUT_S) as response:
                status, headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, headers, payload = exc.code, exc.headers, exc.read()
        except OSError as exc:
            message = f"expected Orthanc's DICOMweb at {upstream}, found {exc}".encode()
            self._send(HTTPStatus.BAD_GATEWAY, message, "text/plain")
            return
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in DROPPED_RESPONSE_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class OhifServer:
    """The server on a thread of the test process; `stop()` ends it."""

    def __init__(self, port: int, dist: Path, dicomweb_upstream: str) -> None:
        if not (dist / "index.html").is_file():
            raise FileNotFoundError(
                f"expected OHIF's built app (index.html) in {dist}, found none: "
                "run scripts/ensure-ohif.sh"
            )
        self.http = OhifHttpServer(port, dist, dicomweb_upstream, app_config_js())
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self.http.serve_forever, name="ohif-server", daemon=True
        )

    def start(self) -> OhifServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self._thread.join(timeout=10)

    def viewer_url(self, study_instance_uid: str) -> str:
        return f"{self.url}/viewer?StudyInstanceUIDs={study_instance_uid}"
