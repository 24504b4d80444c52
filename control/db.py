"""SQLite state: WAL, versioned schema, 0600, one transaction per state change.

`BEGIN IMMEDIATE` takes SQLite's write lock up front, so a read-check-write (the
single-attach in-use check) is one atomic step across threads and processes.
"""
import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path

from shareblock.targets import crashpoints

MIGRATIONS = [
    # 1: types, volumes, attachments, guard events
    """
    CREATE TABLE volume_types (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,
        extra_specs TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL);
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY, name TEXT, size INTEGER NOT NULL, status TEXT NOT NULL,
        volume_type_id TEXT REFERENCES volume_types(id), multiattach INTEGER NOT NULL,
        backend TEXT, error TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE TABLE attachments (
        id TEXT PRIMARY KEY, volume_id TEXT NOT NULL REFERENCES volumes(id),
        status TEXT NOT NULL, attach_mode TEXT NOT NULL, connector TEXT, host_id TEXT,
        instance_uuid TEXT, connection_info TEXT, reason TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX attachments_volume ON attachments(volume_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, volume_id TEXT,
        host TEXT, filesystem TEXT, action TEXT NOT NULL, detail TEXT);
    """,
    # 2: volumes found by name without a scan
    """
    CREATE INDEX volumes_name ON volumes(name);
    """,
    # 3: snapshots; a volume's source (Cinder's snapshot_id, source_volid)
    """
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY, volume_id TEXT NOT NULL REFERENCES volumes(id), name TEXT,
        size INTEGER NOT NULL, status TEXT NOT NULL, error TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX snapshots_volume ON snapshots(volume_id);
    CREATE INDEX snapshots_name ON snapshots(name);
    ALTER TABLE volumes ADD COLUMN snapshot_id TEXT;
    ALTER TABLE volumes ADD COLUMN source_volid TEXT;
    CREATE INDEX volumes_snapshot ON volumes(snapshot_id);
    CREATE INDEX volumes_source ON volumes(source_volid);
    """,
    # 4: fenced nodes (fence_shareblock): the node's name, its host ids when fenced,
    # the volumes it is cut off from (NULL: every volume)
    """
    CREATE TABLE fences (
        node TEXT PRIMARY KEY, hosts TEXT NOT NULL, volumes TEXT, at TEXT NOT NULL);
    """,
    # 5: a node's attachments found by its name (the connector's `host`) through an
    # index, not a scan of every attachment (fence, fence-status, fence-list)
    """
    CREATE INDEX attachments_node ON attachments(json_extract(connector, '$.host'));
    """,
    # 6: refused attaches counted by reason (the exporter's
    # shareblock_attach_refusals_total); a refusal changes nothing else
    """
    CREATE TABLE refusals (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
    """,
]


class Database:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        with self.transaction() as db:
            self._migrate(db)

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            old = os.umask(0o077)  # the -wal and -shm files are private too
            try:
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                os.umask(old)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=FULL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self):
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
            crashpoints.reached("commit")

    def query(self, sql: str, args=()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, args).fetchall()

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, script.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={number}")

    def schema_version(self) -> int:
        return self.query("PRAGMA user_version")[0][0]


def dumps(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def loads(value):
    return None if value is None else json.loads(value)
