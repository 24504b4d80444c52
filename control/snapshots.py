"""Snapshots, as Cinder's: create (of an available or in-use volume, nobody
detached), list, show, delete, and revert of a volume to its latest snapshot.
Volumes made from a snapshot or a volume are in volumes.py; the data work is the
driver's.
"""
import logging
import uuid

from shareblock.control.errors import Conflict, ControlError, InvalidInput
from shareblock.control.records import now
from shareblock.control.volume_types import TYPE_NAME_RE

LOG = logging.getLogger("shareblock.control")
SNAPSHOT_OF = ("available", "in-use")  # Cinder 3.66: in-use needs no --force


class Snapshots:
    @staticmethod
    def _snapshot_view(row) -> dict:
        return {"id": row["id"], "name": row["name"], "volume_id": row["volume_id"],
                "status": row["status"], "size": row["size"], "description": None,
                "metadata": {}, "error": row["error"], "created_at": row["created_at"],
                "updated_at": row["updated_at"]}

    def snapshot_create(self, volume: str, name: str | None = None) -> dict:
        self.authorize("volume:create_snapshot")
        if name is not None and (not isinstance(name, str) or not TYPE_NAME_RE.match(name)):
            raise InvalidInput(f"snapshot name {name!r}: 1-255 of letters, digits, "
                               "space . _ : - starting with a letter or digit")
        vid = self._volume_row(volume)["id"]
        sid = str(uuid.uuid4())
        # the volume's lock: reconcile waits for a snapshot being taken (a long copy)
        # instead of taking it for one a crash cut short
        with self.locks.hold(vid):
            with self.db.transaction() as db:
                row = self._volume_row(vid, db)
                if row["status"] not in SNAPSHOT_OF:
                    raise Conflict(f"volume {row['id']} is {row['status']}: a snapshot needs "
                                   "an available or in-use volume")
                at = now()
                db.execute("INSERT INTO snapshots (id, volume_id, name, size, status, "
                           "created_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                           (sid, row["id"], name, row["size"], "creating", at, at))
            try:
                self.driver(row["backend"]).create_snapshot(
                    {"id": sid, "volume_id": row["id"], "volume_size": row["size"]})
            except Exception as e:
                LOG.warning("snapshot %s of volume %s failed: %s", sid, row["id"], e)
                self._set_snapshot(sid, status="error", error=str(e))
                return self.snapshot_show(sid)
            self._set_snapshot(sid, status="available")
        return self.snapshot_show(sid)

    def snapshot_show(self, ref: str) -> dict:
        self.authorize("volume:get_snapshot")
        return self._snapshot_view(self._snapshot_row(ref))

    def snapshot_list(self, volume: str | None = None) -> list[dict]:
        self.authorize("volume:get_snapshot")
        if volume:
            rows = self.db.query("SELECT * FROM snapshots WHERE volume_id=? ORDER BY created_at",
                                 (self._volume_row(volume)["id"],))
        else:
            rows = self.db.query("SELECT * FROM snapshots ORDER BY created_at")
        return [self._snapshot_view(r) for r in rows]

    def snapshot_delete(self, ref: str) -> None:
        self.authorize("volume:delete_snapshot")
        snap = self._snapshot_row(ref)
        with self.locks.hold(snap["volume_id"]):
            with self.db.transaction() as db:
                snap = self._snapshot_row(snap["id"], db)
                if snap["status"] not in ("available", "error", "error_deleting"):
                    raise Conflict(f"snapshot {snap['id']} is {snap['status']}: only available "
                                   "or error snapshots can be deleted")
                if db.execute("SELECT 1 FROM volumes WHERE snapshot_id=? AND "
                              "status='creating'", (snap["id"],)).fetchone():
                    raise Conflict(f"snapshot {snap['id']}: a volume is being made from it")
                db.execute("UPDATE snapshots SET status='deleting', updated_at=? WHERE id=?",
                           (now(), snap["id"]))
                backend = self._volume_row(snap["volume_id"], db)["backend"]
            self._delete_snapshot(backend, snap)

    def _delete_snapshot(self, backend: str, snap) -> None:
        """A `deleting` snapshot's storage, then its row; `error_deleting` if it fails."""
        try:
            self.driver(backend).delete_snapshot({"id": snap["id"],
                                                  "volume_id": snap["volume_id"]})
        except Exception as e:
            self._set_snapshot(snap["id"], status="error_deleting", error=str(e))
            raise ControlError(f"snapshot {snap['id']}: delete failed: {e}") from e
        with self.db.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE id=?", (snap["id"],))

    def revert_to_snapshot(self, ref: str) -> dict:
        """The volume's data becomes its latest snapshot's, with Cinder's rules: an
        available volume of the snapshot's size, its latest snapshot, available; no
        copy of the volume being made. A revert that fails leaves the volume in
        `error`, as Cinder's does."""
        self.authorize("volume:revert_to_snapshot")
        snap = self._snapshot_row(ref)
        with self.locks.hold(snap["volume_id"]):
            with self.db.transaction() as db:
                snap = self._snapshot_row(snap["id"], db)
                vol = self._volume_row(snap["volume_id"], db)
                latest = db.execute("SELECT id FROM snapshots WHERE volume_id=? ORDER BY "
                                    "created_at DESC LIMIT 1", (vol["id"],)).fetchone()
                if latest["id"] != snap["id"]:
                    raise Conflict(f"snapshot {snap['id']} is not the latest of volume "
                                   f"{vol['id']}: only the latest can be reverted to")
                if snap["status"] != "available":
                    raise Conflict(f"snapshot {snap['id']} is {snap['status']}, not available")
                if vol["status"] != "available":
                    raise Conflict(f"volume {vol['id']} is {vol['status']}: revert needs an "
                                   "available volume")
                if vol["size"] != snap["size"]:
                    raise InvalidInput(f"volume {vol['id']} is {vol['size']} GiB, its snapshot "
                                       f"{snap['size']} GiB: revert needs the same size")
                self._refuse_while_copied(db, vol["id"])
                db.execute("UPDATE volumes SET status='reverting', updated_at=? WHERE id=?",
                           (now(), vol["id"]))
                db.execute("UPDATE snapshots SET status='restoring', updated_at=? WHERE id=?",
                           (now(), snap["id"]))
            return self._revert(vol, snap)

    def _revert(self, vol, snap) -> dict:
        """The driver's revert of a `reverting` volume; both rows settled in one write."""
        failed = None
        try:
            self.driver(vol["backend"]).revert_to_snapshot(
                None, {"id": vol["id"], "size": vol["size"]},
                {"id": snap["id"], "volume_id": vol["id"], "volume_size": snap["size"]})
        except Exception as e:
            failed = e
        with self.db.transaction() as db:
            db.execute("UPDATE volumes SET status=?, error=?, updated_at=? WHERE id=?",
                       ("error" if failed else "available",
                        f"revert to snapshot {snap['id']} failed: {failed}" if failed else None,
                        now(), vol["id"]))
            db.execute("UPDATE snapshots SET status='available', updated_at=? WHERE id=?",
                       (now(), snap["id"]))
        if failed:
            raise ControlError(f"volume {vol['id']}: revert to snapshot {snap['id']} "
                               f"failed: {failed}") from failed
        return self.show(vol["id"])
