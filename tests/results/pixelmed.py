"""Independent checks of written objects by PixelMed (Debian `pixelmed-apps`): the SR template
validator (`DicomSRValidator`: the SR IOD, then the templates, TID 1500 included) and the IOD
validator (`DicomInstanceValidator`), and the messages that are PixelMed's own faults
(docs/results.md, "PixelMed's messages"; each one is shown on a control object written by
highdicom alone in tests/results/test_pixelmed.py).

PixelMed 20220618 as Debian ships it: `DicomInstanceValidator` knows only the Segmentation,
Raw Data, Enhanced and Legacy Converted Enhanced CT/MR and MR Spectroscopy IODs; for any
other SOP class (SR, KOS, GSPS, SC) it prints "IOD (SOP Class) unrecognized", which
`instance_validator_errors` returns as an error line, so a check that did not run never
passes. The SR-family IODs (SR, KOS) are checked by `DicomSRValidator`, which validates the
IOD ("Found Comprehensive3DSR IOD") before the templates."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pytest

PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
# Without these the JDK's XPath limits stop the XSLT validators on large templates.
JDK_XPATH_UNLIMITED = (
    "-Djdk.xml.xpathExprGrpLimit=0",
    "-Djdk.xml.xpathExprOpLimit=0",
    "-Djdk.xml.xpathTotalOpLimit=0",
)
UNRECOGNIZED_IOD = "IOD (SOP Class) unrecognized"
_BATCH = Path(__file__).with_name("PixelMedBatch.java")
IMAGING_MEASUREMENTS = "126010"

# PixelMed's own faults, by message with content item positions ('1.9.2') written as 'N'.
KNOWN_PIXELMED_FAULTS = {
    "Error: Template 1500 MeasurementReport/[Row 1] CONTAINER CID 7021/[Row 4] CODE "
    '(121058,DCM,"Procedure reported"): N: /CONTAINER (126000,DCM,"Imaging Measurement '
    'Report")/CODE (121058,DCM,"Procedure reported"): Code (43468-8,LN,"XR unspecified body '
    'region") not found in context group 100': "PixelMed's CID 100 table is its version "
    "20190121; LN 43468-8 'XR unspecified body region' is in CID 100 as the standard has it "
    "now (pydicom 3's CID table lists it)",
    "Error: GeneralSeriesModule/Laterality/: : Missing conditional attribute": "PixelMed "
    "requires Laterality whenever Image Laterality and Frame Laterality are absent; PS3.3 "
    "C.7.3.1 requires it only when the body part examined is a paired structure (the chest "
    "is not)",
}


def normalised(message: str) -> str:
    """The message with its content item positions ('1.9.2.7') written as 'N'."""
    return re.sub(r"\b\d+(?:\.\d+)+\b", "N", message)


def ours(messages: Sequence[str]) -> list[str]:
    """The messages that are not PixelMed's known faults."""
    return [m for m in messages if normalised(m) not in KNOWN_PIXELMED_FAULTS]


def _java() -> str:
    java = shutil.which("java")
    if java is None or not PIXELMED_JAR.is_file():
        pytest.fail(
            f"expected java on PATH and {PIXELMED_JAR} (Debian package pixelmed-apps), "
            f"found java={java}, jar present={PIXELMED_JAR.is_file()}"
        )
    return java


def pixelmed_output(validator: str, path: Path, timeout_s: float = 300.0) -> list[str]:
    """All output lines of `com.pixelmed.validate.<validator>` (its main) on `path`."""
    run = subprocess.run(
        [
            _java(),
            *JDK_XPATH_UNLIMITED,
            "-cp",
            str(PIXELMED_JAR),
            f"com.pixelmed.validate.{validator}",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    lines = (run.stdout + run.stderr).splitlines()
    if run.returncode != 0 or any(line.startswith("Exception") for line in lines):
        pytest.fail(f"expected {validator} to run, found exit {run.returncode}: {lines[-20:]}")
    return lines


def pixelmed_outputs(
    validator: str, paths: Sequence[Path], timeout_s: float = 600.0
) -> dict[Path, list[str]]:
    """Output lines per file of one JVM checking all `paths` (PixelMedBatch.java: the XSLT
    compiles once, ~8 s, then ~4 s per SR). Without the JDK's source launcher (a JRE only),
    one JVM per file."""
    java = _java()
    if not paths:
        return {}
    if shutil.which("javac") is None:
        return {p: pixelmed_output(validator, p) for p in paths}
    run = subprocess.run(
        [java, *JDK_XPATH_UNLIMITED, "-cp", str(PIXELMED_JAR), str(_BATCH), validator]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if run.returncode != 0:
        pytest.fail(f"expected {validator} to run, found exit {run.returncode}: {run.stderr}")
    out: dict[Path, list[str]] = {}
    current: list[str] | None = None
    for line in run.stdout.splitlines():
        if line.startswith("=== BEGIN "):
            current = out.setdefault(Path(line.removeprefix("=== BEGIN ")), [])
        elif line.startswith("=== END "):
            current = None
        elif current is not None:
            current.append(line)
    missing = [p for p in paths if Path(str(p)) not in out]
    failed = {p: v for p, v in out.items() if any(x.startswith("Exception") for x in v)}
    if missing or failed:
        pytest.fail(
            f"expected {validator} output for every file, found none for {missing}, "
            f"exceptions for {failed}"
        )
    return {p: out[Path(str(p))] for p in paths}


def _sr_messages(path: Path, lines: list[str]) -> list[str]:
    if not any(line.startswith("Found ") and line.endswith(" IOD") for line in lines):
        pytest.fail(f"expected DicomSRValidator to recognise an SR IOD in {path}, found {lines}")
    return [line for line in lines if line.startswith(("Error", "Warning"))]


def sr_validator_messages(path: Path) -> list[str]:
    """DicomSRValidator's messages on an SR (IOD and templates): every 'Error:' and
    'Warning:' line, warnings included ('Content Item not in template' is a warning).
    Fails the test if PixelMed found no SR IOD at all."""
    return _sr_messages(path, pixelmed_output("DicomSRValidator", path))


def sr_validator_messages_many(
    paths: Sequence[Path], outputs: dict[Path, list[str]] | None = None
) -> dict[Path, list[str]]:
    """`sr_validator_messages` of each file, in one JVM (or from its `outputs`)."""
    outputs = outputs if outputs is not None else pixelmed_outputs("DicomSRValidator", paths)
    return {p: _sr_messages(p, lines) for p, lines in outputs.items()}


def _errors(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("Error") or line == UNRECOGNIZED_IOD]


def instance_validator_errors(path: Path) -> list[str]:
    """DicomInstanceValidator's error lines on an object; an IOD it does not know is an
    error line too (UNRECOGNIZED_IOD), never a silent pass."""
    return _errors(pixelmed_output("DicomInstanceValidator", path))


def instance_validator_errors_many(paths: Sequence[Path]) -> dict[Path, list[str]]:
    """`instance_validator_errors` of each file, in one JVM."""
    return {
        p: _errors(lines) for p, lines in pixelmed_outputs("DicomInstanceValidator", paths).items()
    }


def _measurement_groups(ds: pydicom.Dataset) -> tuple[str, list[pydicom.Dataset]]:
    """The content item position of TID 1500's Imaging Measurements ('1.9') and its groups."""
    for index, item in enumerate(ds.ContentSequence, start=1):
        if item.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS:
            return f"1.{index}", list(item.ContentSequence)
    raise AssertionError("expected an Imaging Measurements container, found none")


def group_templates(path: Path) -> list[str]:
    """The TemplateIdentifier of each measurement group ('1411', '1501', '1410')."""
    _, groups = _measurement_groups(pydicom.dcmread(path))
    return [str(g.ContentTemplateSequence[0].TemplateIdentifier) for g in groups]


def outside_measurement_groups(path: Path, messages: Sequence[str]) -> list[str]:
    """The messages not located inside a measurement group of the SR at `path`.

    PixelMed cannot check a TID 1500 whose groups mix templates: it picks one template for
    all groups of the Imaging Measurements container (any group with a Referenced Segment:
    TID 1411 for every group; else exactly one group with an Image Region: TID 1410; else
    TID 1501), so the groups of the other templates draw 'Missing conditional content item'
    and 'Content Item not in template'. A mixed report is checked outside its groups here,
    and its groups in `sr_copies_by_template`, where PixelMed picks right."""
    prefix, _ = _measurement_groups(pydicom.dcmread(path))
    inside = re.compile(rf"(?:^|\s){re.escape(prefix)}\.\d+(?:\.\d+)*:")
    return [m for m in messages if not inside.search(m)]


def sr_copies_by_template(path: Path, out_dir: Path) -> dict[str, Path]:
    """Copies of the SR whose Imaging Measurements hold the groups of one template each (a
    TID 1410 group on its own: PixelMed picks TID 1410 only for exactly one such group),
    named like 'tid1411' or 'tid1410-2'."""
    out_dir.mkdir(parents=True, exist_ok=True)
    templates = group_templates(path)
    selections: dict[str, list[int]] = {}
    for index, template in enumerate(templates):
        if template == "1410":
            selections[f"tid1410-{index}"] = [index]
        else:
            selections.setdefault(f"tid{template}", []).append(index)
    copies = {}
    for name, indices in selections.items():
        ds = pydicom.dcmread(path)
        _, groups = _measurement_groups(ds)
        imaging = next(
            i
            for i in ds.ContentSequence
            if i.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS
        )
        imaging.ContentSequence = [groups[i] for i in indices]
        copies[name] = out_dir / f"{path.stem}-{name}.dcm"
        ds.save_as(copies[name])
    return copies
