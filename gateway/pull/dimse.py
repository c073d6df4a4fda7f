"""An association with a DIMSE source archive: every step under a deadline (connect and
ACSE within connect_timeout_s, each DIMSE message within response_timeout_s), refusals
classified as permanent or transient, and pynetdicom kept from logging query identifiers."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from gateway.dicom.listener import configure_pynetdicom_logging
from gateway.pull.config import DicomSource, PullSettings
from gateway.pull.errors import SourceError

PENDING = (0xFF00, 0xFF01)
CANCELLED = 0xFE00
SUCCESS = 0x0000
# Failures no later attempt gets past: SOP class not supported, not authorised, move
# destination unknown, identifier does not match the SOP class. Every other failure is
# retried (up to pull.max_attempts): PACS answer 0xC000 "unable to process" for anything,
# a C-STORE sub-operation cut by the network included.
_PERMANENT = {0x0122, 0x0124, 0xA801, 0xA900}


def describe(source: DicomSource) -> str:
    return f"{source.name} ({source.ae_title}@{source.host}:{source.port})"


def _tls_context(source: DicomSource) -> ssl.SSLContext | None:
    tls = source.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    context.check_hostname = tls.check_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


@contextmanager
def association(
    source: DicomSource,
    settings: PullSettings,
    calling_ae_title: str,
    contexts: Sequence[PresentationContext],
    **associate_args: Any,
) -> Iterator[Association]:
    """An established association (released or aborted on exit). Raises SourceError."""
    configure_pynetdicom_logging()
    ae = AE(ae_title=source.calling_ae_title or calling_ae_title)
    ae.connection_timeout = settings.connect_timeout_s
    ae.acse_timeout = settings.connect_timeout_s
    ae.dimse_timeout = settings.response_timeout_s
    ae.network_timeout = settings.response_timeout_s
    ae.requested_contexts = list(contexts)
    context = _tls_context(source)
    assoc = ae.associate(
        source.host,
        source.port,
        ae_title=source.ae_title,
        tls_args=(context, source.host) if context else None,
        **associate_args,
    )
    where = describe(source)
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        permanent = primitive is not None and primitive.result == 0x01
        reason = primitive.reason_str if primitive is not None else "unknown reason"
        ae.shutdown()
        kind = "permanently" if permanent else "transiently"
        raise SourceError(f"{where} rejected the association {kind}: {reason}", permanent=permanent)
    if not assoc.is_established:
        ae.shutdown()
        raise SourceError(
            f"{where}: no association (refused, timed out after "
            f"{settings.connect_timeout_s:g} s, or aborted)"
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def response_status(status: Dataset, what: str, where: str, settings: PullSettings) -> int:
    """The status of a response; SourceError when none came (timeout, abort)."""
    if "Status" not in status:
        raise SourceError(
            f"{where}: no {what} response within {settings.response_timeout_s:g} s "
            "(association aborted or timed out)"
        )
    return int(status.Status)


def failure(what: str, where: str, status: int) -> SourceError:
    return SourceError(
        f"{where} answered {what} with status 0x{status:04X}", permanent=status in _PERMANENT
    )
