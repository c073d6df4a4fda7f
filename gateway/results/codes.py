"""Coded concepts used in the SEG and SR (SNOMED CT, DICOM, UCUM, LOINC)."""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

LUNG = codes.SCT.Lung
NODULE = codes.SCT.Nodule
ANATOMICAL_STRUCTURE = codes.SCT.AnatomicalStructure
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = codes.SCT.MorphologicallyAbnormalStructure
VOLUME = codes.SCT.Volume
DIAMETER = codes.SCT.Diameter
MAXIMUM = codes.SCT.Maximum
PRESENT = codes.SCT.Present
ABSENT = codes.SCT.Absent
PROBABILITY = codes.DCM.Probability
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence
PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment
CT_CHEST = Code("24627-2", "LN", "CT Chest")
CUBIC_MILLIMETER = Code("mm3", "UCUM", "cubic millimeter")
MILLIMETER = Code("mm", "UCUM", "millimeter")
NO_UNITS = Code("1", "UCUM", "no units")
