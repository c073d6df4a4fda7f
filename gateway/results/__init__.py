"""Findings as DICOM: Segmentation (SEG) and TID 1500 Comprehensive 3D SR, in the source study."""
