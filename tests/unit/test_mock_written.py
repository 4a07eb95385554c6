"""The written part of every mock's answer: length, JSON, stop sequences."""

from __future__ import annotations

import json
import random

from providers.mock.written import written_answer

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}


def rng() -> random.Random:
    return random.Random(7)


def test_text_is_cap_long_and_a_smaller_limit_cuts_it() -> None:
    whole = written_answer(rng(), cap=12, max_tokens=None, stop=None)
    assert len(whole.pieces) == 12 and whole.ending == "complete"
    assert written_answer(rng(), cap=12, max_tokens=40, stop=None).ending == "complete"
    cut = written_answer(rng(), cap=12, max_tokens=5, stop=None)
    assert cut.pieces == whole.pieces[:5] and cut.ending == "length"


def test_json_follows_the_schema_and_is_cut_only_by_a_limit() -> None:
    answer = written_answer(rng(), cap=2, max_tokens=None, stop=None, schema=SCHEMA)
    assert answer.ending == "complete"
    assert set(json.loads("".join(answer.pieces))) == {"city", "days"}
    cut = written_answer(rng(), cap=2, max_tokens=3, stop=None, schema=SCHEMA)
    assert cut.ending == "length" and len(cut.pieces) == 3
    plain = written_answer(rng(), cap=2, max_tokens=None, stop=None, json_object=True)
    assert isinstance(json.loads("".join(plain.pieces)), dict)


def test_the_first_stop_sequence_cuts_and_is_named() -> None:
    whole = written_answer(rng(), cap=20, max_tokens=None, stop=None)
    word = whole.pieces[6].strip()
    cut = written_answer(rng(), cap=20, max_tokens=None, stop=["zzz-never", word])
    assert cut.ending == "stop_sequence" and cut.stop_sequence == word
    assert word not in "".join(cut.pieces)
