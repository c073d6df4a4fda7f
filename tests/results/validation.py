"""Independent checks of written objects: dciodvfy (dicom3tools) and a strict pydicom read."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom import config
from pydicom.dataset import Dataset


def dciodvfy_errors(path: Path) -> tuple[str, list[str]]:
    """(IOD name dciodvfy recognised, its error lines). Warnings are not errors."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.fail("expected dciodvfy on PATH (Debian package dicom3tools), found none")
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    iod = lines[0].strip() if lines else ""
    return iod, errors


def read_strict(path: Path) -> Dataset:
    """Read with pydicom's validation set to raise, touching every element (nested too)."""
    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.RAISE
    try:
        ds = pydicom.dcmread(path)
        count = 0
        for _element in ds.iterall():
            count += 1
        assert count > 0
        return ds
    finally:
        config.settings.reading_validation_mode = previous
