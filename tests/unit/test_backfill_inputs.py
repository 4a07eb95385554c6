"""Backfill input readers: JSON lines and CSV files (the PostgreSQL query reader is an
integration test: tests/integration/test_backfill_postgres_io.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from workers.backfill.inputs import InputSpec, dsn_without_password, open_input
from workers.backfill.items import BackfillError, BadRow, Item


async def read_all(spec: InputSpec) -> tuple[list[Item | BadRow], int]:
    source = await open_input(spec)
    try:
        rows = [row async for row in source.rows()]
        return rows, await source.count()
    finally:
        await source.close()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# -- JSON lines ----------------------------------------------------------------------------


async def test_jsonl_rows_in_order_with_positions_skipping_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.jsonl",
        b'{"id": "a", "text": "first", "other": [1, 2]}\n'
        b"\n"
        b"   \n"
        b'{"id": 7, "text": "second"}\n'
        b'{"text": "third", "id": "c"}',  # no newline at the end of the file
    )
    rows, count = await read_all(InputSpec(path=path))
    assert rows == [Item(0, "a", "first"), Item(1, "7", "second"), Item(2, "c", "third")]
    assert count == 3


async def test_jsonl_bad_lines_are_bad_rows_and_reading_goes_on(tmp_path: Path) -> None:
    lines = [
        b'{"id": "ok1", "text": "fine"}',
        b"{not json",
        b'{"id": "x", "text": "\xff\xfe"}',
        b"[1, 2]",
        b'{"text": "no id"}',
        b'{"id": true, "text": "bool id"}',
        b'{"id": 1.5, "text": "float id"}',
        b'{"id": null, "text": "null id"}',
        b'{"id": "", "text": "empty id"}',
        b'{"id": "t1", "text": 12}',
        b'{"id": "t2"}',
        b'{"id": {"a": 1}, "text": "object id"}',
        b'{"id": "ok2", "text": ""}',
    ]
    path = write(tmp_path / "in.jsonl", b"\n".join(lines) + b"\n")
    rows, count = await read_all(InputSpec(path=path))
    assert count == len(lines) == len(rows)
    assert [r.position for r in rows] == list(range(len(lines)))
    assert rows[0] == Item(0, "ok1", "fine")
    assert rows[-1] == Item(12, "ok2", "")  # empty text is the runner's to refuse
    bad = {r.position: r for r in rows if isinstance(r, BadRow)}
    assert sorted(bad) == list(range(1, 12))
    assert bad[1].reason.startswith("line 2: not valid JSON")
    assert bad[2].reason == "line 3: not valid UTF-8"
    assert bad[3].reason == "line 4: not a JSON object"
    assert bad[4].reason == "line 5: field 'id' is missing"
    assert bad[5].reason == "line 6: field 'id' must be a string or an integer, got a boolean"
    assert bad[6].reason == "line 7: field 'id' must be a string or an integer, got a number"
    assert bad[7].reason == "line 8: field 'id' must be a string or an integer, got null"
    assert bad[8].reason == "line 9: field 'id' is empty"
    assert bad[9] == BadRow(9, "t1", "line 10: field 'text' must be a string, got a number")
    assert bad[10] == BadRow(10, "t2", "line 11: field 'text' is missing")
    assert bad[11].reason.endswith("got an object")
    assert all(b.id is None for p, b in bad.items() if p not in (9, 10))


async def test_jsonl_line_numbers_count_blank_lines_positions_do_not(tmp_path: Path) -> None:
    path = write(tmp_path / "in.ndjson", b'\n\n{"id": "a", "text": "x"}\n\n"oops"\n')
    rows, _ = await read_all(InputSpec(path=path))
    assert rows == [Item(0, "a", "x"), BadRow(1, None, "line 5: not a JSON object")]


async def test_jsonl_field_names_from_the_spec(tmp_path: Path) -> None:
    path = write(tmp_path / "docs.data", b'{"doc_id": 12345678901234567890, "body": "b"}\n')
    rows, _ = await read_all(
        InputSpec(path=path, format="jsonl", id_field="doc_id", text_field="body")
    )
    assert rows == [Item(0, "12345678901234567890", "b")]


async def test_reading_hands_the_loop_back(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.jsonl",
        b"".join(b'{"id": "%d", "text": "t"}\n' % i for i in range(5_000)),
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    source = await open_input(InputSpec(path=path))
    started = ticks
    n = 0
    async for _ in source.rows():
        n += 1
    task.cancel()
    assert n == 5_000
    assert ticks - started >= 4  # at least one turn per 1,000 rows


# -- CSV -----------------------------------------------------------------------------------


async def test_csv_rows_quoted_multiline_bom_and_blank_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.csv",
        b'\xef\xbb\xbfid,title,text\r\n1,t,"hello, world"\r\n\r\n2,t,"two\nlines ""quoted"""\r\n',
    )
    rows, count = await read_all(InputSpec(path=path))
    assert rows == [Item(0, "1", "hello, world"), Item(1, "2", 'two\nlines "quoted"')]
    assert count == 2


async def test_csv_bad_rows_do_not_stop_the_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.csv",
        b'id,text\na,ok\n\nb,bad \xff bytes\nc\n,no id\n\xfe,bad id\nd,"after\nall"\n',
    )
    rows, count = await read_all(InputSpec(path=path))
    assert count == 6
    assert rows == [
        Item(0, "a", "ok"),
        BadRow(1, "b", "row 2 (line 4): field 'text' is not valid UTF-8"),
        BadRow(2, "c", "row 3 (line 5): has 1 fields, fewer than the header"),
        BadRow(3, None, "row 4 (line 6): field 'id' is empty"),
        BadRow(4, None, "row 5 (line 7): field 'id' is not valid UTF-8"),
        Item(5, "d", "after\nall"),
    ]


async def test_csv_large_fields(tmp_path: Path) -> None:
    big = "x" * 1_000_000  # past the csv module's default limit of 128 KiB
    path = write(tmp_path / "in.csv", f'id,text\n1,"{big}"\n2,small\n'.encode())
    rows, _ = await read_all(InputSpec(path=path))
    assert rows == [Item(0, "1", big), Item(1, "2", "small")]


async def test_csv_header_must_name_the_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", b"key,body\n1,x\n")
    with pytest.raises(
        BackfillError, match=r"no column 'id' or 'text'; its header names: 'key', 'body'"
    ):
        await open_input(InputSpec(path=path))
    rows, _ = await read_all(InputSpec(path=path, id_field="key", text_field="body"))
    assert rows == [Item(0, "1", "x")]


async def test_csv_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackfillError, match="needs a header row"):
        await open_input(InputSpec(path=write(tmp_path / "in.csv", b"")))


# -- the spec ------------------------------------------------------------------------------


async def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(BackfillError, match="does not exist"):
        await open_input(InputSpec(path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(BackfillError, match="cannot tell the format"):
        await open_input(InputSpec(path=write(tmp_path / "in.txt", b"")))
    with pytest.raises(BackfillError, match="stdin"):
        await open_input(InputSpec(path="-"))
    with pytest.raises(BackfillError, match="exactly one input"):
        await open_input(InputSpec())
    with pytest.raises(BackfillError, match="needs a PostgreSQL DSN"):
        await open_input(InputSpec(query="SELECT 1"))
    with pytest.raises(BackfillError, match="two different names"):
        await open_input(InputSpec(path=write(tmp_path / "a.jsonl", b""), text_field="id"))


def test_describe_names_the_absolute_path_and_hides_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert InputSpec(path="in.csv", id_field="k").describe() == {
        "path": str(tmp_path / "in.csv"),
        "format": "csv",
        "id_field": "k",
        "text_field": "text",
    }
    described = InputSpec(query="SELECT 1", dsn="postgresql://u:s3cret@h:5/db").describe()
    assert described["dsn"] == "postgresql://u@h:5/db"
    assert "s3cret" not in repr(described)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u@h/db"),
        (
            "postgresql://h/db?password=pw&sslmode=require",
            "postgresql://h/db?password=%2A%2A%2A&sslmode=require",
        ),
        ("postgres://u@h:1,h2:2/db", "postgres://u@h:1,h2:2/db"),
        ("host=h password='p w' user=u", "host=h password=*** user=u"),
        ("host=h PASSWORD = pw dbname=d", "host=h password=*** dbname=d"),
    ],
)
def test_dsn_without_password(dsn: str, shown: str) -> None:
    assert dsn_without_password(dsn) == shown
