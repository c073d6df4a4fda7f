"""Write a synthetic CT study for the ingest benchmark (not committed; goes to a work dir).

One series of axial CT Image Storage slices, Explicit VR Little Endian, signed 16-bit pixels
with anatomy-like structure (body ellipse, lungs, spine, vessels) plus noise, consistent
geometry (position, orientation, spacing) and fresh UIDs on every call.

    python bench/ingest/make_ct_study.py /tmp/ct --slices 200 --size 512
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

RESCALE_INTERCEPT = -1024


def _phantom_slice(size: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """Hounsfield units for one axial slice; z in [0, 1] moves through the volume."""
    grid = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air
    body = (x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1.0
    hu[body] = -80.0  # fat
    hu[(x / 0.78) ** 2 + (y / 0.55) ** 2 <= 1.0] = 40.0  # soft tissue
    lung_scale = 0.5 + 0.5 * np.sin(np.pi * z)  # lungs grow, then shrink along z
    for side in (-1.0, 1.0):
        lung = ((x - side * 0.38) / (0.28 * lung_scale + 0.02)) ** 2 + (
            (y + 0.05) / (0.42 * lung_scale + 0.02)
        ) ** 2 <= 1.0
        hu[lung] = -850.0
    spine = (x / 0.1) ** 2 + ((y - 0.42) / 0.09) ** 2 <= 1.0
    hu[spine] = 700.0
    hu[(x / 0.05) ** 2 + ((y - 0.42) / 0.045) ** 2 <= 1.0] = 250.0  # marrow
    aorta = ((x + 0.08) / 0.07) ** 2 + ((y - 0.22) / 0.07) ** 2 <= 1.0
    hu[aorta] = 180.0
    hu += rng.normal(0.0, 18.0, size=hu.shape).astype(np.float32)  # quantum noise
    hu[~body] = -1000.0 + rng.normal(0.0, 4.0, size=int((~body).sum())).astype(np.float32)
    stored = np.clip(np.rint(hu) - RESCALE_INTERCEPT, -32768, 32767)
    return stored.astype(np.int16)


def make_study(out_dir: Path, slices: int, size: int, seed: int = 0) -> list[Path]:
    """Write `slices` files into `out_dir`; return their paths in slice order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    now = dt.datetime.now(dt.UTC)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    pixel_mm = 350.0 / size
    thickness = 1.25
    paths = []
    for index in range(slices):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = "BENCH0001"
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Ingest benchmark CT"
        ds.SeriesDescription = f"Axial {thickness} mm"
        ds.PatientName = "Bench^Ingest"
        ds.PatientID = "BENCH-INGEST"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{thickness}"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 2
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = index + 1
        z_mm = -index * thickness
        corner = f"{-175.0 + pixel_mm / 2:.4f}"
        ds.ImagePositionPatient = [corner, corner, f"{z_mm:.3f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{z_mm:.3f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [f"{pixel_mm:.6f}", f"{pixel_mm:.6f}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        pixels = _phantom_slice(size, index / max(slices - 1, 1), rng)
        ds.PixelData = pixels.tobytes()
        path = out_dir / f"CT{index + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512, help="rows = columns")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = make_study(args.out_dir, args.slices, args.size, args.seed)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files, {total / 1e6:.1f} MB, to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
