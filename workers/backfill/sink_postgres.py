"""PostgreSQL output: a table `(id text PRIMARY KEY, embedding vector(d) | real[], embedded_at)`.

The table is its own checkpoint: ids are keys, rows are inserted with `ON CONFLICT (id) DO
NOTHING` in one transaction per commit, so whatever a killed run committed is simply there
on the rerun (`open()` reads the ids and ignores the journal's position), and nothing can
be written twice.

What must never happen is vectors of two models in one table: the model's identity
(provider, model, dimensions, input_type) is stored as the table's COMMENT (JSON) when the
backfill creates it, and a table with another identity is refused. A table the backfill
did not create is accepted only while it is empty.

Rows travel by binary COPY into a temporary table, then one INSERT ... SELECT: the COPY
payload is built with numpy straight from the packed float32 answers (no float -> text ->
float round trip, so values are exact, and no per-value Python work).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import Any, Final, Literal

import asyncpg
import numpy as np

from workers.backfill.inputs import dsn_without_password
from workers.backfill.items import BackfillError, Vectors
from workers.backfill.sinks import DimsCheck, Position
from workers.migrate import quote_ident

__all__ = ["PostgresSink"]

VectorKind = Literal["vector", "real[]"]
_COMMENT_KEY: Final = "llm_fleet_backfill"
_IDENTITY: Final = ("provider", "model", "dimensions", "input_type")
_STAGE: Final = "llm_fleet_backfill_stage"
_FLOAT4_OID: Final = 700
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER: Final = struct.pack("!h", -1)
_ID_PREFETCH: Final = 10_000
# The server went away (restart, failover, admin shutdown), not the statement failed.
_CONNECTION_LOST: Final = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
)


def _split_name(table: str) -> tuple[str | None, str]:
    """(schema or None, name) of `name` or `schema.name`."""
    parts = table.split(".")
    if len(parts) > 2 or not all(parts):
        raise BackfillError(f"output table {table!r}: expected name or schema.name")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


class PostgresSink:
    def __init__(
        self,
        table: str,
        dsn: str,
        vector_type: Literal["auto", "vector", "real[]"],
        fingerprint: Mapping[str, str],
    ) -> None:
        self.table = table
        self.schema, self.name = _split_name(table)
        self.qualified = ".".join(quote_ident(p) for p in (self.schema, self.name) if p)
        self.dsn = dsn
        self.vector_type = vector_type
        self.identity = {k: fingerprint[k] for k in _IDENTITY if k in fingerprint}
        self.description = f"table {table}"
        self._conn: asyncpg.Connection | None = None
        self._kind: VectorKind = "real[]"
        self._type_name = "real[]"  # the column type's SQL, as format_type gives it
        self._exists = False
        self._marked = False  # the table carries our comment
        self._dims = DimsCheck()
        self._pending: list[Vectors] = []
        self._rows = 0

    # -- open ------------------------------------------------------------------------------

    async def open(self, committed: Position | None) -> set[str]:
        """The ids in the table; `committed` is ignored (the table is its own checkpoint).

        That includes START_OVER: emptying a table is left to its owner.
        """
        self._conn = conn = await self._connect()
        try:
            return await self._open_on(conn)
        except BaseException:
            # A refused table must not leave its connection to the garbage collector.
            await self.close()
            raise

    async def _open_on(self, conn: asyncpg.Connection) -> set[str]:
        try:
            oid = await conn.fetchval("SELECT to_regclass($1)::oid", self.qualified)
        except asyncpg.PostgresError as exc:
            raise BackfillError(f"output table {self.table}: {exc}") from exc
        if oid is None:
            self._kind = await self._choose_kind(conn)
            self._type_name = "real[]" if self._kind == "real[]" else await _vector_type(conn)
            self._describe()
            return set()
        self._exists = True
        await self._inspect(conn, oid)
        self._describe()
        ids: set[str] = set()
        async with conn.transaction(readonly=True):
            cursor = conn.cursor(f"SELECT id::text FROM {self.qualified}", prefetch=_ID_PREFETCH)
            async for record in cursor:
                ids.add(record[0])
        return ids

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self.dsn, timeout=15)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            # asyncpg and OS messages name the server, database and role, never the password.
            where = dsn_without_password(self.dsn)
            raise BackfillError(f"cannot connect to the output database {where}: {exc}") from exc

    def _describe(self) -> None:
        column = self._type_name
        if self._kind == "vector" and self._dims.dims is not None and "(" not in column:
            column = f"{column}({self._dims.dims})"
        self.description = f"table {self.table} ({column})"

    async def _choose_kind(self, conn: asyncpg.Connection) -> VectorKind:
        if self.vector_type == "real[]":
            return "real[]"
        if await _pgvector(conn):
            return "vector"
        if self.vector_type == "vector":
            raise BackfillError(
                f"a vector column needs the pgvector extension, which the server of "
                f"{self.table} does not have (or this role may not create): "
                "install it, or let the column be real[]"
            )
        return "real[]"

    async def _inspect(self, conn: asyncpg.Connection, oid: int) -> None:
        columns = {
            r["attname"]: r
            for r in await conn.fetch(
                "SELECT a.attname, t.typname, a.atttypmod, a.attnum,"
                " format_type(a.atttypid, NULL) AS type_name"
                " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                " WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                oid,
            )
        }
        self._check_columns(columns)
        unique = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique"
            " AND i.indpred IS NULL AND i.indnkeyatts = 1 AND i.indkey[0] = $2)",
            oid,
            columns["id"]["attnum"],
        )
        if not unique:
            raise BackfillError(f"output table {self.table}: its id column must be unique")
        embedding = columns["embedding"]
        if self._kind == "vector" and embedding["atttypmod"] > 0:
            self._dims.dims = int(embedding["atttypmod"])
        elif self._kind == "real[]":
            first = await conn.fetchval(
                f"SELECT array_length(embedding, 1) FROM {self.qualified} LIMIT 1"
            )
            self._dims.dims = int(first) if first else None
        comment = await conn.fetchval("SELECT obj_description($1, 'pg_class')", oid)
        recorded = _recorded_identity(comment)
        if recorded is None:
            empty = not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {self.qualified})")
            if not empty:
                raise BackfillError(
                    f"output table {self.table} holds rows no backfill wrote (it has no "
                    "backfill fingerprint): use a new table, or empty this one"
                )
            return
        self._marked = True
        differ = sorted(
            k
            for k in recorded.keys() | self.identity.keys()
            if recorded.get(k) != self.identity.get(k)
        )
        if differ:
            changes = "; ".join(
                f"{k}: {recorded.get(k)!r} -> {self.identity.get(k)!r}" for k in differ
            )
            raise BackfillError(
                f"output table {self.table} holds embeddings of another model ({changes}); "
                "vectors of two models must not share a table: choose another table"
            )

    def _check_columns(self, columns: Mapping[str, Any]) -> None:
        id_column, embedding = columns.get("id"), columns.get("embedding")
        if id_column is None or id_column["typname"] not in ("text", "varchar"):
            raise BackfillError(f"output table {self.table} needs an id column of type text")
        kinds: dict[str, VectorKind] = {"vector": "vector", "_float4": "real[]"}
        kind = kinds.get(embedding["typname"]) if embedding is not None else None
        if kind is None:
            raise BackfillError(
                f"output table {self.table} needs an embedding column of type vector or real[]"
            )
        if self.vector_type != "auto" and kind != self.vector_type:
            raise BackfillError(
                f"output table {self.table} has a {kind} embedding column, "
                f"not {self.vector_type}: choose another table or vector type"
            )
        self._kind = kind
        assert embedding is not None
        self._type_name = "real[]" if kind == "real[]" else embedding["type_name"]

    # -- write and commit ------------------------------------------------------------------

    async def write(self, vectors: Vectors) -> None:
        self._dims.check(vectors, f"output table {self.table}")
        self._pending.append(vectors)

    async def commit(self) -> Position:
        if not self._pending:
            return {"rows": self._rows}
        payload = await asyncio.to_thread(_copy_payload, self._pending, self._kind)
        try:
            inserted = await self._insert(payload)
        except _CONNECTION_LOST:
            # The server went away (restart, failover): the transaction did not commit, and
            # ON CONFLICT makes a second attempt harmless either way.
            if self._conn is not None:
                self._conn.terminate()
            self._conn = await self._connect()
            inserted = await self._insert(payload)
        self._pending = []
        self._rows += inserted
        return {"rows": self._rows}

    async def _insert(self, payload: bytes) -> int:
        conn = self._conn
        assert conn is not None, "open() first"
        column = self._column_sql()
        # A memoryview: asyncpg takes plain bytes for a file name.
        source = memoryview(payload)
        try:
            async with conn.transaction():
                if not self._exists:
                    await self._create(conn, column)
                elif not self._marked:
                    await self._mark(conn)
                try:
                    # Straight into the table: the runner never writes an id twice, so this
                    # is the path taken, at half the cost of staging every row.
                    async with conn.transaction():
                        status = await conn.copy_to_table(
                            self.name,
                            schema_name=self.schema,
                            columns=["id", "embedding"],
                            source=source,
                            format="binary",
                        )
                except asyncpg.UniqueViolationError:
                    # Someone else (another backfill into this table) wrote some of these ids.
                    status = await self._insert_staged(conn, column, source)
        except _CONNECTION_LOST:
            raise
        except asyncpg.PostgresError as exc:
            raise BackfillError(f"writing to output table {self.table} failed: {exc}") from exc
        self._exists = self._marked = True
        self._describe()
        return int(status.rsplit(" ", 1)[-1])

    async def _insert_staged(
        self, conn: asyncpg.Connection, column: str, source: memoryview
    ) -> str:
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (id text, embedding {column})"
            " ON COMMIT DELETE ROWS"
        )
        await conn.copy_to_table(_STAGE, source=source, format="binary")
        status: str = await conn.execute(
            f"INSERT INTO {self.qualified} (id, embedding)"
            f" SELECT id, embedding FROM {_STAGE} ON CONFLICT (id) DO NOTHING"
        )
        await conn.execute(f"TRUNCATE {_STAGE}")  # the transaction goes on: empty it now
        return status

    def _column_sql(self) -> str:
        if self._kind == "real[]":
            return "real[]"
        if "(" in self._type_name:
            return self._type_name
        return f"{self._type_name}({self._dims.dims})"

    async def _create(self, conn: asyncpg.Connection, column: str) -> None:
        try:
            await conn.execute(
                f"CREATE TABLE {self.qualified} (id text PRIMARY KEY, embedding {column} NOT NULL,"
                " embedded_at timestamptz NOT NULL DEFAULT now())"
            )
            # Float vectors do not compress: skip the attempt on every TOASTed row
            # (measured: a fifth of the write time at 1536 dimensions).
            await conn.execute(
                f"ALTER TABLE {self.qualified} ALTER COLUMN embedding SET STORAGE EXTERNAL"
            )
        except asyncpg.DuplicateTableError:
            raise BackfillError(
                f"output table {self.table} was created by someone else during this run: "
                "run the command again"
            ) from None
        await self._mark(conn)

    async def _mark(self, conn: asyncpg.Connection) -> None:
        comment = json.dumps({_COMMENT_KEY: self.identity}, sort_keys=True)
        literal = await conn.fetchval("SELECT quote_literal($1::text)", comment)
        await conn.execute(f"COMMENT ON TABLE {self.qualified} IS {literal}")

    async def finish(self) -> None:
        """Nothing to do: every commit leaves the table in its final form."""

    async def close(self) -> None:
        self._pending = []
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


async def _pgvector(conn: asyncpg.Connection) -> bool:
    """Whether the vector type can be used, installing the extension when it may."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')"):
        return True
    available = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')"
    )
    if not available:
        return False
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except asyncpg.PostgresError:  # not permitted to this role, or the install is broken
        return False
    return True


async def _vector_type(conn: asyncpg.Connection) -> str:
    # Schema-qualified when the extension lives outside the search path.
    name: str = await conn.fetchval(
        "SELECT format_type(t.oid, NULL) FROM pg_type t JOIN pg_extension e"
        " ON e.extname = 'vector' JOIN pg_depend d ON d.objid = t.oid AND d.refobjid = e.oid"
        " WHERE t.typname = 'vector'"
    )
    return name


def _recorded_identity(comment: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(comment) if comment else None
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get(_COMMENT_KEY), dict):
        found: dict[str, Any] = value[_COMMENT_KEY]
        return found
    return None


def _copy_payload(batches: list[Vectors], kind: VectorKind) -> bytes:
    """A binary COPY stream of (id text, embedding) rows."""
    out: list[bytes | memoryview] = [_COPY_HEADER]
    for vectors in batches:
        n, dims = len(vectors.ids), vectors.dims
        floats = np.frombuffer(vectors.data, dtype="<f4").reshape(n, dims)
        if kind == "real[]":
            # array_recv: ndim, has-nulls, element type, then (length, lower bound) per
            # dimension, then each element as (length, value).
            head = struct.pack("!iiiii", 1, 0, _FLOAT4_OID, dims, 1)
            cells = np.empty((n, dims), dtype=[("len", ">i4"), ("value", ">f4")])
            cells["len"] = 4
            cells["value"] = floats
        else:
            # pgvector's vector_recv: dims (int16), unused (int16), then the values.
            head = struct.pack("!hh", dims, 0)
            cells = floats.astype(">f4")
        body = memoryview(cells.tobytes())
        step = len(body) // n if n else 0
        field = struct.pack("!i", len(head) + step) + head
        for i, row_id in enumerate(vectors.ids):
            raw_id = row_id.encode()
            out.append(struct.pack("!hi", 2, len(raw_id)))
            out.append(raw_id)
            out.append(field)
            out.append(body[i * step : (i + 1) * step])
    out.append(_COPY_TRAILER)
    return b"".join(out)
