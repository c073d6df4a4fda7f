"""One settings object: defaults, TOML file, environment, CLI options; errors name the
setting, what was expected and what was found."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.settings import GatewaySettings, SettingsError, load_settings
from gateway.settings_section import SettingsSection
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


def _section_models(model: Any, seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every model reachable from `model`'s fields (lists, unions, Annotated included)."""
    if isinstance(model, type) and issubclass(model, BaseModel):
        if model in seen:
            return seen
        seen.add(model)
        for field in model.model_fields.values():
            _section_models(field.annotation, seen)
        return seen
    for arg in typing.get_args(model):
        _section_models(arg, seen)
    return seen


def test_every_settings_section_forbids_unknown_keys() -> None:
    """A section added later that forgets the base class fails here."""
    models = _section_models(GatewaySettings, set()) - {GatewaySettings}
    assert len(models) > 20
    lax = sorted(m.__name__ for m in models if m.model_config.get("extra") != "forbid")
    assert lax == [], f"expected every settings section to forbid unknown keys, found {lax}"


PEER = '[[dicom.allowed_peers]]\nae_title = "CT"\nhost = "10.0.0.1"\n'
RULE = '[[routing.rules]]\nname = "r"\n'
CONDITION = '[[routing.rules.conditions]]\nattribute = "modality"\nvalue = "CT"\n'
DICOM_DESTINATION = '[[destinations]]\nkind = "dicom"\nname = "p"\nae_title = "P"\nhost = "h"\n'
STOW_DESTINATION = '[[destinations]]\nkind = "dicomweb"\nname = "w"\nurl = "http://h/dicom-web"\n'


@pytest.mark.parametrize(
    ("toml", "section"),
    [
        (f"[{name}]\nnot_a_key = 1\n", name)
        for name, field in GatewaySettings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, SettingsSection)
    ]
    + [
        ("[queue]\nworker_concurency = 3\n", "queue"),
        (PEER + "portt = 104\n", "dicom.allowed_peers.0"),
        ("[dicom.tls]\nport = 2762\nkey_fiel = 'x'\n", "dicom.tls"),
        (RULE + "pipline = 'x'\n", "routing.rules.0"),
        (RULE + CONDITION + "opertor = 'equals'\n", "routing.rules.0.conditions.0"),
        (RULE + "[routing.rules.prior]\nwithin_day = 1\n", "routing.rules.0.prior"),
        ("[routing.series_selection]\nmin_slice = 4\n", "routing.series_selection"),
        (DICOM_DESTINATION + "calling_ae = 'X'\n", "destinations.0.dicom"),
        (STOW_DESTINATION + "tokn = 'x'\n", "destinations.0.dicomweb"),
    ],
)
def test_a_typo_in_any_section_is_refused_naming_section_and_key(
    tmp_path: Path, toml: str, section: str
) -> None:
    config = tmp_path / "typo.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError) as error:
        load_settings(config)
    key = toml.strip().splitlines()[-1].split("=")[0].strip()
    assert (
        f"setting {section}.{key}: expected a known key of section [{section}], "
        f"found unknown key {key!r}"
    ) in str(error.value)


def test_a_typo_in_a_section_environment_variable_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("PACS_GATEWAY_QUEUE__WORKER_CONCURENCY", "3")
    with pytest.raises(SettingsError, match=r"setting queue\.worker_concurency: expected a known"):
        load_settings(None)
