"""A real Orthanc (/usr/sbin/Orthanc) in temporary directories, driven over its REST API.

Orthanc keeps one copy of an instance sent twice with the same UIDs, so what it stores cannot
show a double delivery. A Lua `ReceivedInstanceFilter` (called for every incoming instance,
duplicates included, before Orthanc stores it or answers the C-STORE) appends each one to
`received.tsv`; `Orthanc.received()` reads what the PACS received, not what it kept.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORTHANC_BINARY = "/usr/sbin/Orthanc"
ORTHANC_AE = "ORTHANC"
REST_TIMEOUT_S = 60.0
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


# Accepts everything; one line per received instance. The file is opened per call because
# Orthanc serialises its Lua callbacks, so lines never interleave.
RECEIVED_FILTER_LUA = r"""
function ReceivedInstanceFilter(dicom, origin, info)
  local out = io.open([==[{path}]==], "a")
  out:write(table.concat({{
    tostring(dicom.SOPInstanceUID), tostring(dicom.SOPClassUID),
    tostring(dicom.StudyInstanceUID), tostring(origin.RequestOrigin),
    tostring(origin.RemoteAet or "")}}, "\t") .. "\n")
  out:close()
  return true
end
"""


@dataclass(frozen=True)
class ReceivedInstance:
    """One instance as Orthanc received it (C-STORE or REST upload), before deduplication."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    origin: str  # "DicomProtocol" for a C-STORE, "RestApi" for an upload
    calling_ae: str  # empty unless received over DICOM


@dataclass
class RestReply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Orthanc:
    """One Orthanc server process; `stop()` ends it."""

    def __init__(
        self,
        workdir: Path,
        http_port: int,
        modalities: dict[str, list[Any]],
        *,
        dicom_port: int | None = None,
        dicomweb: bool = False,
        dicomweb_servers: dict[str, Any] | None = None,
    ) -> None:
        """`dicom_port`: also a Storage SCP (AE ORTHANC, called AE checked); `dicomweb`:
        the DICOMweb plugin at /dicom-web/ (Debian package orthanc-dicomweb);
        `dicomweb_servers`: the plugin's "Servers" (remote DICOMweb servers it is a client of,
        `{name: {"Url": ..., "Username": ..., "Password": ...}}`)."""
        self.workdir = workdir
        self.http_port = http_port
        self.dicom_port = dicom_port
        self.base_url = f"http://127.0.0.1:{http_port}"
        self.dicomweb_url = f"{self.base_url}/dicom-web"
        self.log = workdir / "orthanc.log"
        self.config = workdir / "orthanc.json"
        self.received_log = workdir / "received.tsv"
        received_filter = workdir / "received_filter.lua"
        received_filter.write_text(RECEIVED_FILTER_LUA.format(path=self.received_log))
        self.config.write_text(
            json.dumps(
                {
                    "Name": "gateway-integration",
                    "StorageDirectory": str(workdir / "storage"),
                    "IndexDirectory": str(workdir / "index"),
                    "HttpPort": http_port,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "HttpServerEnabled": True,
                    # Without dicom_port only an SCU: no DICOM port to collide with others.
                    "DicomServerEnabled": dicom_port is not None,
                    "DicomPort": dicom_port or 4242,
                    "DicomCheckCalledAet": True,
                    "DicomAet": ORTHANC_AE,
                    "DicomModalities": modalities,
                    "DicomScuTimeout": 10,
                    # Close each SCU association at once: the gateway changes between tests.
                    "DicomAssociationCloseDelay": 0,
                    "SaveJobs": False,
                    "ConcurrentJobs": 1,
                    "HttpThreadsCount": 8,
                    "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
                    "DicomWeb": {
                        "Enable": dicomweb,
                        "Root": "/dicom-web/",
                        "Servers": dicomweb_servers or {},
                    },
                    "StorageCompression": False,
                    "OverwriteInstances": False,
                    "LuaScripts": [str(received_filter)],
                },
                indent=2,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        if shutil.which(ORTHANC_BINARY) is None:
            raise FileNotFoundError(f"expected the Orthanc binary at {ORTHANC_BINARY}, found none")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [ORTHANC_BINARY, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.process.returncode} at start-up; "
                    f"log:\n{self.log_text()}"
                )
            try:
                if self.get("/system").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"expected Orthanc on port {self.http_port} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def received(
        self, study_instance_uid: str | None = None, *, origin: str | None = "DicomProtocol"
    ) -> list[ReceivedInstance]:
        """Every instance received so far, duplicates included, in the order they arrived:
        of one study if given; by C-STORE unless another `origin` is asked for (None: any)."""
        if not self.received_log.exists():
            return []
        # Only whole lines: the last one may be being written.
        lines = self.received_log.read_text().split("\n")[:-1]
        rows = [ReceivedInstance(*line.split("\t")) for line in lines]
        return [
            row
            for row in rows
            if origin in (None, row.origin) and study_instance_uid in (None, row.study_instance_uid)
        ]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # REST ------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout_s: float = REST_TIMEOUT_S,
    ) -> RestReply:
        request = urllib.request.Request(self.base_url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return RestReply(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return RestReply(exc.code, exc.read())

    def get(self, path: str) -> RestReply:
        return self.request("GET", path)

    def get_json(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, f"GET {path}: HTTP {reply.status} {reply.body[:500]!r}"
        return reply.json()

    def post_json(self, path: str, payload: Any) -> RestReply:
        return self.request("POST", path, json.dumps(payload).encode())

    def upload(self, data: bytes) -> dict[str, Any]:
        """POST /instances; returns Orthanc's answer (ID, ParentStudy, Status...)."""
        reply = self.request("POST", "/instances", data, "application/dicom")
        assert reply.status == 200, f"upload: HTTP {reply.status} {reply.body[:500]!r}"
        answer: dict[str, Any] = reply.json()
        assert answer.get("Status") in ("Success", "AlreadyStored"), answer
        return answer

    def set_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        reply = self.request(
            "PUT",
            f"/modalities/{name}",
            json.dumps({"AET": ae_title, "Host": host, "Port": port}).encode(),
        )
        assert reply.status == 200, f"PUT modality: HTTP {reply.status} {reply.body[:500]!r}"

    def store(self, modality: str, resources: list[str], timeout_s: int = 60) -> RestReply:
        """Synchronous C-STORE SCU of `resources` to `modality` (POST /modalities/../store)."""
        return self.request(
            "POST",
            f"/modalities/{modality}/store",
            json.dumps(
                {"Resources": resources, "Synchronous": True, "Timeout": timeout_s}
            ).encode(),
            timeout_s=timeout_s + 30,
        )

    def instance_file(self, orthanc_id: str) -> bytes:
        reply = self.get(f"/instances/{orthanc_id}/file")
        assert reply.status == 200, f"instance file: HTTP {reply.status}"
        return reply.body

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """Orthanc's ID of the instance with this SOP Instance UID, if stored."""
        reply = self.request("POST", "/tools/lookup", sop_instance_uid.encode(), "text/plain")
        assert reply.status == 200, f"lookup: HTTP {reply.status}"
        for item in reply.json():
            if item.get("Type") == "Instance":
                return str(item["ID"])
        return None

    def study_instances(self, study_id: str) -> list[dict[str, Any]]:
        instances: list[dict[str, Any]] = self.get_json(f"/studies/{study_id}/instances")
        return instances
