"""One settings object: defaults, TOML file, environment, CLI options; errors name the
setting, what was expected and what was found."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings
from tests.conftest import REPO


def test_defaults_are_safe() -> None:
    settings = load_settings(None)
    assert settings.dicom.allowed_peers == []  # deny by default
    assert settings.storage.fsync is True
    assert settings.sqlalchemy_url.startswith("sqlite:///")
    assert settings.assembly.quiet_period_s == 30


def test_precedence_overrides_then_environment_then_file(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'data_dir = "/srv/x"\nhttp_port = 9000\n[dicom]\nport = 4242\nae_title = "FROMFILE"\n'
        '[[dicom.allowed_peers]]\nae_title = "CT1"\nhost = "10.0.0.0/8"\n'
    )
    monkeypatch.setenv("PACS_GATEWAY_DICOM__AE_TITLE", "FROMENV")
    settings = load_settings(config, dicom={"port": 5000})
    assert settings.dicom.port == 5000  # CLI option wins
    assert settings.dicom.ae_title == "FROMENV"  # environment beats the file
    assert settings.http_port == 9000 and str(settings.data_dir) == "/srv/x"
    assert settings.dicom.allowed_peers[0].host == "10.0.0.0/8"


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[dicom]\nport = 70000\n", "setting dicom.port"),
        ('[dicom]\nae_title = "MUCH_TOO_LONG_AE_TITLE"\n', "setting dicom.ae_title"),
        ('[[dicom.allowed_peers]]\nae_title = "CT"\nhost = "not-an-ip"\n', "host"),
        ("[dicom.tls]\nport = 2762\n", "cert_file, key_file"),
        ("unknown_setting = 1\n", "setting unknown_setting"),
        ("[assembly]\nquiet_period_s = -1\n", "setting assembly.quiet_period_s"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, toml: str, names: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError) as error:
        load_settings(config)
    assert names in str(error.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="expected an existing TOML file"):
        load_settings(tmp_path / "absent.toml")


def test_cli_fails_at_start_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[dicom]\nmax_associations = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert "setting dicom.max_associations" in result.stderr
    assert "greater than or equal to 1" in result.stderr


def test_cli_options_reach_the_settings(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "check-config",
            "--data-dir",
            str(tmp_path),
            "--dicom-port",
            "11999",
            "--http-port",
            "8181",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"port": 11999' in result.stdout and '"http_port": 8181' in result.stdout
    assert str(tmp_path) in result.stdout


RENAMED = "settings section 'pipeline' was renamed 'queue' (broker and worker settings)"


def test_old_pipeline_section_says_it_is_now_queue(tmp_path: Path) -> None:
    """A config written before the rename stops start-up saying where its settings went."""
    config = tmp_path / "old.toml"
    config.write_text('[pipeline]\nbroker_url = "redis://10.0.0.5:6379/0"\n')
    with pytest.raises(SettingsError) as error:
        load_settings(config)
    assert RENAMED in str(error.value)
    assert "'pipeline' now names a plug-in" in str(error.value)
    config.write_text('[queue]\nbroker_url = "redis://10.0.0.5:6379/0"\n')
    assert load_settings(config).queue.broker_url == "redis://10.0.0.5:6379/0"


def test_old_pipeline_environment_says_it_is_now_queue(monkeypatch) -> None:
    """pydantic-settings would ignore it silently (and fall back to another broker)."""
    monkeypatch.setenv("PACS_GATEWAY_PIPELINE__BROKER_URL", "redis://10.0.0.5:6379/0")
    with pytest.raises(SettingsError) as error:
        load_settings(None)
    assert RENAMED in str(error.value)
    assert "PACS_GATEWAY_PIPELINE__BROKER_URL" in str(error.value)
    monkeypatch.delenv("PACS_GATEWAY_PIPELINE__BROKER_URL")
    monkeypatch.setenv("PACS_GATEWAY_QUEUE__BROKER_URL", "redis://10.0.0.5:6379/0")
    assert load_settings(None).queue.broker_url == "redis://10.0.0.5:6379/0"
