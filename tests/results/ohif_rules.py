"""How OHIF 3.13 reads a TID 1500 SR into measurements, in Python: a cheap guard for the rules
its SR extension follows (extensions/cornerstone-dicom-sr, `_getMeasurements` and
`_checkIfCanAddMeasurementsToDisplaySet` of @ohif/app 3.13.2; docs/results.md). The browser
test in tests/viewer/ checks the real viewer.

- Measurement groups that share a Tracking Unique Identifier are one measurement: the first
  group's content items, then the others' without their Tracking Unique Identifier.
- With a SCOORD or SCOORD3D among those items (TID 1410 style): its coordinates are the first
  such item, and every NUM gives a label.
- Without: each NUM with content items must have a SCOORD or SCOORD3D among them (the first
  one without a concept name, else the first one), which adds its coordinates; a NUM whose
  content items hold none is skipped, label and all. A NUM without content items gives its
  label.
- Loading then reads the first coordinates' image reference (ReferencedSOPSequence of its
  SELECTED FROM item) for every measurement: a measurement without coordinates stops the
  whole SR from loading (TypeError), one whose first coordinates are a SCOORD is placed on
  the image its SELECTED FROM item names."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset

MEASUREMENT_GROUP = "125007"
IMAGING_MEASUREMENTS = "126010"
TRACKING_UID = "112040"
TRACKING_IDENTIFIER = "112039"
GRAPHIC = ("SCOORD", "SCOORD3D")


@dataclass
class OhifMeasurement:
    tracking_uid: str
    tracking_identifier: str
    tid1410_style: bool
    nums: list[str] = field(default_factory=list)
    """Concept meaning of every NUM of the merged groups."""
    labels: list[str] = field(default_factory=list)
    """The NUMs OHIF labels the measurement with."""
    coords: list[Dataset] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = [f"NUM {n!r} is dropped (no SCOORD among its content items)" for n in self.skipped]
        if not self.coords:
            out.append("no coordinates: OHIF stops loading the SR (coords[0] is undefined)")
        elif self.coords[0].ValueType != "SCOORD" or self.first_image_uid is None:
            out.append(
                f"first coordinates are a {self.coords[0].ValueType} without an image "
                "reference: not placed on an image"
            )
        return out

    @property
    def skipped(self) -> list[str]:
        left = list(self.labels)
        skipped = []
        for name in self.nums:
            if name in left:
                left.remove(name)
            else:
                skipped.append(name)
        return skipped

    @property
    def first_image_uid(self) -> str | None:
        """The SOP Instance UID the first coordinates are SELECTED FROM."""
        first = self.coords[0] if self.coords else None
        if first is None or "ContentSequence" not in first or len(first.ContentSequence) != 1:
            return None  # OHIF reads ContentSequence.ReferencedSOPSequence: one item only
        image = first.ContentSequence[0]
        if "ReferencedSOPSequence" not in image:
            return None
        return str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def _code_value(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else ""


def _merged_groups(ds: Dataset) -> dict[str, list[Dataset]]:
    imaging = next((i for i in ds.ContentSequence if _code_value(i) == IMAGING_MEASUREMENTS), None)
    merged: dict[str, list[Dataset]] = {}
    if imaging is None:
        return merged
    for group in imaging.get("ContentSequence", []):
        if _code_value(group) != MEASUREMENT_GROUP:
            continue
        items = list(group.ContentSequence)
        uid = next(str(i.UID) for i in items if _code_value(i) == TRACKING_UID)
        if uid in merged:
            merged[uid].extend(i for i in items if _code_value(i) != TRACKING_UID)
        else:
            merged[uid] = items
    return merged


def ohif_measurements(ds: Dataset) -> list[OhifMeasurement]:
    """The measurements OHIF 3.13 makes of the SR `ds`, in its order."""
    out = []
    for uid, items in _merged_groups(ds).items():
        identifier = next(str(i.TextValue) for i in items if _code_value(i) == TRACKING_IDENTIFIER)
        nums = [i for i in items if i.ValueType == "NUM"]
        graphic = [i for i in items if i.ValueType in GRAPHIC]
        m = OhifMeasurement(uid, identifier, tid1410_style=bool(graphic))
        m.nums = [str(n.ConceptNameCodeSequence[0].CodeMeaning) for n in nums]
        if graphic:
            m.coords = [graphic[0]]
            m.labels = [
                name for n, name in zip(nums, m.nums, strict=True) if "MeasuredValueSequence" in n
            ]
        else:
            for num, name in zip(nums, m.nums, strict=True):
                children = list(num.get("ContentSequence", []))
                if children:
                    scoords = [c for c in children if c.ValueType in GRAPHIC]
                    unnamed = [c for c in scoords if "ConceptNameCodeSequence" not in c]
                    if not scoords:
                        continue
                    m.coords.append((unnamed or scoords)[0])
                if "MeasuredValueSequence" in num:
                    m.labels.append(name)
        out.append(m)
    return out
