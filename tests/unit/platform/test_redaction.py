"""The one redactor: no user info of a URI survives, other text is unchanged."""

from __future__ import annotations

import pytest

from adkd.platform.tracking.redaction import is_secret, redact, redact_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://user:pw@mlflow:5000/x", "http://mlflow:5000/x"),
        ("postgresql://adkd:p@ss@db.internal/mlflow", "postgresql://db.internal/mlflow"),  # '@' in the password
        ("https://ghp_token123@host/path", "https://host/path"),  # a token as the user name
        ("sqlite:////tmp/adkd-runs/mlflow.db", "sqlite:////tmp/adkd-runs/mlflow.db"),
        ("s3://bucket/mvtec_ad", "s3://bucket/mvtec_ad"),
        ("/data/x@y/mvtec", "/data/x@y/mvtec"),  # a path, not a URI
    ],
)
def test_redact_uri_drops_user_info_only(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_redact_strips_uris_inside_nested_params_and_drops_secrets() -> None:
    params = {"data": "s3://k:s@bucket/set", "s3": {"endpoint": "http://u:p@minio:9000"}, "hf_token": "t"}
    assert redact(params) == {"data": "s3://bucket/set", "s3": {"endpoint": "http://minio:9000"}}
    assert is_secret("AWS_SECRET_ACCESS_KEY") and is_secret("note", "AKIAABCDEFGHIJKLMNOP")
    assert not is_secret("model", "rd")
