"""The basic-auth config of the cluster's MLflow server, from MLflow's own credentials file."""

from __future__ import annotations

import configparser
import stat

import pytest

from lth_ray import mlflow_auth


def test_new_credentials_then_the_server_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    creds = tmp_path / ".mlflow" / "credentials"
    assert mlflow_auth.main(["--new", str(creds)]) == 0
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert mlflow_auth.main(["--new", str(creds)]) == 2  # never overwrites a password
    written = configparser.ConfigParser()
    written.read(creds)
    password = written["mlflow"]["mlflow_tracking_password"]
    assert len(password) >= 24

    ini = tmp_path / "mlflow" / "basic_auth.ini"
    assert mlflow_auth.main([str(ini)]) == 0
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    config = configparser.ConfigParser()
    config.read(ini)
    m = config["mlflow"]
    assert m["default_permission"] == "NO_PERMISSIONS"
    assert (m["admin_username"], m["admin_password"]) == ("lth_ray", password)
    assert m["database_uri"] == f"sqlite:///{tmp_path / 'mlflow' / 'basic_auth.db'}"
    from mlflow.server.auth.config import read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    assert read_auth_config().admin_password == password  # what MLflow's app reads
    key = ini.with_name("flask_secret")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text()) == 64
    assert mlflow_auth.main([str(ini)]) == 0 and ini.with_name("flask_secret").read_text() == (
        key.read_text()
    )  # kept: the server's workers and restarts share one key


def test_no_credentials_no_server_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit, match="no MLflow credentials"):
        mlflow_auth.main([str(tmp_path / "basic_auth.ini")])
    assert not (tmp_path / "basic_auth.ini").exists()
