"""A provider's content or safety filter: a blocked prompt, an answer stopped part way.

Every dialect says it its own way (a 400 `content_filter`, `finish_reason:
content_filter`, `promptFeedback.blockReason`, `finishReason: SAFETY`, `stop_reason:
refusal`, `guardrail_intervened`); the fleet says `ContentFiltered`, never retried,
and never passes off a cut answer as a finished one.
"""

from __future__ import annotations

from contracts.errors import ContentFiltered
from providers.registry import Provider
from tests.conformance.support import (
    MockAdmin,
    chat_error,
    chat_request,
    check_failure,
    require_content_filter,
    stream_error,
)


async def test_blocked_prompt(provider: Provider, model: str, path: str, admin: MockAdmin) -> None:
    require_content_filter(provider)
    await admin.fault("filtered", model)
    if path == "chat":
        error = await chat_error(provider, chat_request(model))
    else:
        error, got = await stream_error(provider, chat_request(model))
        assert not got.texts, "text streamed for a blocked prompt"
        assert not got.ends
        await admin.assert_no_open_streams()
    check_failure(error, provider, ContentFiltered, retryable=False)


async def test_answer_stopped_by_the_filter(
    provider: Provider, model: str, path: str, admin: MockAdmin
) -> None:
    require_content_filter(provider)
    await admin.fault("filtered-after:3", model)
    if path == "chat":
        error = await chat_error(provider, chat_request(model))
    else:
        error, got = await stream_error(provider, chat_request(model))
        # What was streamed before the filter stepped in stays streamed; no StreamEnd
        # claims the answer finished.
        assert len(got.texts) <= 3, got.texts
        assert not got.ends
        await admin.assert_no_open_streams()
    check_failure(error, provider, ContentFiltered, retryable=False)
