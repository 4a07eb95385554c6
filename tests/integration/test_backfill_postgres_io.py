"""Backfill input query and table sink against the real local PostgreSQL (a fresh database)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest

from tests.brokers import PrivatePostgres
from tests.integration.conftest import drop_database
from workers.backfill.inputs import InputSpec, open_input
from workers.backfill.items import BackfillError, BadRow, Item, Vectors
from workers.backfill.sinks import OutputSpec, Sink, open_sink
from workers.migrate import ensure_database, with_database

pytestmark = pytest.mark.integration

FP = {
    "provider": "openai",
    "model": "text-embedding-3-small",
    "dimensions": "default",
    "input_type": "",
    "output": "ignored by the table",  # only the model's identity is stored
}


@pytest.fixture(scope="module")
async def io_db(database_url: str) -> AsyncIterator[str]:
    url = with_database(database_url, f"llm_fleet_backfill_{uuid.uuid4().hex[:12]}")
    assert await ensure_database(url)
    yield url
    await drop_database(database_url, url)


@pytest.fixture
async def sql(io_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(io_db)
    yield conn
    await conn.close()


@pytest.fixture
def table() -> str:
    return f"emb_{uuid.uuid4().hex[:8]}"


async def pgvector_available(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')"
        )
    )


def batch(ids: list[str], dims: int = 4, seed: int = 0) -> Vectors:
    data = np.random.default_rng(seed).standard_normal((len(ids), dims)).astype("<f4")
    return Vectors(tuple(ids), dims, data.tobytes())


def as_matrix(b: Vectors) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.frombuffer(b.data, dtype="<f4").reshape(len(b.ids), b.dims)


def table_sink(
    dsn: str, table: str, fingerprint: dict[str, str] = FP, vector_type: Any = "auto"
) -> Sink:
    return open_sink(OutputSpec(table=table, dsn=dsn, vector_type=vector_type), fingerprint)


async def stored(conn: asyncpg.Connection, table: str) -> dict[str, list[float]]:
    rows = await conn.fetch(f'SELECT id, embedding::real[] AS e FROM "{table}" ORDER BY id')
    return {r["id"]: list(r["e"]) for r in rows}


# -- input query ---------------------------------------------------------------------------


async def test_query_rows_come_ordered_by_id_with_nulls_as_bad_rows(
    io_db: str, sql: asyncpg.Connection, table: str
) -> None:
    await sql.execute(f'CREATE TABLE "{table}" (n int, body text, extra jsonb)')
    await sql.execute(
        f"""INSERT INTO "{table}" VALUES (10, 'ten', '{{}}'), (2, 'two', NULL), (3, NULL, NULL),
            (NULL, 'no id', NULL), (1, 'one', NULL), (-5, 'filtered out', NULL)"""
    )
    spec = InputSpec(
        query=f'SELECT n, body FROM "{table}" WHERE n IS NULL OR n > 0;\n',
        dsn=io_db,
        id_field="n",
        text_field="body",
    )
    source = await open_input(spec)
    try:
        rows = [r async for r in source.rows()]
        assert await source.count() == 5
    finally:
        await source.close()
    # Numeric order of the id column (not text order), NULL ids last as PostgreSQL sorts them.
    assert rows == [
        Item(0, "1", "one"),
        Item(1, "2", "two"),
        BadRow(2, "3", "row 3: the text is NULL"),
        Item(3, "10", "ten"),
        BadRow(4, None, "row 5: the id is NULL"),
    ]


async def test_query_streams_past_the_prefetch(io_db: str, sql: asyncpg.Connection) -> None:
    source = await open_input(
        InputSpec(
            query="SELECT i AS id, 'text ' || i AS text FROM generate_series(1, 4500) i", dsn=io_db
        )
    )
    try:
        ids = [r.id async for r in source.rows()]
    finally:
        await source.close()
    assert ids == [str(i) for i in range(1, 4501)]


async def test_query_problems_are_backfill_errors(io_db: str) -> None:
    with pytest.raises(BackfillError, match=r"the input query is not valid: .*no_such_table"):
        await open_input(InputSpec(query="SELECT * FROM no_such_table", dsn=io_db))
    with pytest.raises(BackfillError, match=r"returns no column 'text'; its columns: 'id', 'body'"):
        await open_input(InputSpec(query="SELECT 1 AS id, 'x' AS body", dsn=io_db))
    secret = "pw-canary-31f9"
    dsn = f"postgresql://postgres:{secret}@127.0.0.1:1/nowhere"
    with pytest.raises(BackfillError, match="cannot connect to the input database") as caught:
        await open_input(InputSpec(query="SELECT 1", dsn=dsn))
    assert secret not in str(caught.value)
    assert secret not in repr(InputSpec(query="SELECT 1", dsn=dsn).describe())


# -- table sink ----------------------------------------------------------------------------


async def test_table_is_created_at_the_first_commit_with_exact_values(
    io_db: str, sql: asyncpg.Connection, table: str
) -> None:
    if await pgvector_available(sql):
        pytest.skip("pgvector is installed here: the real[] fallback is not what auto picks")
    sink = table_sink(io_db, table)
    assert await sink.open(None) == set()
    assert sink.description == f"table {table} (real[])"
    a, b = batch(["b", "a"], seed=1), batch(["c"], seed=2)
    await sink.write(a)
    assert await sql.fetchval("SELECT to_regclass($1)", table) is None  # not before a commit
    assert await sink.commit() == {"rows": 2}
    await sink.write(b)
    assert await sink.commit() == {"rows": 3}
    await sink.finish()
    await sink.close()

    rows = await stored(sql, table)
    expected = {
        "b": as_matrix(a)[0],
        "a": as_matrix(a)[1],
        "c": as_matrix(b)[0],
    }
    assert rows.keys() == expected.keys()
    for key, values in expected.items():
        assert np.array_equal(np.array(rows[key], dtype="<f4"), values)
    columns = dict(
        await sql.fetch(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1",
            table,
        )
    )
    assert columns == {
        "id": "text",
        "embedding": "ARRAY",
        "embedded_at": "timestamp with time zone",
    }
    storage = await sql.fetchval(
        "SELECT attstorage::text FROM pg_attribute WHERE attrelid = $1::regclass"
        " AND attname = 'embedding'",
        table,
    )
    assert storage == "e"  # EXTERNAL: floats do not compress, so no attempt is made
    comment = await sql.fetchval("SELECT obj_description($1::regclass, 'pg_class')", table)
    assert json.loads(comment) == {
        "llm_fleet_backfill": {k: FP[k] for k in ("dimensions", "input_type", "model", "provider")}
    }


async def test_reopen_names_the_tables_ids_and_never_writes_twice(
    io_db: str, sql: asyncpg.Connection, table: str
) -> None:
    sink = table_sink(io_db, table)
    await sink.open(None)
    await sink.write(batch(["a", "b"]))
    await sink.commit()
    await sink.write(batch(["c"]))  # written, never committed: the run was killed
    await sink.close()

    # The table is its own checkpoint: with or without the journal's position.
    for committed in (None, {"rows": 99}):
        again = table_sink(io_db, table)
        assert await again.open(committed) == {"a", "b"}
        await again.close()
    again = table_sink(io_db, table)
    await again.open(None)
    await again.write(batch(["b", "d"], seed=7))  # b again: kept once, the first vector stays
    assert await again.commit() == {"rows": 1}
    await again.close()
    rows = await stored(sql, table)
    assert sorted(rows) == ["a", "b", "d"]
    assert np.array_equal(np.array(rows["b"], dtype="<f4"), as_matrix(batch(["a", "b"]))[1])


async def test_another_models_table_is_refused(io_db: str, table: str) -> None:
    sink = table_sink(io_db, table)
    await sink.open(None)
    await sink.write(batch(["a"]))
    await sink.commit()
    await sink.close()
    other = {**FP, "model": "text-embedding-3-large", "input_type": "query"}
    with pytest.raises(BackfillError) as caught:
        await table_sink(io_db, table, other).open(None)
    message = str(caught.value)
    assert "model: 'text-embedding-3-small' -> 'text-embedding-3-large'" in message
    assert "input_type: '' -> 'query'" in message
    # Other runs of the same model (another input, another output file) are welcome.
    same_model = table_sink(io_db, table, {**FP, "input": "another file"})
    assert await same_model.open(None) == {"a"}
    await same_model.close()


async def test_a_table_the_backfill_did_not_create(
    io_db: str, sql: asyncpg.Connection, table: str
) -> None:
    await sql.execute(f'CREATE TABLE "{table}" (id text PRIMARY KEY, embedding real[])')
    sink = table_sink(io_db, table)
    assert await sink.open(None) == set()  # empty: accepted, and marked at the first commit
    await sink.write(batch(["a"]))
    await sink.commit()
    await sink.close()
    comment = await sql.fetchval("SELECT obj_description($1::regclass, 'pg_class')", table)
    assert json.loads(comment)["llm_fleet_backfill"]["model"] == FP["model"]

    await sql.execute(f'COMMENT ON TABLE "{table}" IS NULL')
    with pytest.raises(BackfillError, match="holds rows no backfill wrote"):
        await table_sink(io_db, table).open(None)


async def test_existing_dims_bind_new_writes(io_db: str, table: str) -> None:
    sink = table_sink(io_db, table)
    await sink.open(None)
    await sink.write(batch(["a"], dims=4))
    await sink.commit()
    await sink.close()
    again = table_sink(io_db, table)
    await again.open(None)
    with pytest.raises(BackfillError, match="holds vectors of 4 dimensions; new vectors have 3"):
        await again.write(batch(["b"], dims=3))
    await again.close()


@pytest.mark.parametrize(
    ("ddl", "error"),
    [
        ("id int PRIMARY KEY, embedding real[]", "needs an id column of type text"),
        (
            "id text PRIMARY KEY, embedding jsonb",
            "needs an embedding column of type vector or real",
        ),
        ("id text, embedding real[]", "its id column must be unique"),
    ],
)
async def test_incompatible_tables_are_refused(
    io_db: str, sql: asyncpg.Connection, table: str, ddl: str, error: str
) -> None:
    await sql.execute(f'CREATE TABLE "{table}" ({ddl})')
    with pytest.raises(BackfillError, match=error):
        await table_sink(io_db, table).open(None)


async def test_schema_qualified_and_quoted_names(io_db: str, sql: asyncpg.Connection) -> None:
    schema = f"Bf {uuid.uuid4().hex[:6]}"
    await sql.execute(f'CREATE SCHEMA "{schema}"')
    sink = table_sink(io_db, f"{schema}.Mixed Case")
    await sink.open(None)
    await sink.write(batch(["a"]))
    await sink.commit()
    await sink.close()
    assert await sql.fetchval(f'SELECT count(*) FROM "{schema}"."Mixed Case"') == 1
    with pytest.raises(BackfillError, match=r"expected name or schema\.name"):
        table_sink(io_db, "a.b.c")


async def test_vector_type_choice(io_db: str, sql: asyncpg.Connection, table: str) -> None:
    if await pgvector_available(sql):
        pytest.skip("pgvector is installed here: see test_vector_column")
    with pytest.raises(BackfillError, match="needs the pgvector extension"):
        await table_sink(io_db, table, vector_type="vector").open(None)
    sink = table_sink(io_db, table, vector_type="real[]")
    await sink.open(None)
    assert sink.description.endswith("(real[])")
    await sink.close()


async def test_vector_column(io_db: str, sql: asyncpg.Connection, table: str) -> None:
    if not await pgvector_available(sql):
        pytest.skip("pgvector is not installed on this PostgreSQL server")
    sink = table_sink(io_db, table)
    await sink.open(None)
    b = batch(["a", "b"], dims=8)
    await sink.write(b)
    await sink.commit()
    assert sink.description == f"table {table} (vector(8))"
    await sink.close()
    assert (
        await sql.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attname = 'embedding'",
            table,
        )
        == "vector(8)"
    )
    rows = await stored(sql, table)
    assert np.array_equal(np.array([rows["a"], rows["b"]], dtype="<f4"), as_matrix(b))
    with pytest.raises(BackfillError, match="not real"):
        await table_sink(io_db, table, vector_type="real[]").open(None)


async def test_ten_thousand_wide_rows_in_one_commit(
    io_db: str, sql: asyncpg.Connection, table: str
) -> None:
    ids = [f"doc-{i:05d}" for i in range(10_000)]
    b = batch(ids, dims=1536, seed=3)
    sink = table_sink(io_db, table)
    await sink.open(None)
    await sink.write(b)
    assert await sink.commit() == {"rows": 10_000}
    await sink.close()
    assert await sql.fetchval(f'SELECT count(*) FROM "{table}"') == 10_000
    last = await sql.fetchval(f"SELECT embedding FROM \"{table}\" WHERE id = 'doc-09999'")
    assert np.array_equal(np.array(last, dtype="<f4"), as_matrix(b)[-1])


async def test_commit_after_a_server_restart(private_postgres: PrivatePostgres, table: str) -> None:
    pg = private_postgres
    await asyncio.to_thread(pg.start)
    url = with_database(pg.url, f"backfill_{uuid.uuid4().hex[:8]}")
    await ensure_database(url)
    sink = table_sink(url, table)
    await sink.open(None)
    await sink.write(batch(["a"]))
    await sink.commit()
    await asyncio.to_thread(pg.stop, "fast")
    await asyncio.to_thread(pg.start)
    await sink.write(batch(["b"], seed=1))
    assert await sink.commit() == {"rows": 2}  # a new connection, same table
    await sink.close()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval(f'SELECT count(*) FROM "{table}"') == 2
    finally:
        await conn.close()
