"""Coded concepts used in the SEG and SR (SNOMED CT, DICOM, UCUM). What a finding is comes
from its pipeline's description; these are the concepts of the report's structure and of the
measurements a pipeline can ask for."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

VOLUME = codes.SCT.Volume
DIAMETER = codes.SCT.Diameter
MAXIMUM = codes.SCT.Maximum
MEAN = codes.SCT.Mean
# Meanings as CID 7470 (Linear Measurements) spells them; pydicom's dictionary has 'Long
# axis'. OHIF's Bidirectional reader (@cornerstonejs/adapters) finds the NUMs by this text.
LONG_AXIS = Code("103339001", "SCT", "Long Axis")
SHORT_AXIS = Code("103340004", "SCT", "Short Axis")
PRESENT = codes.SCT.Present
ABSENT = codes.SCT.Absent
PROBABILITY = codes.DCM.Probability
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence
PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment
CUBIC_MILLIMETER = Code("mm3", "UCUM", "cubic millimeter")
MILLIMETER = Code("mm", "UCUM", "millimeter")
NO_UNITS = Code("1", "UCUM", "no units")
# TID 1500 rows 12-14: statements about the images outside any measurement group.
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
# The Tracking Identifier under which OHIF (Cornerstone3D) writes, and reads back into its
# measurement list, a long and short axis pair; ':<title>' may follow.
CORNERSTONE_BIDIRECTIONAL = "Cornerstone3DTools@^0.1.0:Bidirectional"
SOURCE_SERIES_FOR_SEGMENTATION = codes.DCM.SourceSeriesForSegmentation.meaning


@dataclass(frozen=True)
class MeasurementConcept:
    name: Code
    unit: Code
    derivation: Code | None = None


# By the measurement names of pipeline files (gateway/pipelines/description.py).
MEASUREMENTS = {
    "volume": MeasurementConcept(VOLUME, CUBIC_MILLIMETER),
    "longest_diameter": MeasurementConcept(DIAMETER, MILLIMETER, MAXIMUM),
    "long_axis": MeasurementConcept(LONG_AXIS, MILLIMETER),
    "short_axis": MeasurementConcept(SHORT_AXIS, MILLIMETER),
    # Lung-RADS mean diameter: a diameter derived as the mean of long and short axis.
    "mean_diameter": MeasurementConcept(DIAMETER, MILLIMETER, MEAN),
}
