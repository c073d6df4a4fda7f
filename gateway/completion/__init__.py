"""Knowing when a study (or a series) is complete without waiting: MPPS, storage commitment,
Images in Acquisition and per-rule quiet periods (docs/receiving.md)."""
