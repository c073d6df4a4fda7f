"""The gateway as a DICOMweb server: STOW-RS into the spool (the C-STORE path), QIDO-RS and
WADO-RS over what it holds, received and produced; per-client API tokens (see
docs/dicomweb.md). Nothing here is imported by the settings but `config`."""
