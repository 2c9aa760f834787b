from __future__ import annotations

from pathlib import Path

import pytest

from errors import ConfigError
from infra.settings import Settings, load_settings


def test_defaults_and_overrides(tmp_path: Path) -> None:
    s = load_settings({"GARDA_PARTITIONS": "12", "GARDA_TOPIC_PREFIX": "prod."}, dotenv=None)
    assert s.partitions == 12 and s.topic("pmi.cases.v1") == "prod.pmi.cases.v1"
    assert s.log_format == "json"


def test_dotenv_fills_gaps_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nGARDA_WEB_PORT=9000\nexport GARDA_PARTITIONS='4'\n")
    s = load_settings({"GARDA_PARTITIONS": "8"}, dotenv=env_file)
    assert s.web_port == 9000 and s.partitions == 8


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GARDA_PARTITON": "3"}, "unknown setting GARDA_PARTITON"),
        ({"GARDA_PARTITIONS": "three"}, "not a valid int"),
        ({"GARDA_PARTITIONS": "0"}, "between 1 and 1024"),
        ({"GARDA_LOG_FORMAT": "xml"}, "json or console"),
        ({"GARDA_POLICY": "/nonexistent/policy.toml"}, "no such file"),
        ({"GARDA_DATABASE_URL": "mysql://x"}, "postgresql://"),
        ({"GARDA_WEB_PORT": "70000"}, "TCP port"),
    ],
)
def test_invalid_settings_fail_with_a_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env, dotenv=None)


def test_test_variables_are_not_settings() -> None:
    assert load_settings({"GARDA_TEST_KAFKA_BOOTSTRAP": "x:1"}, dotenv=None).partitions == 6


def test_database_password_hidden_in_repr() -> None:
    s = load_settings(
        {"GARDA_DATABASE_URL": "postgresql://garda:s3cret@db:5432/garda"}, dotenv=None
    )
    assert "s3cret" not in repr(s)
    assert "garda:***@db:5432/garda" in repr(s)
    assert s.database_url.endswith("s3cret@db:5432/garda")


def test_garda_dev_banner_never_shows_a_database_password(tmp_path: Path) -> None:
    from garda.cli import dev_banner

    secret = "s3cr3t-Pa55"
    s = Settings(database_url=f"postgresql://garda:{secret}@db:5432/garda")
    banner = dev_banner(s, "garda_tok", None)
    assert secret not in banner
    assert "postgresql://garda:***@db:5432/garda" in banner

    pw_file = tmp_path / "pg" / "garda-password"
    embedded = Settings(database_url=f"postgresql://postgres:{secret}@127.0.0.1:5999/garda")
    banner = dev_banner(embedded, "garda_tok", pw_file)
    assert secret not in banner
    assert f'postgresql://postgres:$(cat {pw_file})@127.0.0.1:5999/garda"' in banner


def test_mask_url_leaves_a_url_without_password_alone() -> None:
    from infra.settings import mask_url

    assert mask_url("postgresql://garda@db/garda") == "postgresql://garda@db/garda"
    assert mask_url("postgresql://garda:pw@db/garda") == "postgresql://garda:***@db/garda"


def test_settings_built_in_code_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARDA_PARTITIONS", "12")
    assert Settings().partitions == 6
    assert load_settings(dotenv=None).partitions == 12


def test_replace_is_a_validated_copy() -> None:
    s = Settings(partitions=3)
    t = s.replace(web_port=9000)
    assert (t.partitions, t.web_port, s.web_port) == (3, 9000, 8080)
    with pytest.raises(ValueError, match="between 1 and 1024"):
        s.replace(partitions=0)


def test_an_unknown_variable_in_dotenv_fails_too(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GARDA_WEB_PROT=9000\n")
    with pytest.raises(ConfigError, match="unknown setting GARDA_WEB_PROT"):
        load_settings({}, dotenv=env_file)


def test_a_dotenv_line_without_a_value_fails(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GARDA_WEB_PORT\n")
    with pytest.raises(ConfigError, match="expected NAME=value"):
        load_settings({}, dotenv=env_file)


def test_invalid_float_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"GARDA_SESSION_TIMEOUT='soon' is not a valid float"):
        load_settings({"GARDA_SESSION_TIMEOUT": "soon"}, dotenv=None)
