"""Secrets quoted transformed (base64, percent-encoded, wrapped, cut short) are scrubbed too:
from provider error messages, transport errors and worker log lines, by one scrubber."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from functools import partial

import httpx
import pytest
import structlog

from contracts.errors import FleetError
from providers.core.errors import ErrorTable
from providers.core.http import (
    MAX_MESSAGE_CHARS,
    SecretForms,
    scrub,
    secret_forms,
    translate_transport_errors,
)
from providers.core.types import Secret
from workers.logs import LIVE_SECRETS, configure_logging

API_KEY = "sk-canary-7f3a9c1e5b2d4680aa11"
# Characters that percent-encoding changes ("/" and "+"), as in an AWS secret access key.
AWS_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SECRET = Secret({"api_key": API_KEY, "aws_secret_access_key": AWS_KEY, "region": "us-east-1"})


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _wrapped(key: str, sep: str) -> str:
    return sep.join(key[i : i + 7] for i in range(0, len(key), 7))


def transformed(key: str) -> dict[str, str]:
    """Each form a provider or a transport library may quote `key` in."""
    quoted = urllib.parse.quote(key, safe="")
    return {
        "verbatim": key,
        "basic": _b64(f"user:{key}"),
        "basic-email-user": _b64(f"someone@example.com:{key}"),
        "basic-key-as-user": _b64(f"{key}:"),
        "base64-alone": _b64(key),
        "base64-urlsafe-unpadded": base64.urlsafe_b64encode(key.encode()).decode().rstrip("="),
        "base64-json": _b64(json.dumps({"api_key": key, "n": 1})),
        "percent-encoded": quoted,
        "percent-encoded-path": urllib.parse.quote(key),
        "percent-encoded-lower-hex": re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quoted),
        "form-encoded": urllib.parse.quote_plus(key),
        "wrapped-lines": _wrapped(key, "\n"),
        "wrapped-spaces": _wrapped(key, " "),
        "wrapped-crlf-indented": _wrapped(key, "\r\n    "),
        "prefix": key[:20],
    }


CASES = [
    pytest.param(key, form, id=f"{name}-{form_name}")
    for name, key in (("api-key", API_KEY), ("aws-key", AWS_KEY))
    for form_name, form in transformed(key).items()
]


def assert_clean(text: str, key: str, form: str) -> None:
    squeezed = "".join(text.split())
    assert "".join(form.split()) not in squeezed, text
    assert key[:12] not in squeezed, text  # not even the start of the key
    assert "[redacted]" in text, text


def test_forms_differ_from_the_key() -> None:
    # Guards the cases above: each transformed form must really be transformed.
    for key in (API_KEY, AWS_KEY):
        forms = transformed(key)
        # API_KEY has no character percent-encoding changes: AWS_KEY stands for those.
        same = {"verbatim"} | ({n for n in forms if "encoded" in n} if key == API_KEY else set())
        assert all(form != key for name, form in forms.items() if name not in same), key
    assert urllib.parse.quote(AWS_KEY, safe="") != urllib.parse.quote(AWS_KEY)


@pytest.mark.parametrize(("key", "form"), CASES)
def test_scrub_removes_each_form(key: str, form: str) -> None:
    text = f"upstream said: {form} (see the docs)"
    out = scrub(text, SECRET)
    assert_clean(out, key, form)
    assert out.startswith("upstream said: ") and out.endswith(" (see the docs)")


@pytest.mark.parametrize(("key", "form"), CASES)
def test_error_table_messages_are_scrubbed(key: str, form: str) -> None:
    body = json.dumps({"error": {"message": f"Invalid credentials {form}", "type": "auth"}})
    headers = {"x-request-id": f"req-{form}"}
    error = ErrorTable().from_response("openai", 401, headers, body.encode(), SECRET)
    assert_clean(error.message, key, form)
    assert error.message.startswith("openai: HTTP 401 auth: Invalid credentials")
    assert_clean(error.provider_request_id or "", key, form)


def test_error_table_scrubs_a_plain_text_body() -> None:
    form = _b64(f"user:{API_KEY}")
    body = f"<html>401 Authorization: Basic {form}</html>".encode()
    error = ErrorTable().from_response("vllm", 401, {}, body, SECRET)
    assert_clean(error.message, API_KEY, form)


@pytest.mark.parametrize(("key", "form"), CASES)
def test_transport_errors_are_scrubbed(key: str, form: str) -> None:
    with (
        pytest.raises(FleetError) as caught,
        translate_transport_errors("openai", secret=SECRET),
    ):
        raise httpx.ConnectError(f"cannot connect to https://api.test/v1?key={form}&x=1")
    assert_clean(caught.value.message, key, form)
    assert caught.value.message.startswith("openai: connect failed: ConnectError: ")


@pytest.mark.parametrize("glued", ["https://", "/v1/", "Basic%20", "x+", "auth:a"])
def test_base64_glued_to_other_base64_characters(glued: str) -> None:
    # The run of base64 characters starts before the encoding does ("//", "%20" → "20").
    form = _b64(f"user:{AWS_KEY}")
    out = scrub(f"proxy {glued}{form}@proxy.local:8080", SECRET)
    assert_clean(out, AWS_KEY, form)
    assert out.startswith("proxy ") and out.endswith("@proxy.local:8080")


def test_a_long_transport_message_is_scrubbed_before_it_is_cut() -> None:
    form = _b64(f"user:{AWS_KEY}")
    # The encoded key straddles the message limit: scrubbed whole, then cut.
    head = "x" * (MAX_MESSAGE_CHARS - 10) + " "
    with pytest.raises(FleetError) as caught, translate_transport_errors("p", secret=SECRET):
        raise httpx.ReadError(head + form)
    assert form[:8] not in caught.value.message


@pytest.mark.parametrize(("key", "form"), CASES)
def test_worker_log_lines_are_scrubbed(key: str, form: str) -> None:
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    log = structlog.get_logger("t")
    with LIVE_SECRETS.holding(SECRET.values()):
        log.warning("provider_error", detail=f"upstream said {form}", extra=[f"x {form}"])
        logging.getLogger("thirdparty").warning("raw line with %s", form)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 2
    assert_clean(lines[0]["detail"], key, form)
    assert_clean(lines[0]["extra"][0], key, form)
    assert_clean(lines[1]["event"], key, form)


def test_log_forms_are_dropped_when_the_job_ends() -> None:
    out = io.StringIO()
    configure_logging("json", "DEBUG", stream=out)
    log = structlog.get_logger("t")
    encoded = _b64(f"user:{API_KEY}")
    with LIVE_SECRETS.holding([API_KEY]), LIVE_SECRETS.holding([API_KEY]):
        pass
    with LIVE_SECRETS.holding([API_KEY]):
        log.info("during", detail=encoded)
    log.info("after", detail=encoded)  # no job holds the key any more: nothing to scrub
    during, after = (json.loads(line) for line in out.getvalue().splitlines())
    assert during["detail"] == "[redacted]"
    assert after["detail"] == encoded


ORDINARY = [
    "The model `gpt-4o-mini` does not exist or you do not have access to it.",
    "Incorrect API key provided. You can find your API key at https://platform.openai.com/.",
    "Authorization: Basic dXNlcjpvdGhlci1wYXNzd29yZA==",  # user:other-password
    "Bearer " + _b64("a completely different token value 0123456789"),
    "request req_8f3a9c1e5b2d4680 failed; retry after 20s (rate_limit_exceeded)",
    "keys look like sk-canary- followed by hex; regions like us-east-1 are public",
    "authentication_failed insufficient_quota context_length_exceeded 'aGVsbG8gd29ybGQ='",
    "path /v1/chat/completions?api-version=2024-06-01&deployment=gpt4o-prod",
    "secret key token password user name %2F %2B + spaces",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub(text, SECRET) == text
    error = ErrorTable().from_response(
        "openai", 400, {}, json.dumps({"error": {"message": text}}).encode(), SECRET
    )
    assert error.message.endswith(text)


def test_short_values_are_matched_verbatim_only() -> None:
    # Shorter than 6 characters: their encodings and base64 runs would match by chance.
    short = Secret({"api_key": "abc"})
    assert scrub("see YWJj and abc", short) == "see YWJj and [redacted]"
    # Long enough for encodings, too short for a prefix or a wrapped match.
    medium = Secret({"api_key": "hunter2!x"})
    assert scrub(f"p={urllib.parse.quote('hunter2!x')}", medium) == "p=[redacted]"
    assert scrub(f"Basic {_b64('u:hunter2!x')}", medium) == "Basic [redacted]"
    assert scrub("hunter2 !x and hunter2", medium) == "hunter2 !x and hunter2"


def test_blank_values_match_nothing() -> None:
    assert scrub("a  b\n c", Secret({"api_key": "   "})) == "a  b\n c"
    assert not secret_forms(["", "  \n"])


def test_addresses_and_multi_line_values_need_a_whole_match() -> None:
    # The scheme and host of a credential's base_url are named by messages on their own.
    secret = Secret({"base_url": "https://llm.internal.example.com/v1"})
    assert scrub("connect to https://llm.internal.example.com/v2 failed", secret) == (
        "connect to https://llm.internal.example.com/v2 failed"
    )
    assert scrub("at https%3A%2F%2Fllm.internal.example.com%2Fv1", secret) == "at [redacted]"
    pem = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
    )
    collapsed = " ".join(pem.split())
    assert scrub(f"bad key: {collapsed}", Secret({"private_key": pem})) == "bad key: [redacted]"


def test_values_inside_one_another_are_removed_whole() -> None:
    secret = Secret({"api_key": "sk-outer-0123456789abcdef", "other": "0123456789"})
    assert scrub("x sk-outer-0123456789abcdef y", secret) == "x [redacted] y"
    assert scrub("0123456789 sk-outer-0123456789abcdef", secret) == "[redacted] [redacted]"


def test_forms_never_show_the_value() -> None:
    assert API_KEY not in repr(SecretForms(API_KEY))


def _scrub_with_new_secret(text: str, fields: dict[str, str]) -> str:
    return scrub(text, Secret(fields))


def test_scrub_cost_is_printed() -> None:
    """The cost of scrubbing a 300-character message with 5 secrets (run with -s)."""
    keys = [
        f"sk-live-{i}-" + "0123456789abcdef0123456789abcdef"[i:] + f"{i}x/y+z" for i in range(5)
    ]
    secret = Secret({f"field{i}": key for i, key in enumerate(keys)})
    words = "The upstream provider rejected the request: invalid_request_error for model "
    clean = (words * 5)[:MAX_MESSAGE_CHARS]
    basic = "Authorization: Basic " + _b64(f"user:{keys[3]}")
    dirty = (basic + " " + words * 4)[:MAX_MESSAGE_CHARS]
    assert len(clean) == len(dirty) == MAX_MESSAGE_CHARS
    assert scrub(clean, secret) == clean
    assert scrub(dirty, secret).startswith("Authorization: Basic [redacted] The upstream")
    fields = {f"field{i}": key for i, key in enumerate(keys)}

    def per_call(fn: Callable[[], object], n: int = 2000) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    costs: dict[str, float] = {}
    for name, text in (("no secret in it", clean), ("a Basic header in it", dirty)):
        costs[f"{name}, first scrub with a Secret (forms built)"] = per_call(
            partial(_scrub_with_new_secret, text, fields)
        )
        costs[f"{name}, later scrubs (forms kept on the Secret)"] = per_call(
            partial(scrub, text, secret)
        )
        with LIVE_SECRETS.holding(secret.values()):
            assert (LIVE_SECRETS.scrub(text) == text) is (text is clean)
            costs[f"{name}, a log string (LIVE_SECRETS)"] = per_call(
                partial(LIVE_SECRETS.scrub, text)
            )
    print()
    for what, micros in costs.items():
        print(f"scrub cost, 300 chars, 5 secrets: {what}: {micros:.1f} µs")
