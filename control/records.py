"""The control plane's rows: volumes, types, attachments and events in SQLite.

The SQL of reading and writing one record lives here; the operations
(volumes.py, attachments.py, ...) say what changes, these say how it is stored.
"""
import datetime

from shareblock.control import db as db_mod
from shareblock.control.errors import InvalidInput, NotFound


# An attachment whose host is connected (or connecting): the ones that hold access
# at the target. Reserved ones have no host yet; detaching ones are on their way out.
CONNECTED = ("attaching", "attached")


def now() -> str:
    # isoformat, not strftime (slower), and the same text: 2026-12-03T19:11:04.123456
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(
        timespec="microseconds")


def moment(stamp) -> datetime.datetime | None:
    """A time now() wrote (UTC, no zone in the text) as an aware datetime; None for
    anything else."""
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


class Records:
    def _type_row(self, ref: str, db=None):
        db = db or self.db.connection()
        row = db.execute("SELECT * FROM volume_types WHERE id=? OR name=?", (ref, ref)).fetchone()
        if row is None:
            raise NotFound(f"volume type {ref!r} not found")
        return row

    @staticmethod
    def _by_ref(db, table: str, what: str, ref: str):
        """A row by id (the primary key: no scan, whatever the number of rows), else
        by name (indexed); an id wins over a name, as cinderclient finds one."""
        row = db.execute(f"SELECT * FROM {table} WHERE id=?", (ref,)).fetchone()  # noqa: S608
        if row is not None:
            return row
        rows = db.execute(f"SELECT * FROM {table} WHERE name=?", (ref,)).fetchall()  # noqa: S608
        if not rows:
            raise NotFound(f"{what} {ref!r} not found")
        if len(rows) > 1:
            raise InvalidInput(f"more than one {what} is named {ref!r}: use its id")
        return rows[0]

    def _volume_row(self, ref: str, db=None):
        return self._by_ref(db or self.db.connection(), "volumes", "volume", ref)

    def _snapshot_row(self, ref: str, db=None):
        return self._by_ref(db or self.db.connection(), "snapshots", "snapshot", ref)

    def _attachments(self, volume_id: str, db=None) -> list:
        db = db or self.db.connection()
        return db.execute("SELECT * FROM attachments WHERE volume_id=? ORDER BY created_at",
                          (volume_id,)).fetchall()

    def _attachment_row(self, att_id: str, db=None):
        db = db or self.db.connection()
        row = db.execute("SELECT * FROM attachments WHERE id=?", (att_id,)).fetchone()
        if row is None:
            raise NotFound(f"attachment {att_id!r} not found")
        return row

    def _set(self, vid: str, **fields) -> None:
        self._update("volumes", vid, fields)

    def _set_snapshot(self, sid: str, **fields) -> None:
        self._update("snapshots", sid, fields)

    def _update(self, table: str, row_id: str, fields: dict) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.db.transaction() as db:
            db.execute(f"UPDATE {table} SET {cols}, updated_at=? WHERE id=?",  # noqa: S608
                       (*fields.values(), now(), row_id))

    @staticmethod
    def _settle_status(db, volume_id: str) -> None:
        """Volume status from its attachments, as Cinder derives it."""
        statuses = [r["status"] for r in db.execute(
            "SELECT status FROM attachments WHERE volume_id=?", (volume_id,))]
        if "attached" in statuses:
            status = "in-use"
        elif "attaching" in statuses:
            status = "attaching"
        elif "detaching" in statuses:
            status = "detaching"
        elif "reserved" in statuses:
            status = "reserved"
        else:
            status = "available"
        db.execute("UPDATE volumes SET status=?, updated_at=? WHERE id=?",
                   (status, now(), volume_id))

    @staticmethod
    def _event(db, volume_id, host, filesystem, action, detail) -> None:
        db.execute("INSERT INTO events (at, volume_id, host, filesystem, action, detail) "
                   "VALUES (?,?,?,?,?,?)", (now(), volume_id, host, filesystem, action, detail))

    def _fences(self, db=None) -> list[dict]:
        return [{"node": r["node"], "hosts": set(db_mod.loads(r["hosts"])),
                 "volumes": None if r["volumes"] is None else set(db_mod.loads(r["volumes"]))}
                for r in (db or self.db.connection()).execute("SELECT * FROM fences")]

    @staticmethod
    def fence_of(fences: list[dict], volume_id: str, connector: dict | None,
                 host_id: str | None) -> str | None:
        """The fenced node this attachment belongs to, if any: its connector names
        the node, or its host is one the node had when fenced; on a volume the
        fence covers. The one test of "cut off", for access and for attach."""
        node = (connector or {}).get("host")
        for fence in fences:
            if fence["volumes"] is not None and volume_id not in fence["volumes"]:
                continue
            if node == fence["node"] or (host_id and host_id in fence["hosts"]):
                return fence["node"]
        return None

    def driver_volume(self, volume_id: str, db=None) -> dict:
        """The volume as the driver sees it: Cinder's fields, with its attachments
        (those of a fenced node left out: its hosts are cut off at the target)."""
        row = self._volume_row(volume_id, db)
        fences = self._fences(db)
        vtype = (db or self.db.connection()).execute(
            "SELECT extra_specs FROM volume_types WHERE id=?", (row["volume_type_id"],)).fetchone()
        return {"id": row["id"], "size": row["size"], "multiattach": bool(row["multiattach"]),
                "volume_type": {"extra_specs": db_mod.loads(vtype["extra_specs"]) if vtype
                                else {}},
                "volume_attachment": [
                    {"id": a["id"], "attach_mode": a["attach_mode"], "attach_status": a["status"],
                     "connector": db_mod.loads(a["connector"]),
                     "instance_uuid": a["instance_uuid"]}
                    for a in self._attachments(row["id"], db) if a["connector"]
                    and not self.fence_of(fences, row["id"], db_mod.loads(a["connector"]),
                                          a["host_id"])]}
