"""DICOM networking: the Storage/Verification SCP and what it writes."""
