"""Input readers: a JSON-lines file, a CSV file or a PostgreSQL query, as a stream of rows.

Every reader yields rows in one order that is the same on every run (file order, or the
query ordered by its id), numbered by `position`, so a rerun meets the same rows in the
same places. A row that cannot become an `Item` is a `BadRow` and reading goes on: one
broken line in ten million must not stop a backfill, and it must not vanish either (the
runner records it as a rejection).

Files are read synchronously in small pieces; the readers hand the loop back every
`_YIELD_EVERY` rows so the runner's other tasks keep running. `count()` is a separate
pass (in a thread for files), so progress can show a total before anything is sent.
"""

from __future__ import annotations

import asyncio
import csv
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal, Protocol, TextIO

import asyncpg
import msgspec

from workers.backfill.items import BackfillError, BadRow, Item, format_from_suffix
from workers.migrate import quote_ident

__all__ = ["InputSource", "InputSpec", "dsn_without_password", "open_input"]

_YIELD_EVERY: Final = 1_000
_SUFFIXES: Final[dict[str, Literal["jsonl", "csv"]]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json-lines": "jsonl",
    ".csv": "csv",
}
# Far beyond any embedding model's input, yet a runaway quote stops here instead of
# swallowing the rest of a huge file into one field in memory.
_CSV_FIELD_LIMIT: Final = 256 * 1024 * 1024
_QUERY_PREFETCH: Final = 1_000
_PASSWORD_WORD: Final = re.compile(r"(?i)\bpassword\s*=\s*(?:'(?:[^'\\]|\\.)*'|\S+)")


def dsn_without_password(dsn: str) -> str:
    """A DSN (URL or libpq key=value form) with any password taken out, fit to show or store."""
    if "://" not in dsn:
        return _PASSWORD_WORD.sub("password=***", dsn).strip()
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = userinfo.partition(":")[0] + "@" + hosts
    query = urllib.parse.urlencode(
        [
            (k, "***" if k.lower() == "password" else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


@dataclass(frozen=True, slots=True)
class InputSpec:
    path: str | None = None  # a .jsonl/.ndjson/.json-lines or .csv file ("-" is not supported)
    format: Literal["jsonl", "csv"] | None = None  # None: from the suffix
    query: str | None = None  # a PostgreSQL query, with dsn
    dsn: str | None = None
    id_field: str = "id"
    text_field: str = "text"

    def resolved_format(self) -> Literal["jsonl", "csv", "query"]:
        """Which reader this spec needs; BackfillError when the spec is incomplete or mixed."""
        if (self.path is None) == (self.query is None):
            raise BackfillError("give exactly one input: a file or a PostgreSQL query")
        if not self.id_field or not self.text_field or self.id_field == self.text_field:
            raise BackfillError(
                f"the id and text fields must be two different names; "
                f"got {self.id_field!r} and {self.text_field!r}"
            )
        if self.query is not None:
            if not self.dsn:
                raise BackfillError("an input query needs a PostgreSQL DSN")
            return "query"
        assert self.path is not None
        if self.path == "-":
            raise BackfillError("reading the input from stdin is not supported: give a file")
        if self.format is not None:
            return self.format
        return format_from_suffix(self.path, _SUFFIXES)

    def describe(self) -> dict[str, str]:
        """What the checkpoint records about the input (no password)."""
        fields = {"id_field": self.id_field, "text_field": self.text_field}
        fmt = self.resolved_format()
        if fmt == "query":
            assert self.query is not None and self.dsn is not None
            return {"query": self.query, "dsn": dsn_without_password(self.dsn), **fields}
        assert self.path is not None
        return {"path": str(Path(self.path).resolve()), "format": fmt, **fields}


class InputSource(Protocol):
    async def count(self) -> int:
        """How many rows `rows()` will yield (a pass over the file, or a count query)."""
        ...

    def rows(self) -> AsyncIterator[Item | BadRow]:
        """Every row in input order, streaming, in constant memory."""
        ...

    async def close(self) -> None: ...


async def open_input(spec: InputSpec) -> InputSource:
    """The reader for `spec`, checked.

    BackfillError: a missing file, a CSV header without the columns, a query that fails or
    lacks the columns, a database that cannot be reached.
    """
    fmt = spec.resolved_format()
    if fmt == "query":
        return await _QuerySource.connect(spec)
    assert spec.path is not None
    path = Path(spec.path)
    if not await asyncio.to_thread(path.is_file):
        raise BackfillError(f"input {path} does not exist or is not a file")
    if fmt == "jsonl":
        return _JsonlSource(path, spec.id_field, spec.text_field)
    source = _CsvSource(path, spec.id_field, spec.text_field)
    await asyncio.to_thread(source.check_header)
    return source


# -- JSON lines ----------------------------------------------------------------------------


def _usable_id(value: object) -> str | None:
    """The id as a string when it is a non-empty string or an integer (not a bool)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class _JsonlSource:
    def __init__(self, path: Path, id_field: str, text_field: str) -> None:
        self.path = path
        self.id_field = id_field
        self.text_field = text_field
        # The fast path decodes only the two fields; anything it refuses is decoded again,
        # generically, to say precisely what is wrong with the line.
        row_type = msgspec.defstruct(
            "Row",
            [("row_id", str | int), ("row_text", str)],
            rename={"row_id": id_field, "row_text": text_field},
        )
        self.decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(row_type)

    async def count(self) -> int:
        return await asyncio.to_thread(self._count)

    async def close(self) -> None:
        """Nothing to release: every pass opens the file for itself."""

    def _count(self) -> int:
        with self.path.open("rb") as f:
            return sum(1 for line in f if line.strip())

    async def rows(self) -> AsyncIterator[Item | BadRow]:
        with self.path.open("rb") as f:
            for position, (line_no, line) in enumerate(_content_lines(f)):
                yield self._row(position, line_no, line)
                if position % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)

    def _row(self, position: int, line_no: int, line: bytes) -> Item | BadRow:
        try:
            row = self.decoder.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return self._bad_row(position, line_no, line)
        row_id = _usable_id(row.row_id)
        if row_id is None:
            return self._bad_row(position, line_no, line)
        return Item(position, row_id, row.row_text)

    def _bad_row(self, position: int, line_no: int, line: bytes) -> BadRow:
        where = f"line {line_no}"
        try:
            value = msgspec.json.decode(line)
        except UnicodeDecodeError:
            return BadRow(position, None, f"{where}: not valid UTF-8")
        except msgspec.DecodeError as exc:
            return BadRow(position, None, f"{where}: not valid JSON ({exc})")
        if not isinstance(value, dict):
            return BadRow(position, None, f"{where}: not a JSON object")
        row_id = _usable_id(value.get(self.id_field))
        return BadRow(position, row_id, f"{where}: {self._problem(value, row_id)}")

    def _problem(self, row: dict[str, Any], row_id: str | None) -> str:
        for name in (self.id_field, self.text_field):
            if name not in row:
                return f"field {name!r} is missing"
        if row_id is None:
            value = row[self.id_field]
            if value == "":
                return f"field {self.id_field!r} is empty"
            wanted = "a string or an integer"
            return f"field {self.id_field!r} must be {wanted}, got {_json_kind(value)}"
        text = row[self.text_field]
        if not isinstance(text, str):
            return f"field {self.text_field!r} must be a string, got {_json_kind(text)}"
        return "unreadable row"  # the fast decoder refused what the generic one accepts


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def _content_lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every line that is not blank."""
    for line_no, line in enumerate(f, start=1):
        if line.strip():
            yield line_no, line


# -- CSV -----------------------------------------------------------------------------------


class _CsvSource:
    def __init__(self, path: Path, id_field: str, text_field: str) -> None:
        self.path = path
        self.id_field = id_field
        self.text_field = text_field
        self.id_column = -1
        self.text_column = -1
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))

    def _open(self) -> TextIO:
        # surrogateescape: undecodable bytes survive as lone surrogates, so one bad row is
        # found and refused instead of ending the read; utf-8-sig drops a leading BOM.
        return self.path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")

    def check_header(self) -> None:
        with self._open() as f:
            reader = csv.reader(f)
            _, header = self._next(reader)
            if header is None:
                raise BackfillError(f"{self.path} is empty: a CSV input needs a header row")
        missing = [n for n in (self.id_field, self.text_field) if n not in header]
        if missing:
            found = ", ".join(repr(h) for h in header)
            raise BackfillError(
                f"{self.path} has no column {' or '.join(map(repr, missing))}; "
                f"its header names: {found}"
            )
        self.id_column = header.index(self.id_field)
        self.text_column = header.index(self.text_field)

    def _next(self, reader: Any) -> tuple[int, list[str] | None]:
        """(first line, the next non-empty record), or (_, None) at the end.

        A broken file is the user's to fix.
        """
        try:
            first_line = reader.line_num + 1
            while (record := next(reader, None)) is not None:
                if record:
                    return first_line, list(record)
                first_line = reader.line_num + 1
        except csv.Error as exc:
            # After a structural error the parser is inside a field: rows read from there
            # on would be fragments, and a fragment can look like a valid row.
            raise BackfillError(
                f"{self.path}: line {reader.line_num}: {exc}; fix the file"
            ) from exc
        return first_line, None

    async def count(self) -> int:
        return await asyncio.to_thread(self._count)

    async def close(self) -> None:
        """Nothing to release: every pass opens the file for itself."""

    def _count(self) -> int:
        with self._open() as f:
            reader = csv.reader(f)
            self._next(reader)
            n = 0
            while self._next(reader)[1] is not None:
                n += 1
            return n

    async def rows(self) -> AsyncIterator[Item | BadRow]:
        with self._open() as f:
            reader = csv.reader(f)
            self._next(reader)
            position = 0
            while True:
                first_line, record = self._next(reader)
                if record is None:
                    return
                yield self._row(position, f"row {position + 1} (line {first_line})", record)
                position += 1
                if position % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)

    def _row(self, position: int, where: str, record: list[str]) -> Item | BadRow:
        width = max(self.id_column, self.text_column) + 1
        row_id = record[self.id_column] if len(record) > self.id_column else None
        if row_id is not None and (not row_id or _has_surrogates(row_id)):
            row_id = None
        if len(record) < width:
            return BadRow(
                position, row_id, f"{where}: has {len(record)} fields, fewer than the header"
            )
        if row_id is None:
            problem = "is empty" if not record[self.id_column] else "is not valid UTF-8"
            return BadRow(position, None, f"{where}: field {self.id_field!r} {problem}")
        text = record[self.text_column]
        if _has_surrogates(text):
            return BadRow(
                position, row_id, f"{where}: field {self.text_field!r} is not valid UTF-8"
            )
        return Item(position, row_id, text)


def _has_surrogates(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# -- PostgreSQL query ----------------------------------------------------------------------


def _bare_query(query: str) -> str:
    # A trailing semicolon is natural on a command line and fatal inside a subquery.
    return query.strip().rstrip(";").strip()


class _QuerySource:
    def __init__(self, spec: InputSpec, conn: asyncpg.Connection) -> None:
        assert spec.query is not None and spec.dsn is not None
        self.dsn = spec.dsn
        self.conn = conn
        query = _bare_query(spec.query)
        id_col, text_col = quote_ident(spec.id_field), quote_ident(spec.text_field)
        # Ordered by id so a rerun meets the rows in the same order and positions.
        self.select = (
            f"SELECT (q.{id_col})::text, (q.{text_col})::text"
            f" FROM ({query}) AS q ORDER BY q.{id_col}"
        )
        self.count_sql = f"SELECT count(*) FROM ({query}) AS q"

    @classmethod
    async def connect(cls, spec: InputSpec) -> _QuerySource:
        assert spec.query is not None and spec.dsn is not None
        conn = await _connect(spec.dsn)
        try:
            await _check_columns(conn, _bare_query(spec.query), (spec.id_field, spec.text_field))
        except BaseException:
            await conn.close()
            raise
        return cls(spec, conn)

    async def count(self) -> int:
        # Its own connection: the row cursor may be open on the main one.
        conn = await _connect(self.dsn)
        try:
            async with conn.transaction(readonly=True):
                n: int = await conn.fetchval(self.count_sql)
            return n
        except asyncpg.PostgresError as exc:
            raise BackfillError(f"counting the input query's rows failed: {exc}") from exc
        finally:
            await conn.close()

    async def rows(self) -> AsyncIterator[Item | BadRow]:
        async with self.conn.transaction(readonly=True):
            cursor = self.conn.cursor(self.select, prefetch=_QUERY_PREFETCH)
            position = 0
            async for record in cursor:
                row_id, text = record[0], record[1]
                if row_id is None or text is None or not row_id:
                    yield BadRow(position, row_id or None, f"row {position + 1}: {_null(record)}")
                else:
                    yield Item(position, row_id, text)
                position += 1

    async def close(self) -> None:
        try:
            await self.conn.close(timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            # A read cut short (Ctrl-C) may leave the cursor's transaction mid-flight.
            self.conn.terminate()


def _null(record: asyncpg.Record) -> str:
    if record[0] is None:
        return "the id is NULL"
    if not record[0]:
        return "the id is empty"
    return "the text is NULL"


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=15)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        # asyncpg and OS messages name the server, database and role, never the password.
        raise BackfillError(
            f"cannot connect to the input database {dsn_without_password(dsn)}: {exc}"
        ) from exc


async def _check_columns(conn: asyncpg.Connection, query: str, wanted: tuple[str, ...]) -> None:
    try:
        statement = await conn.prepare(f"SELECT * FROM ({query}) AS q LIMIT 0")
    except asyncpg.PostgresError as exc:
        raise BackfillError(f"the input query is not valid: {exc}") from exc
    names = [a.name for a in statement.get_attributes()]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise BackfillError(
            f"the input query returns no column {' or '.join(map(repr, missing))}; "
            f"its columns: {', '.join(map(repr, names))}"
        )
