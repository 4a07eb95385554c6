"""Apply the numbered SQL files in `migrations/` in order, once each.

Every file runs in its own transaction together with the row that records it in
`llm_fleet_schema_migrations`, so a failed migration leaves nothing half applied.
A session-level advisory lock makes concurrent runs (several workers or
`compose up --scale`) queue behind each other instead of racing; the checksum
check refuses to continue when a file that was already applied has since been
edited, because the database would silently differ from what the file says.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger("llm_fleet.migrate")

SCHEMA_TABLE = "llm_fleet_schema_migrations"
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Any fixed 64-bit number works; derive it from a name so it is not a magic constant.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"llm-fleet migrate").digest()[:8], "big", signed=True)
CONNECT_TIMEOUT = 10.0


class MigrationError(RuntimeError):
    """The migrations cannot be applied safely; the message says why."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def migrations_dir(override: str | None = None) -> Path:
    """Where the SQL files are: an explicit directory, the source tree, or the installed copy.

    The source tree covers a checkout and an editable install (this file stays in
    the repository); a wheel installs the files under `<prefix>/share/llm-fleet`.
    """
    candidates = [Path(override)] if override else []
    candidates += [
        Path(__file__).resolve().parents[1] / "migrations",
        Path(sys.prefix) / "share" / "llm-fleet" / "migrations",
    ]
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise MigrationError(f"no migrations directory found (tried {tried}); set FLEET_MIGRATIONS_DIR")


def load_migrations(directory: Path) -> list[Migration]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files must be named NNNN_snake_case.sql")
        body = path.read_bytes()
        migration = Migration(
            version=int(match["version"]),
            name=match["name"],
            sql=body.decode(),
            checksum=hashlib.sha256(body).hexdigest(),
        )
        if migration.version in found:
            raise MigrationError(
                f"{path.name} and {found[migration.version].filename} "
                f"share version {migration.version:04d}"
            )
        found[migration.version] = migration
    return [found[v] for v in sorted(found)]


def with_database(database_url: str, dbname: str) -> str:
    parts = urllib.parse.urlsplit(database_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(dbname)))


def database_name(database_url: str) -> str:
    path = urllib.parse.urlsplit(database_url).path.lstrip("/")
    return urllib.parse.unquote(path) or "postgres"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(database_url: str) -> bool:
    """Create the URL's database when it does not exist; True when this call created it."""
    try:
        conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    name = database_name(database_url)
    admin = await asyncpg.connect(with_database(database_url, "postgres"), timeout=CONNECT_TIMEOUT)
    try:
        await admin.execute(f"CREATE DATABASE {quote_ident(name)}")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        return False  # another process created it between our two connections
    finally:
        await admin.close()
    log.info("database_created", database=name)
    return True


async def _check_applied(conn: asyncpg.Connection, known: list[Migration]) -> set[int]:
    by_version = {m.version: m for m in known}
    applied: set[int] = set()
    rows = await conn.fetch(f"SELECT version, name, checksum FROM {SCHEMA_TABLE} ORDER BY version")
    for row in rows:
        version, name, checksum = int(row["version"]), str(row["name"]), str(row["checksum"])
        mine = by_version.get(version)
        if mine is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{name} applied, which this code "
                "does not have: it is older than the database schema"
            )
        if mine.checksum != checksum or mine.name != name:
            raise MigrationError(
                f"{mine.filename} was changed after it was applied (checksum differs); "
                "write a new migration instead of editing an applied one"
            )
        applied.add(version)
    return applied


async def migrate(database_url: str, directory: Path | None = None) -> list[str]:
    """Apply the missing migrations in order; return the file names applied by this call."""
    known = load_migrations(directory or migrations_dir())
    await ensure_database(database_url)
    conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (
                    version    integer     PRIMARY KEY,
                    name       text        NOT NULL,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = await _check_applied(conn, known)
            done: list[str] = []
            for m in known:
                if m.version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)  # no arguments: simple protocol, many statements
                    await conn.execute(
                        f"INSERT INTO {SCHEMA_TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
                        m.version,
                        m.name,
                        m.checksum,
                    )
                log.info("migration_applied", migration=m.filename)
                done.append(m.filename)
            return done
        finally:
            # Closing the session releases the lock too; this only hands it over sooner.
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()
