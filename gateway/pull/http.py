"""HTTP requests to a DICOMweb source: authentication, TLS, a deadline on connect and on
every read, and HTTP failures classified as transient (retry) or permanent."""

from __future__ import annotations

import base64
import http.client
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from gateway.pull.config import DicomWebSource, PullSettings
from gateway.pull.errors import SourceError

# HTTP statuses worth retrying; other 4xx mean the request itself is wrong.
_TRANSIENT_HTTP = {408, 425, 429}


def describe(source: DicomWebSource) -> str:
    return f"{source.name} (DICOMweb)"


def build_request(source: DicomWebSource, path: str, accept: str) -> urllib.request.Request:
    request = urllib.request.Request(source.url.rstrip("/") + path, method="GET")
    request.add_header("Accept", accept)
    if source.username is not None and source.password is not None:
        token = f"{source.username}:{source.password.get_secret_value()}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    elif source.token is not None:
        request.add_header("Authorization", "Bearer " + source.token.get_secret_value())
    return request


def query_string(params: Mapping[str, str | list[str] | None]) -> str:
    """A query string; a list value repeats its key (as `includefield` wants)."""
    kept = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(kept, doseq=True) if kept else ""


@contextmanager
def get(
    source: DicomWebSource, settings: PullSettings, path: str, accept: str, what: str
) -> Iterator[http.client.HTTPResponse]:
    """The open response of a GET (status 2xx); SourceError otherwise. `what` names the
    request in errors (never the URL: its query string may carry an identifying key)."""
    context = ssl.create_default_context(cafile=str(source.ca_file)) if source.ca_file else None
    where = describe(source)
    try:
        # The timeout applies to the connect and to every read of the body.
        response = urllib.request.urlopen(
            build_request(source, path, accept),
            timeout=max(settings.connect_timeout_s, settings.response_timeout_s),
            context=context,
        )
    except urllib.error.HTTPError as exc:
        exc.close()
        status = exc.code
        if status == 404:
            raise SourceError(f"{where}: {what}: HTTP 404 (not found)", permanent=True) from exc
        permanent = 400 <= status < 500 and status not in _TRANSIENT_HTTP
        raise SourceError(f"{where}: {what}: HTTP {status}", permanent=permanent) from exc
    except (OSError, TimeoutError, http.client.HTTPException) as exc:
        cause = getattr(exc, "reason", None)  # URLError wraps the socket error
        why = type(cause if isinstance(cause, BaseException) else exc).__name__
        raise SourceError(
            f"{where}: {what}: no reply ({why}; connect and reply within "
            f"{max(settings.connect_timeout_s, settings.response_timeout_s):g} s)"
        ) from exc
    try:
        yield response
    except (OSError, TimeoutError, http.client.HTTPException) as exc:
        raise SourceError(
            f"{where}: {what}: the reply broke off ({type(exc).__name__}, no data within "
            f"{settings.response_timeout_s:g} s or connection lost)"
        ) from exc
    finally:
        response.close()
