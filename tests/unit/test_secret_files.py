"""Settings from secret files (compose and Kubernetes secrets): PACS_GATEWAY_<SETTING>_FILE
names a file whose content is the setting's value, at the top level and in a section;
a variable that is itself a setting ending in _file stays a plain setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings


def test_setting_from_secret_file_top_level_and_in_a_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = tmp_path / "database_url"
    url.write_text("postgresql+psycopg://gateway:s3cret@127.0.0.1:5432/gateway\n")
    key = tmp_path / "web_secret_key"
    key.write_text("k" * 48 + "\n")
    monkeypatch.setenv("PACS_GATEWAY_DATABASE_URL_FILE", str(url))
    monkeypatch.setenv("PACS_GATEWAY_WEB__SECRET_KEY_FILE", str(key))
    monkeypatch.setenv("PACS_GATEWAY_DICOM__TLS__CERT_FILE", str(tmp_path / "cert.pem"))
    settings = load_settings(data_dir=tmp_path)
    assert settings.database_url == "postgresql+psycopg://gateway:s3cret@127.0.0.1:5432/gateway"
    assert settings.web.secret_key is not None
    assert settings.web.secret_key.get_secret_value() == "k" * 48
    # a setting named *_file is not a secret file: its value is the path itself
    assert settings.dicom.tls.cert_file == tmp_path / "cert.pem"


def test_missing_secret_file_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACS_GATEWAY_WEB__SECRET_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match=r"PACS_GATEWAY_WEB__SECRET_KEY_FILE.*absent"):
        load_settings(data_dir=tmp_path)
