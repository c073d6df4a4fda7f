"""A pynetdicom Storage SCU for tests: sends files exactly as they are on disk."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.conftest import GATEWAY_AE


@contextmanager
def raw_file_sending() -> Iterator[None]:
    """pynetdicom sends a file path's dataset bytes unchanged only in chunked mode."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


@contextmanager
def association(
    port: int,
    paths: Iterable[Path] = (),
    *,
    calling_ae: str = "MODALITY",
    called_ae: str = GATEWAY_AE,
    bind_address: str = "127.0.0.1",
) -> Iterator[Association]:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    contexts: set[tuple[str, str]] = set()
    for path in paths:
        meta = read_file_meta_info(path)
        contexts.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, bind_address=(bind_address, 0))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def send_files(port: int, paths: list[Path], **kwargs: str) -> list[int]:
    """C-STORE each file; return the status of each (-1 if no response)."""
    statuses = []
    with raw_file_sending(), association(port, paths, **kwargs) as assoc:
        assert assoc.is_established, "association with the gateway was not established"
        for path in paths:
            status = assoc.send_c_store(path)
            statuses.append(int(status.Status) if "Status" in status else -1)
    return statuses
