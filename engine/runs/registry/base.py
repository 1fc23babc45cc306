"""The registry's connections: one per operation (safe from Streamlit's threads, the worker and every runner process
at once), WAL with a busy timeout, one write transaction at a time taken at once; the schema upgraded on open."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from engine import paths
from engine.runs.registry.schema import MIGRATIONS, SCHEMA_VERSION


class RegistryBase:
    """The connection and migration part of ``Registry``; the mixins of this package add the reads and writes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path or paths.db_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    # -- connections -------------------------------------------------------------------------------------
    @contextmanager
    def db(self) -> Iterator[sqlite_utils.Database]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            yield sqlite_utils.Database(conn)
        finally:
            conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so concurrent writers queue instead of failing."""
        with self.db() as db:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.db() as db:
            db.conn.execute("PRAGMA journal_mode=WAL")
        with self.tx() as db:
            version = db.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version}, newer than this Grove ({SCHEMA_VERSION}): upgrade Grove"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](db)
                db.conn.execute(f"PRAGMA user_version={v}")

    def schema_version(self) -> int:
        with self.db() as db:
            return db.conn.execute("PRAGMA user_version").fetchone()[0]
