"""WADO-RS: instances as stored (multipart/related; type="application/dicom", the bytes
received, streamed from disk), their metadata (DICOM JSON with BulkDataURI), and bulk data.

A client that names a transfer syntax other than the stored one gets Explicit VR Little
Endian if that is what it named and pydicom can decode the stored one (converted here, one
instance in memory at a time); any other syntax is answered 406. No syntax named, or '*':
the stored bytes, whatever their syntax (as Orthanc and most archives do)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from gateway.dicomweb.accept import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    Acceptable,
    NotAcceptable,
    takes_syntax,
    wants_syntax,
)
from gateway.dicomweb.dicom_json import dataset_json, json_value
from gateway.dicomweb.holdings import HeldInstance, read_stored_header
from gateway.dicomweb.multipart import closing, part_header

READ_CHUNK_BYTES = 1024 * 1024


def new_boundary() -> str:
    return secrets.token_hex(16)


def multipart_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def stored_syntax(path: Path) -> str:
    meta = pydicom.filereader.read_file_meta_info(path)
    return str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))


def plan_retrieve(instances: list[HeldInstance], choices: list[Acceptable]) -> list[bool]:
    """Per instance: True to send the stored bytes, False to convert to Explicit VR Little
    Endian. Raises NotAcceptable before anything is sent."""
    plan = []
    for instance in instances:
        syntax = stored_syntax(instance.path)
        if takes_syntax(choices, syntax):
            plan.append(True)
        elif wants_syntax(choices, EXPLICIT_VR_LITTLE_ENDIAN):
            plan.append(False)
        else:
            named = sorted({c.transfer_syntax or "" for c in choices})
            raise NotAcceptable(
                f"expected to send instance {instance.sop_instance_uid} in its stored transfer "
                f"syntax {syntax} or in {EXPLICIT_VR_LITTLE_ENDIAN}, found only {named} accepted"
            )
    return plan


def explicit_little_endian(path: Path) -> bytes:
    """The instance in Explicit VR Little Endian (decoded if compressed)."""
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return out.getvalue()


def retrieve_stream(
    instances: list[HeldInstance], as_stored: list[bool], boundary: str, counter: dict[str, int]
) -> Iterator[bytes]:
    """The multipart body, one file after another, READ_CHUNK_BYTES at a time. `counter`
    gets the instances and bytes sent (for the audit, after the stream ends)."""
    for instance, stored in zip(instances, as_stored, strict=True):
        if stored:
            syntax = stored_syntax(instance.path)
            yield part_header(boundary, f"application/dicom; transfer-syntax={syntax}")
            with instance.path.open("rb") as fp:
                while chunk := fp.read(READ_CHUNK_BYTES):
                    counter["bytes"] = counter.get("bytes", 0) + len(chunk)
                    yield chunk
        else:
            data = explicit_little_endian(instance.path)
            yield part_header(
                boundary, f"application/dicom; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
            )
            counter["bytes"] = counter.get("bytes", 0) + len(data)
            yield data
        counter["instances"] = counter.get("instances", 0) + 1
        yield b"\r\n"
    yield closing(boundary)


def instance_url(base_url: str, instance: HeldInstance) -> str:
    return (
        f"{base_url}/studies/{instance.study_instance_uid}/series/"
        f"{instance.series_instance_uid}/instances/{instance.sop_instance_uid}"
    )


def metadata_json(instance: HeldInstance, base_url: str) -> dict[str, Any]:
    """The instance's header in DICOM JSON; bulk values (pixel data, large OB/OW/UN, ...) as
    BulkDataURI under .../instances/{uid}/bulk/{tag}; never a pixel value read."""
    header = read_stored_header(instance.path)
    url = instance_url(base_url, instance)
    out = dataset_json(header.dataset, None, lambda tag: f"{url}/bulk/{tag:08X}")
    if header.pixel is not None:
        out[f"{header.pixel.tag:08X}"] = {
            "vr": header.pixel.vr,
            "BulkDataURI": f"{url}/bulk/{header.pixel.tag:08X}",
        }
    out["00083002"] = json_value("UI", header.transfer_syntax_uid)
    return dict(sorted(out.items()))
