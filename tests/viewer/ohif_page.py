"""The OHIF Viewer page driven as a user would (open a study, double-click a series in the study
browser, open a side panel), read back from the app's own state: `window.services` (OHIF's
services: display sets, segmentations, measurements, viewport grid, panels) and
`window.cornerstoneTools` (the annotations drawn on the images). Both are set by the
@ohif/extension-cornerstone bundle for its own end-to-end tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selenium.webdriver.chromium.webdriver import ChromiumDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

TRACKED_MEASUREMENTS_PANEL = "@ohif/extension-measurement-tracking.panelModule.trackedMeasurements"
SEGMENTATION_PANEL = "@ohif/extension-cornerstone.panelModule.panelSegmentation"
# A React error boundary catching an exception logs this and replaces the viewer.
ERROR_BOUNDARY = "Error Boundary"

DISPLAY_SETS_JS = """
const s = window.services;
if (!s || !s.displaySetService) { return null; }
return s.displaySetService.getActiveDisplaySets().map(d => ({
  displaySetInstanceUID: d.displaySetInstanceUID,
  Modality: d.Modality,
  SeriesInstanceUID: d.SeriesInstanceUID,
}));
"""

SEGMENTATIONS_JS = """
const s = window.services;
const viewportId = s.viewportGridService.getActiveViewportId();
const shown = new Set(s.segmentationService.getSegmentationRepresentations(viewportId)
  .map(r => r.segmentationId));
return s.segmentationService.getSegmentations().map(seg => ({
  segmentationId: seg.segmentationId,
  label: seg.label,
  shownInActiveViewport: shown.has(seg.segmentationId),
  segments: Object.values(seg.segments).filter(x => x).map(x => ({
    segmentIndex: x.segmentIndex,
    label: x.label,
    color: shown.has(seg.segmentationId)
      ? Array.from(s.segmentationService.getSegmentColor(viewportId, seg.segmentationId,
          x.segmentIndex) || [])
      : null,
  })),
}));
"""

SR_DISPLAY_SET_JS = """
const s = window.services;
const ds = s.displaySetService.getActiveDisplaySets()
  .find(d => d.SeriesInstanceUID === arguments[0] && d.Modality === 'SR');
if (!ds) { return null; }
return {
  isLoaded: !!ds.isLoaded,
  isRehydratable: ds.isRehydratable === true,
  isHydrated: !!ds.isHydrated,
  measurements: (ds.measurements || []).map(m => ({
    TrackingUniqueIdentifier: m.TrackingUniqueIdentifier,
    TrackingIdentifier: m.TrackingIdentifier,
    loaded: !!m.loaded,
    labels: (m.labels || []).map(l => ({label: String(l.label), value: String(l.value)})),
    ReferencedSOPInstanceUID: m.ReferencedSOPInstanceUID || null,
    imageId: m.imageId || null,
  })),
};
"""

ANNOTATIONS_JS = """
return window.cornerstoneTools.annotation.state.getAllAnnotations().map(a => ({
  annotationUID: a.annotationUID,
  toolName: a.metadata.toolName,
  referencedImageId: a.metadata.referencedImageId || null,
  label: a.data ? (a.data.label || null) : null,
  points: (a.data && a.data.handles && a.data.handles.points || []).map(p => Array.from(p)),
}));
"""

MEASUREMENTS_JS = """
return window.services.measurementService.getMeasurements().map(m => ({
  uid: m.uid,
  label: m.label || null,
  toolName: m.toolName,
  SOPInstanceUID: m.SOPInstanceUID || null,
  referencedImageId: m.referencedImageId || null,
  displayText: m.displayText || null,
}));
"""

MEASUREMENTS_PANEL_JS = """
const panel = document.querySelector('[data-cy="trackedMeasurements-panel"]');
if (!panel) { return null; }
const rows = [...panel.querySelectorAll('[data-cy^="measurement-table-row-"]')];
const title = row => row.querySelector('[data-cy="data-row-title"]');
const details = row => row.querySelector('[data-cy="data-row-details-primary"]');
return {
  text: panel.innerText,
  rows: rows.map(r => ({
    title: title(r) ? title(r).innerText.trim() : '',
    details: details(r) ? details(r).innerText.split('\\n').map(x => x.trim()) : [],
  })),
};
"""


class OhifPage:
    def __init__(self, driver: ChromiumDriver, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.console: list[dict[str, Any]] = []

    # Reading ---------------------------------------------------------------------------
    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def collect_console(self) -> list[dict[str, Any]]:
        """The browser console so far (Chromium hands each entry out once)."""
        self.console.extend(self.driver.get_log("browser"))
        return self.console

    def console_text(self) -> str:
        return "\n".join(f"{e['level']} {e['message']}" for e in self.collect_console())

    def crash(self) -> str | None:
        """The exception the viewer route died of, if it did."""
        for entry in self.collect_console():
            if ERROR_BOUNDARY in entry["message"]:
                return str(entry["message"])
        return None

    def wait_for(self, script: str, timeout_s: float, what: str, *args: Any) -> Any:
        """The first truthy result of `script`; fails with the console's errors otherwise."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.js(script, *args)
            if value:
                return value
            if (crashed := self.crash()) is not None:
                raise AssertionError(f"expected {what}; the OHIF viewer crashed: {crashed}")
            time.sleep(0.5)
        errors = [e["message"] for e in self.collect_console() if e["level"] == "SEVERE"]
        raise AssertionError(
            f"expected {what} within {timeout_s:g}s, found {value!r}; "
            f"browser errors: {errors[-10:]}"
        )

    # Acting ----------------------------------------------------------------------------
    def open_study(self, study_instance_uid: str, series_instance_uids: list[str]) -> None:
        """The viewer on the study, once OHIF has a display set for each of these series."""
        self.driver.get(f"{self.base_url}/viewer?StudyInstanceUIDs={study_instance_uid}")
        self.wait_for(
            f"const d = (() => {{ {DISPLAY_SETS_JS} }})();"
            "return d && arguments[0].every(uid => d.some(x => x.SeriesInstanceUID === uid));",
            90,
            f"OHIF display sets of the series {series_instance_uids}",
            series_instance_uids,
        )

    def display_set_uid(self, series_instance_uid: str) -> str:
        sets = self.js(DISPLAY_SETS_JS)
        return str(
            next(d for d in sets if d["SeriesInstanceUID"] == series_instance_uid)[
                "displaySetInstanceUID"
            ]
        )

    def open_series(self, modality: str, series_description: str) -> None:
        """Double-click the series' entry in the study browser, as a user opens it in the
        active viewport."""
        entries = self.driver.find_elements(By.CSS_SELECTOR, "[data-cy^='study-browser-thumbnail']")
        matching = [
            e
            for e in entries
            if (lines := e.text.splitlines())
            and lines[0].strip() == modality
            and series_description[:20] in e.text
        ]
        texts = [e.text.replace("\n", " / ") for e in entries]
        assert len(matching) == 1, (
            f"expected one {modality} series '{series_description}' in OHIF's study browser, "
            f"found {texts}"
        )
        ActionChains(self.driver).double_click(matching[0]).perform()

    def click_panel_row(self, title: str) -> None:
        """Click the side panel's row (a segment, a measurement) titled `title`."""
        rows = self.driver.find_elements(By.CSS_SELECTOR, "[data-cy='data-row']")
        matching = [r for r in rows if title in r.text.splitlines()]
        found = [r.text.replace("\n", " / ") for r in rows]
        assert matching, f"expected a panel row '{title}', found {found}"
        matching[0].click()

    def click_measurement_row(self, index: int) -> None:
        """Click the Measurements panel's row `index` (0 first): the viewport jumps to it."""
        self.driver.find_element(
            By.CSS_SELECTOR, f"[data-cy='measurement-table-row-{index}'] [data-cy='data-row']"
        ).click()

    def activate_panel(self, panel_id: str) -> None:
        self.js("window.services.panelService.activatePanel(arguments[0], true)", panel_id)

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
