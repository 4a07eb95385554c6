"""SigV4 signing, the path a model id takes, and where each request goes."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import time

import httpx
import pytest
import yarl
from botocore.auth import SigV4Auth as BotocoreSigV4
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from contracts.errors import BadRequest
from providers.bedrock.endpoints import (
    DEFAULT_BASE_URL,
    Endpoints,
    foundation_model_arn,
    model_path,
    resolve,
)
from providers.bedrock.sigv4 import SigV4Auth, credentials_of, sign
from providers.core.types import Secret

AKID = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
FIXED = datetime.datetime(2024, 5, 1, 12, 30, 45)
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v1:0"


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: FIXED)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def reference_signature(canonical_uri: str, body: bytes, host: str) -> str:
    """SigV4 written out by hand from AWS's documentation, independent of botocore."""
    amz_date = FIXED.strftime("%Y%m%dT%H%M%SZ")
    canonical = "\n".join(
        [
            "POST",
            canonical_uri,
            "",
            f"content-type:application/json\nhost:{host}\nx-amz-date:{amz_date}\n",
            "content-type;host;x-amz-date",
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/us-east-1/bedrock/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{SECRET_KEY}".encode(), amz_date[:8])
    for part in ("us-east-1", "bedrock", "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def signed_request(url: str, body: bytes = b'{"messages":[]}') -> httpx.Request:
    request = httpx.Request(
        "POST",
        url,
        content=body,
        headers={"Content-Type": "application/json", "User-Agent": "x", "Accept": "y"},
    )
    sign(request, Credentials(AKID, SECRET_KEY), "us-east-1")
    return request


@pytest.mark.usefixtures("fixed_clock")
@pytest.mark.parametrize(
    ("model", "canonical"),
    [
        (MODEL, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
        (
            ARN,
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile"
            "%252Fus.anthropic.claude-v1%3A0/converse",
        ),
    ],
)
def test_known_answer_with_a_colon_and_a_slash(model: str, canonical: str) -> None:
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    request = signed_request(f"https://{host}{model_path(model, 'converse')}")
    auth = request.headers["Authorization"]
    assert auth.startswith(
        f"AWS4-HMAC-SHA256 Credential={AKID}/20240501/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature="
    )
    assert request.headers["X-Amz-Date"] == "20240501T123045Z"
    assert "X-Amz-Security-Token" not in request.headers
    assert auth.endswith(reference_signature(canonical, request.content, host))


@pytest.mark.usefixtures("fixed_clock")
def test_boto3_style_path_is_signed_double_encoded() -> None:
    # What boto3 puts on the wire (`%3A`) is signed as `%253A`, by botocore as by hand.
    host = "bedrock-runtime.us-east-1.amazonaws.com"
    request = signed_request(f"https://{host}/model/anthropic.claude-v1%3A0/converse")
    assert request.url.raw_path == b"/model/anthropic.claude-v1%3A0/converse"
    expected = reference_signature(
        "/model/anthropic.claude-v1%253A0/converse", request.content, host
    )
    assert request.headers["Authorization"].endswith(expected)


@pytest.mark.usefixtures("fixed_clock")
def test_same_signature_as_botocore_and_the_session_token() -> None:
    url = f"http://127.0.0.1:9/bedrock{model_path(ARN, 'converse-stream')}"
    credentials = Credentials(AKID, SECRET_KEY, "the-session-token")
    request = httpx.Request(
        "POST", url, content=b"{}", headers={"Content-Type": "application/json"}
    )
    sign(request, credentials, "us-east-1")
    reference = AWSRequest(
        method="POST",
        url=url,
        headers={"host": "127.0.0.1:9", "content-type": "application/json"},
        data=b"{}",
    )
    BotocoreSigV4(credentials, "bedrock", "us-east-1").add_auth(reference)
    assert request.headers["Authorization"] == reference.headers["Authorization"]
    assert request.headers["X-Amz-Security-Token"] == "the-session-token"
    assert "x-amz-security-token" in request.headers["Authorization"]


@pytest.mark.parametrize(
    "model",
    [MODEL, ARN, "mock-model", "a b+c@d,e=f;g", "cohere.embed-v4:0", "x%y", "ünïcode:1"],
)
def test_paths_leave_httpx_and_yarl_unchanged(model: str) -> None:
    """The aiohttp transport hands the URL to yarl, which decodes `%3A`: the path must
    be one yarl and httpx both send byte for byte as built (and so as signed)."""
    url = "https://h.example" + model_path(model, "converse")
    assert (
        httpx.URL(url).raw_path.decode()
        == yarl.URL(url).raw_path
        == url[len("https://h.example") :]
    )
    assert yarl.URL(url).path == f"/model/{model}/converse"


def test_the_auth_signs_every_send_and_hides_its_credentials() -> None:
    auth = SigV4Auth(Credentials(AKID, SECRET_KEY), "eu-west-1")
    assert SECRET_KEY not in repr(auth) and AKID not in repr(auth)
    request = httpx.Request("POST", "https://x.example/model/m/converse", content=b"{}")
    flow = auth.sync_auth_flow(request)
    sent = next(flow)
    assert "/eu-west-1/bedrock/aws4_request" in sent.headers["Authorization"]


def test_credentials_are_checked_without_echoing_them() -> None:
    with pytest.raises(BadRequest, match="access_key_id and secret_access_key") as info:
        credentials_of("bedrock", Secret({"access_key_id": "AKID"}))
    assert "AKID" not in str(info.value)
    with pytest.raises(BadRequest, match="not a valid header") as bad:
        credentials_of("bedrock", Secret({"access_key_id": "A", "secret_access_key": "s\nx"}))
    assert "s\nx" not in str(bad.value)


def test_signing_cost_per_request() -> None:
    """Not a timed assertion: the figure is printed (run with -s) for the report."""
    credentials = Credentials(AKID, SECRET_KEY)
    body = b'{"messages":[{"role":"user","content":[{"text":"' + b"x" * 2000 + b'"}]}]}'
    url = "https://bedrock-runtime.us-east-1.amazonaws.com" + model_path(MODEL, "converse")
    rounds = 2000
    requests = [
        httpx.Request("POST", url, content=body, headers={"Content-Type": "application/json"})
        for _ in range(rounds)
    ]
    start = time.perf_counter()
    for request in requests:
        sign(request, credentials, "us-east-1")
    per_request = (time.perf_counter() - start) / rounds
    print(f"\nSigV4 signing (botocore, 2 KB body): {per_request * 1e6:.0f} µs per request")
    assert per_request > 0


# -- endpoints ------------------------------------------------------------------------


def secret(**fields: str) -> Secret:
    return Secret({"access_key_id": AKID, "secret_access_key": SECRET_KEY, **fields})


def test_default_hosts_follow_the_region_and_its_partition() -> None:
    assert resolve("bedrock", DEFAULT_BASE_URL, secret(region="eu-west-3")) == Endpoints(
        "eu-west-3",
        runtime="https://bedrock-runtime.eu-west-3.amazonaws.com",
        control="https://bedrock.eu-west-3.amazonaws.com",
        agent="https://bedrock-agent-runtime.eu-west-3.amazonaws.com",
    )
    china = resolve("bedrock", None, secret(region="cn-north-1"))
    assert china.control == "https://bedrock.cn-north-1.amazonaws.com.cn"
    fips = resolve(
        "bedrock", "https://bedrock-runtime-fips.{region}.amazonaws.com", secret(region="us-west-2")
    )
    assert fips.agent == "https://bedrock-agent-runtime-fips.us-west-2.amazonaws.com"


def test_an_override_takes_every_path() -> None:
    for base in (
        "http://127.0.0.1:8900/bedrock/",
        "https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com",
    ):
        endpoints = resolve("bedrock", DEFAULT_BASE_URL, secret(region="us-east-1", base_url=base))
        assert endpoints.runtime == endpoints.control == endpoints.agent == base.rstrip("/")


def test_regions_are_checked_before_they_reach_a_url() -> None:
    for region in ("", "us-east-1.evil.com", "US-EAST-1", "us-east-1/x", "useast1"):
        with pytest.raises(BadRequest):
            resolve("bedrock", DEFAULT_BASE_URL, secret(region=region))
    with pytest.raises(BadRequest, match="base_url is in region 'us-west-2'"):
        resolve(
            "bedrock",
            None,
            secret(region="us-east-1", base_url="https://bedrock-runtime.us-west-2.amazonaws.com"),
        )


def test_foundation_model_arns() -> None:
    assert foundation_model_arn("amazon.rerank-v1:0", "us-west-2") == (
        "arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0"
    )
    assert foundation_model_arn(ARN, "eu-west-1") == ARN
