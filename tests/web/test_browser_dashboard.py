"""The new dashboard in headless Chromium: the health grid (a real listener beating, a real
Redis broker without workers, Triton not running, a destination failing) and the charts
drawn from rows spread over the last day, under the CSP `default-src 'self'` (no inline
style or script; the grid's colours come from static/dashboard.css). Saves
docs/screenshots/dashboard-health.png and dashboard-charts.png with `make screenshots`."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine

from gateway.audit import utcnow
from gateway.models import JobState
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.conftest import free_port
from tests.pipeline.harness import wait_until
from tests.web.conftest import (
    PASSWORD,
    WAIT_S,
    screenshot_dir,
    served,
    sign_in_browser,
    web_settings,
)
from tests.web.job_rows import add_delivery, add_job, add_study

RED = (198, 40, 40)  # .cell.red border in dashboard.css
GREEN = (46, 125, 50)


def rgb(css_colour: str) -> tuple[int, ...]:
    """(r, g, b) of 'rgb(...)' or an opaque 'rgba(...)' as the browser reports it."""
    numbers = [float(n) for n in re.findall(r"[\d.]+", css_colour)]
    assert len(numbers) == 3 or numbers[3] == 1, css_colour
    return tuple(int(n) for n in numbers[:3])


def _a_day_of_work(engine: Engine) -> None:
    """Studies every hour of the last day, most delivered after a few minutes, some failed,
    a few waiting now; deliveries to the PACS, the latest failing."""
    now = utcnow()
    for hours_ago in range(23, -1, -1):
        for n in range(1 + (hours_ago * 7) % 5):
            received = now - timedelta(hours=hours_ago, minutes=5 + 9 * n)
            study = add_study(engine, received)
            failed = (hours_ago + n) % 9 == 0
            took = timedelta(seconds=60 + 45 * ((hours_ago + 3 * n) % 7))
            add_job(
                engine,
                study,
                pipeline="chest_xray_nodule" if n % 3 == 2 else "lung_nodules",
                created_at=received + timedelta(seconds=2),
                started_at=received + timedelta(seconds=20),
                finished_at=min(received + took, now),
                state=JobState.FAILED if failed else JobState.DELIVERED,
            )
            if not failed:
                add_delivery(engine, study[1], "pacs", received + took, received + took)
    for minutes in (3, 6):
        add_job(
            engine,
            add_study(engine, now - timedelta(minutes=minutes)),
            created_at=now - timedelta(minutes=minutes),
            state=JobState.QUEUED,
        )
    add_delivery(
        engine, study[1], "pacs", now - timedelta(minutes=2), None,
        "no association with PACS at 127.0.0.1:1: connection refused",
    )  # fmt: skip


def _wait_for(driver: WebDriver, css: str) -> Any:
    return WebDriverWait(driver, WAIT_S).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def test_dashboard_health_grid_and_charts_in_a_browser(
    browser: WebDriver,
    tmp_path: Path,
    database_url: str,
    engine: Engine,
    start_gateway: Callable[..., Any],
) -> None:
    settings = web_settings(
        tmp_path / "data",
        database_url,
        queue={"broker_url": "redis://127.0.0.1:6379/11"},  # the machine's Redis, no worker
        # the listener's own deliverer must not retry the made-up failing delivery while the
        # page loads (on a loaded machine it had turned it failed: amber, not red)
        delivery={"poll_interval_s": 3600},
        destinations=[
            {"kind": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1},
            {"kind": "dicomweb", "name": "archive", "url": f"http://127.0.0.1:{free_port()}/dw"},
        ],
    )
    start_gateway(settings)  # a real listener: its heartbeat row is what the grid shows
    create_user(engine, settings.web, "viewer", PASSWORD, Role.VIEWER, actor="test")
    _a_day_of_work(engine)
    shots = screenshot_dir(tmp_path, database_url)
    shots.mkdir(parents=True, exist_ok=True)
    with served(create_app(settings, engine)) as base:
        browser.get(base + "/")
        sign_in_browser(browser, "viewer")
        _wait_for(browser, "#health")
        source = browser.page_source
        assert not re.search(r"<script|<style|\sstyle=", source), "inline script or style"

        def cell(part: str, name: str | None = None) -> Any:
            found = [
                c
                for c in browser.find_elements(By.CSS_SELECTOR, f'.cell[data-part="{part}"]')
                if name is None or c.get_attribute("data-name") == name
            ]
            assert found, f"expected a {part} {name or ''} cell, found none"
            return found[0]

        def colour(element: Any) -> tuple[int, ...]:
            return rgb(str(element.value_of_css_property("border-left-color")))

        listener = cell("listener")
        assert listener.get_attribute("data-level") == "green", listener.text
        assert colour(listener) == GREEN  # dashboard.css applied under the CSP
        assert "receiving" in listener.text and "last heartbeat" in listener.text
        workers = cell("worker", "workers")
        assert workers.get_attribute("data-level") == "red" and colour(workers) == RED
        assert "No worker answered" in workers.text
        assert cell("broker").get_attribute("data-level") == "green"
        assert cell("triton").get_attribute("data-level") == "red"
        pacs = cell("destination", "pacs")
        assert pacs.get_attribute("data-level") == "red"
        assert "failing: 1 queued" in pacs.text
        banner = browser.find_element(By.CSS_SELECTOR, ".banner").text
        assert banner.startswith(("Triton: ", "No worker answered"))
        browser.set_window_size(1280, 1500)
        browser.save_screenshot(str(shots / "dashboard-health.png"))

        charts = browser.find_element(By.ID, "charts")
        browser.execute_script("arguments[0].scrollIntoView()", charts)
        jobs_chart = browser.find_element(By.ID, "chart-jobs")
        assert jobs_chart.size["width"] > 400 and jobs_chart.size["height"] > 80
        delivered = jobs_chart.find_elements(By.CSS_SELECTOR, "rect.bar.delivered")
        assert len(delivered) == 24
        drawn = [r for r in delivered if float(r.get_attribute("height") or 0) > 0]
        assert len(drawn) >= 20
        assert rgb(drawn[0].value_of_css_property("fill")) == GREEN
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-turnaround rect.bar.p95")
        browser.save_screenshot(str(shots / "dashboard-charts.png"))

        browser.find_element(By.ID, "range-7d").click()
        wait_until(lambda: "range=7d" in browser.current_url, WAIT_S, "the 7-day view")
        week = browser.find_element(By.ID, "chart-studies")
        assert len(week.find_elements(By.CSS_SELECTOR, "rect.bar.studies")) == 24 * 7
    for name in ("dashboard-health", "dashboard-charts"):
        assert (shots / f"{name}.png").stat().st_size > 20000
