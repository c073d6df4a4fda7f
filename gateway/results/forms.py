"""The forms results take at a destination: what its viewer can show.

No DICOM library is needed here: the destination settings and the delivery queue use it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class ResultForm(enum.StrEnum):
    """A form of the results, chosen per destination (`forms = [...]` in its settings)."""

    SEG_SR = "seg_sr"
    """DICOM SEG and TID 1500 SR: what OHIF, 3D Slicer and newer PACS viewers show."""
    PRESENTATION_STATE = "gsps"
    """Grayscale Softcopy Presentation State over the source images: most PACS viewers."""
    SECONDARY_CAPTURE = "sc"
    """Secondary Capture images with the outlines burned in: every viewer, never diagnostic."""
    KEY_OBJECTS = "kos"
    """Key Object Selection flagging each finding's key image."""


DEFAULT_FORMS: tuple[ResultForm, ...] = (ResultForm.SEG_SR,)

# The ResultObject.kind values each form is made of.
_KINDS: dict[ResultForm, tuple[str, ...]] = {
    ResultForm.SEG_SR: ("seg", "sr"),
    ResultForm.PRESENTATION_STATE: ("gsps",),
    ResultForm.SECONDARY_CAPTURE: ("sc",),
    ResultForm.KEY_OBJECTS: ("ko",),
}


def kinds_of(forms: Iterable[ResultForm]) -> frozenset[str]:
    """The result object kinds that make up these forms."""
    return frozenset(kind for form in forms for kind in _KINDS[form])


def unique_forms(forms: Iterable[ResultForm]) -> list[ResultForm]:
    """The forms in the given order, each once; ValueError if none."""
    ordered = list(dict.fromkeys(forms))
    if not ordered:
        raise ValueError(
            f"expected at least one of {[f.value for f in ResultForm]}, found an empty list"
        )
    return ordered
