"""What a credential is scrubbed of: its secret values, not its configuration."""

from __future__ import annotations

from providers.core.types import Secret


def test_secret_values_skip_public_fields_and_split_pem_lines() -> None:
    pem = (
        "-----BEGIN PRIVATE KEY-----\n"
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nshort\n-----END PRIVATE KEY-----\n"
    )
    secret = Secret(
        {"api_version": "v1", "region": "us-east-1", "private_key": pem, "api_key": "k"}
    )
    values = secret.values()
    assert "v1" not in values and "us-east-1" not in values
    assert pem in values and "k" in values
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" in values
    assert "short" not in values
