"""Find a study and retry failed jobs in bulk in a real browser (headless Chromium through
Selenium): an operator types an accession number and a patient ID into the search form,
the list comes back by its keyed hash (the URL never holds the values), a findings and
pipeline search, then a bulk retry confirmed with its count. Screenshots of the studies
search and the bulk retry page (into docs/screenshots/ with `make screenshots`)."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import Engine, select

from gateway.models import AuditEvent, Job, JobState
from gateway.routing.config import RuleSettings
from gateway.web import create_app
from gateway.web.rule_edits import create_rule
from gateway.web.users import Role, create_user
from tests.web.conftest import (
    PASSWORD,
    WAIT_S,
    screenshot_dir,
    served,
    sign_in_browser,
    web_settings,
)
from tests.web.search_data import build_corpus


def _wait_for(driver: WebDriver, css: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def _listed(driver: WebDriver) -> set[str]:
    links = driver.find_elements(By.CSS_SELECTOR, "table#studies tr.study td:first-child > a")
    return {link.text for link in links}


def test_search_by_accession_number_and_patient_id_then_bulk_retry(
    browser: WebDriver, tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = web_settings(
        tmp_path / "data",
        database_url,
        destinations=[
            {"kind": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1}
        ],
    )
    create_user(engine, settings.web, "operator", PASSWORD, Role.OPERATOR, actor="test")
    for name in ("chest-ct", "chest-xr"):
        create_rule(engine, RuleSettings(name=name), actor="test", address="127.0.0.1")
    corpus = build_corpus(settings, engine, tmp_path / "files")
    shots = screenshot_dir(tmp_path, database_url)
    shots.mkdir(parents=True, exist_ok=True)
    with served(create_app(settings, engine)) as base:
        browser.get(base + "/studies")
        sign_in_browser(browser, "operator")
        _wait_for(browser, "form#study-search")
        assert _listed(browser) == set(corpus.uids.values())

        # Accession number: typed, posted, matched by its hash.
        browser.find_element(By.ID, "accession_number").send_keys("ACC-2001")
        browser.find_element(By.ID, "search").click()
        _wait_for(browser, "#accession_hash-active")
        assert _listed(browser) == {corpus.uids["C"]}
        assert "ACC-2001" not in browser.current_url and "accession_hash=" in browser.current_url

        # Patient ID and findings: both of PAT-1's studies, then only the positive one.
        browser.get(base + "/studies")
        _wait_for(browser, "form#study-search")
        browser.find_element(By.ID, "patient_id").send_keys("PAT-1")
        browser.find_element(By.ID, "search").click()
        _wait_for(browser, "#patient_hash-active")
        assert _listed(browser) == {corpus.uids["A"], corpus.uids["B"]}
        assert "PAT-1" not in browser.current_url and "PAT-1" not in browser.page_source
        Select(browser.find_element(By.ID, "findings")).select_by_visible_text("positive")
        browser.find_element(By.ID, "search").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: "findings=positive" in d.current_url)
        _wait_for(browser, "#patient_hash-active")  # the hash rides along with the new field
        assert _listed(browser) == {corpus.uids["A"]}

        # The list for the screenshot: lung nodule jobs, with findings and turnaround.
        browser.get(base + "/studies")
        _wait_for(browser, "form#study-search")
        Select(browser.find_element(By.ID, "pipeline")).select_by_visible_text("lung_nodules")
        browser.find_element(By.ID, "search").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: "pipeline=lung_nodules" in d.current_url)
        _wait_for(browser, "table#studies")
        assert _listed(browser) == {corpus.uids[k] for k in ("A", "B", "D")}
        cell = browser.find_element(By.ID, f"findings-{corpus.jobs['A']}").text
        assert cell == "positive: nodule present (p 0.97), 1 segmented"
        assert browser.find_element(By.ID, f"turnaround-{corpus.jobs['A']}").text == "42.5 s"
        browser.save_screenshot(str(shots / "studies-search.png"))

        # Bulk retry of the rule's failed jobs, from the search, confirmed with its count.
        Select(browser.find_element(By.ID, "rule")).select_by_visible_text("chest-ct")
        browser.find_element(By.ID, "search").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: "rule=chest-ct" in d.current_url)
        browser.find_element(By.ID, "bulk-retry-link").click()
        _wait_for(browser, "#bulk-count")
        assert browser.find_element(By.ID, "bulk-count").text == "1 failed job(s) match"
        browser.save_screenshot(str(shots / "bulk-retry.png"))
        browser.find_element(By.ID, "confirm-bulk-retry").click()
        WebDriverWait(browser, WAIT_S).until(lambda d: "Retried 1 failed job(s)." in d.page_source)
        assert browser.find_element(By.ID, "bulk-count").text == "0 failed job(s) match"
    with engine.connect() as connection:
        state = connection.execute(
            select(Job.state).where(Job.id == corpus.jobs["D-failed"])
        ).scalar_one()
        events = connection.execute(
            select(AuditEvent.detail).where(
                AuditEvent.kind == "job.requeued", AuditEvent.actor == "operator"
            )
        ).scalars()
        details = list(events)
    assert state == JobState.QUEUED
    assert details == [
        {"job": corpus.jobs["D-failed"], "was": "failed", "bulk": {"rule": "chest-ct"}}
    ]
    for name in ("studies-search", "bulk-retry"):
        assert (shots / f"{name}.png").stat().st_size > 5000
