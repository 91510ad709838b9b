"""Settings: environment first, then the connection file; passwords never shown."""

from __future__ import annotations

import json

import pytest

from jupyter_celery.core.errors import ConfigurationError
from jupyter_celery.core.settings import Settings, redact_url

BROKER = "JUPYTER_CELERY_BROKER_URL"


def env(tmp_path, **values):
    return {
        "JUPYTER_CELERY_STATE_DIR": str(tmp_path),
        **{f"JUPYTER_CELERY_{k}": v for k, v in values.items()},
    }


def test_urls_default_to_the_broker(tmp_path):
    s = Settings.from_env(env(tmp_path, BROKER_URL="redis://localhost:1/0"))
    assert s.result_url == s.events_url == s.broker_url == "redis://localhost:1/0"
    assert s.store_url == (tmp_path / "store").as_uri()
    assert s.inline_limit == 32 * 1024


def test_each_url_can_be_separate(tmp_path):
    s = Settings.from_env(
        env(tmp_path, BROKER_URL="redis://b:1/0", RESULT_URL="redis://r:2/1", EVENTS_URL="redis://e:3/2",
            STORE_URL="file:///data/jc", INLINE_LIMIT="100", OWNER="ada")
    )  # fmt: skip
    assert (s.broker_url, s.result_url, s.events_url) == ("redis://b:1/0", "redis://r:2/1", "redis://e:3/2")
    assert (s.store_url, s.inline_limit, s.owner) == ("file:///data/jc", 100, "ada")


def test_s3_store_settings(tmp_path):
    s = Settings.from_env(
        env(tmp_path, BROKER_URL="redis://b:1/0", STORE_URL="s3://bucket/team/prefix",
            S3_ENDPOINT_URL="http://minio:9000", S3_PART_MB="16", FRAME_FORMAT="parquet")
    )  # fmt: skip
    assert (s.store_url, s.s3_endpoint_url, s.s3_part_size, s.frame_format) == (
        "s3://bucket/team/prefix", "http://minio:9000", 16 << 20, "parquet",
    )  # fmt: skip
    defaults = Settings.from_env(env(tmp_path, BROKER_URL="redis://b:1/0"))
    assert (defaults.s3_endpoint_url, defaults.s3_part_size, defaults.frame_format) == ("", 64 << 20, "ipc")
    assert defaults.redacted()["s3 endpoint"] == "(AWS)"


def test_settings_are_frozen(tmp_path):
    s = Settings.from_env(env(tmp_path, BROKER_URL="redis://localhost:1/0"))
    with pytest.raises(AttributeError):
        s.broker_url = "redis://elsewhere"  # type: ignore[misc]


def test_connection_file_is_the_fallback(tmp_path):
    (tmp_path / "stack.json").write_text(
        json.dumps({"broker_url": "redis://127.0.0.1:7777/0", "store_url": "file:///x", "processes": []})
    )
    s = Settings.from_env(env(tmp_path))
    assert s.broker_url == "redis://127.0.0.1:7777/0"
    assert s.store_url == "file:///x"
    assert s.source == str(tmp_path / "stack.json")
    s = Settings.from_env(env(tmp_path, BROKER_URL="redis://other:1/0"))
    assert s.broker_url == "redis://other:1/0"  # the environment wins


def test_not_configured_says_what_to_do(tmp_path):
    with pytest.raises(ConfigurationError, match="jupyter-celery up"):
        Settings.from_env(env(tmp_path))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BROKER_URL", "amqp://localhost", "must be a Redis URL"),
        ("INLINE_LIMIT", "lots", "must be an integer"),
        ("INLINE_LIMIT", "-1", "must be >= 0"),
        ("STORE_URL", "ftp://x/y", "STORE_URL"),
        ("STORE_URL", "s3:///no-bucket", "s3://bucket/prefix"),
        ("S3_ENDPOINT_URL", "minio:9000", "http"),
        ("S3_PART_MB", "4", "at least 5"),
        ("FRAME_FORMAT", "feather", "ipc, parquet"),
        ("OWNER", "a/b", "OWNER"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path, name, value, message):
    values = {"BROKER_URL": "redis://localhost:1/0", name: value}
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env(tmp_path, **values))


def test_passwords_are_redacted_in_repr_and_str(tmp_path):
    s = Settings.from_env(
        env(tmp_path, BROKER_URL="redis://:hunter2@h:6379/0", EVENTS_URL="redis://user:hunter3@h:6380/0")
    )
    for text in (repr(s), str(s), json.dumps(s.redacted())):
        assert "hunter2" not in text
        assert "hunter3" not in text
    assert "redis://:***@h:6379/0" in repr(s)
    assert "redis://user:***@h:6380/0" in repr(s)


def test_redact_url_keeps_urls_without_password():
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert redact_url("rediss://:p@h/1") == "rediss://:***@h/1"


def test_user_name_without_password_warns(tmp_path):
    with pytest.warns(UserWarning, match="redis://:PASSWORD@host"):
        Settings.from_env(env(tmp_path, BROKER_URL="redis://secret@localhost:6379/0"))
