"""Test a configured destination: C-ECHO for DICOM, an HTTP GET of QIDO-RS `/studies` for
DICOMweb; each with the probe timeout."""

from __future__ import annotations

import base64
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.delivery.config import DicomDestination, DicomWebDestination
from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str
    seconds: float


def _tls(destination: DicomDestination) -> ssl.SSLContext | None:
    tls = destination.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    context.check_hostname = tls.check_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


def echo(destination: DicomDestination, settings: GatewaySettings) -> tuple[bool, str]:
    timeout = settings.web.probe_timeout_s
    ae = AE(ae_title=destination.calling_ae_title or settings.dicom.ae_title)
    ae.acse_timeout = ae.connection_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    context = _tls(destination)
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        tls_args=(context, destination.host) if context else None,
    )
    if assoc.is_rejected:
        return False, f"{where} rejected the association"
    if not assoc.is_established:
        return False, f"{where}: no association (refused, timed out after {timeout:g} s or aborted)"
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if "Status" not in status:
        return False, f"{where}: no C-ECHO response within {timeout:g} s"
    code = int(status.Status)
    if code == 0:
        return True, f"{where} answered C-ECHO with success (0x0000)"
    return False, f"{where} answered C-ECHO with status 0x{code:04X}"


def http_check(destination: DicomWebDestination, settings: GatewaySettings) -> tuple[bool, str]:
    url = destination.url.rstrip("/") + "/studies?limit=1"
    request = urllib.request.Request(
        url, method="GET", headers={"Accept": "application/dicom+json"}
    )
    if destination.username is not None and destination.password is not None:
        token = f"{destination.username}:{destination.password.get_secret_value()}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    elif destination.token is not None:
        request.add_header("Authorization", "Bearer " + destination.token.get_secret_value())
    context = (
        ssl.create_default_context(cafile=str(destination.ca_file))
        if destination.ca_file is not None
        else None
    )
    timeout = settings.web.probe_timeout_s
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            code = int(response.status)
    except urllib.error.HTTPError as exc:
        code = int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{destination.url}: expected an HTTP answer, found {reason}"
    if 200 <= code < 300:
        return True, f"{destination.url} answered HTTP {code}"
    return False, f"{destination.url} answered HTTP {code}"


def check_destination(
    destination: DicomDestination | DicomWebDestination, settings: GatewaySettings
) -> CheckResult:
    started = time.perf_counter()
    try:
        if isinstance(destination, DicomDestination):
            ok, message = echo(destination, settings)
        else:
            ok, message = http_check(destination, settings)
    except Exception as exc:  # a test must report, never crash the page
        ok, message = False, f"expected a check to run, found {type(exc).__name__}: {exc}"
    return CheckResult(ok, message, time.perf_counter() - started)
