"""The DICOM JSON model (PS3.18 F.2) of stored headers, bulk data as BulkDataURI, and the
Native DICOM Model XML (PS3.19) of a JSON dataset, for clients that ask for XML."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from xml.etree import ElementTree

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
BULK_THRESHOLD_BYTES = 1024
_INLINE_NESTED_BYTES = 10**9  # nested bulk values (an icon image) stay inline
_PN_PARTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
NATIVE_MODEL_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"

BulkUri = Callable[[int], str]


def vr_of(raw: Any, tag: BaseTag) -> str:
    vr = getattr(raw, "VR", None)
    if vr:
        return str(vr)
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def _is_bulk(tag: int, vr: str, length: int | None) -> bool:
    if tag in PIXEL_DATA_TAGS:
        return True
    return vr in BULK_VRS and (length is None or length > BULK_THRESHOLD_BYTES)


def element_json(ds: Dataset, tag: BaseTag, bulk_uri: BulkUri | None) -> dict[str, Any] | None:
    """One top-level element; a bulk value becomes its BulkDataURI (None: left out). Bulk
    values are never read: only their length is looked at."""
    raw = ds.get_item(tag)
    if raw is None:
        return None
    vr = vr_of(raw, tag)
    length = getattr(raw, "length", None)
    if _is_bulk(int(tag), vr, length):
        return None if bulk_uri is None else {"vr": vr, "BulkDataURI": bulk_uri(int(tag))}
    try:
        value: dict[str, Any] = ds[tag].to_json_dict(None, _INLINE_NESTED_BYTES)
    except (ValueError, TypeError, KeyError, OverflowError):
        # A malformed value (an IS of '1A'): tolerated when reading, sent without a value.
        return {"vr": vr}
    return value


def dataset_json(
    ds: Dataset, tags: Iterable[int] | None = None, bulk_uri: BulkUri | None = None
) -> dict[str, Any]:
    """The elements named (all when None, file meta excepted) in DICOM JSON."""
    chosen = sorted(Tag(t) for t in (ds.keys() if tags is None else tags))
    out: dict[str, Any] = {}
    for tag in chosen:
        if tag.group == 0x0002 or tag not in ds:
            continue
        value = element_json(ds, tag, bulk_uri)
        if value is not None:
            out[f"{int(tag):08X}"] = value
    return out


def json_value(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def to_native_xml(dataset: dict[str, Any]) -> bytes:
    """A DICOM JSON dataset as a PS3.19 NativeDicomModel document."""
    root = ElementTree.Element("NativeDicomModel", xmlns=NATIVE_MODEL_NS)
    _xml_attributes(root, dataset)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)


def _xml_attributes(parent: ElementTree.Element, dataset: dict[str, Any]) -> None:
    for tag_hex in sorted(dataset):
        attribute = dataset[tag_hex]
        vr = attribute["vr"]
        node = ElementTree.SubElement(parent, "DicomAttribute", {"tag": tag_hex, "vr": vr})
        keyword = keyword_for_tag(int(tag_hex, 16))
        if keyword:
            node.set("keyword", keyword)
        if "BulkDataURI" in attribute:
            ElementTree.SubElement(node, "BulkData", uri=attribute["BulkDataURI"])
            continue
        for number, value in enumerate(attribute.get("Value", []), start=1):
            if vr == "SQ":
                item = ElementTree.SubElement(node, "Item", number=str(number))
                _xml_attributes(item, value)
            elif vr == "PN":
                name = ElementTree.SubElement(node, "PersonName", number=str(number))
                for group in ("Alphabetic", "Ideographic", "Phonetic"):
                    if group not in value:
                        continue
                    node_group = ElementTree.SubElement(name, group)
                    for part, text in zip(_PN_PARTS, str(value[group]).split("^"), strict=False):
                        if text:
                            ElementTree.SubElement(node_group, part).text = text
            else:
                ElementTree.SubElement(node, "Value", number=str(number)).text = str(value)
