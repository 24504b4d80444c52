"""Volumes: create, show, list, extend, retype, delete (Cinder's rules).

The volume's `multiattach` flag comes from its type; retype that changes it needs
an `available` volume and passes policy.
"""
import logging
import uuid

from shareblock.control import db as db_mod
from shareblock.control.errors import Conflict, ControlError, InvalidInput
from shareblock.control.records import now
from shareblock.control.scheduling import is_multiattach, no_room
from shareblock.driver.capabilities import mismatch
from shareblock.control.volume_types import TYPE_NAME_RE

LOG = logging.getLogger("shareblock.control")
MAX_SIZE_GB = 2 ** 31 - 1  # Cinder's size column; larger ints do not fit SQLite's INTEGER


class Volumes:
    def _volume_view(self, row) -> dict:
        vtype = self.db.query("SELECT name FROM volume_types WHERE id=?",
                              (row["volume_type_id"],))
        return {
            "id": row["id"], "name": row["name"], "status": row["status"], "size": row["size"],
            "volume_type": vtype[0]["name"] if vtype else None,
            "multiattach": bool(row["multiattach"]),
            "attachments": [{"id": a["id"], "attachment_id": a["id"],
                             "volume_id": row["id"], "server_id": a["instance_uuid"],
                             "host_name": (db_mod.loads(a["connector"]) or {}).get("host"),
                             "attach_mode": a["attach_mode"], "attach_status": a["status"]}
                            for a in self._attachments(row["id"])],
            "os-vol-host-attr:host": row["backend"],
            "snapshot_id": row["snapshot_id"], "source_volid": row["source_volid"],
            "error": row["error"], "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }

    def show(self, ref: str) -> dict:
        self.authorize("volume:get")
        return self._volume_view(self._volume_row(ref))

    def volume_list(self) -> list[dict]:
        self.authorize("volume:get")
        return [self._volume_view(r) for r in self.db.query(
            "SELECT * FROM volumes ORDER BY created_at")]

    def create(self, size: int | None = None, volume_type: str | None = None,
               name: str | None = None, snapshot_id: str | None = None,
               source_volid: str | None = None) -> dict:
        """A new volume; from a snapshot or a copy of a volume, it takes the source's
        type and size unless given (as Cinder does) and lives on the source's backend."""
        self.authorize("volume:create")
        if snapshot_id and source_volid:
            raise InvalidInput("give --snapshot-id or --source-volid, not both")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)
                                 or not 1 <= size <= MAX_SIZE_GB):
            raise InvalidInput(f"size {size!r} must be a whole number of GiB, 1 to "
                               f"{MAX_SIZE_GB}")
        if name is not None and (not isinstance(name, str) or not TYPE_NAME_RE.match(name)):
            raise InvalidInput(f"volume name {name!r}: 1-255 of letters, digits, "
                               "space . _ : - starting with a letter or digit")
        source = self._source(snapshot_id, source_volid)
        if source:
            size = source["size"] if size is None else size
            if size < source["size"]:
                raise InvalidInput(f"size {size} GiB is smaller than the source's "
                                   f"{source['size']} GiB")
            volume_type = volume_type or source["volume_type_id"]
        if size is None:
            raise InvalidInput("a size is required (SIZE_GB), unless the volume is made from "
                               "a snapshot or a volume")
        if volume_type is None:
            raise InvalidInput("a volume type is required (--volume-type)")
        vtype = self._type_row(volume_type)
        specs = db_mod.loads(vtype["extra_specs"])
        multiattach = is_multiattach(specs)
        if multiattach:
            self.authorize("volume:multiattach")
        if source:
            why = self._fits(source["backend"], specs)
            if why:
                raise Conflict(f"volume type {vtype['name']} needs another backend than the "
                               f"source's ({source['backend']} {why})")
        vid = str(uuid.uuid4())
        with self.locks.hold(vid):  # reconcile waits for a create still running
            return self._create(vid, size, vtype, name, specs, multiattach, source)

    def _create(self, vid, size, vtype, name, specs, multiattach, source) -> dict:
        with self.db.transaction() as db:
            if source:  # checked again in the write: the source cannot go meanwhile
                self._check_source(db, source)
            at = now()
            db.execute("INSERT INTO volumes (id, name, size, status, volume_type_id, "
                       "multiattach, backend, error, created_at, updated_at, snapshot_id, "
                       "source_volid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (vid, name, size, "creating", vtype["id"], int(multiattach),
                        source["backend"] if source else None, None, at, at,
                        source and source.get("snapshot"), source and source.get("volume")))
        volume = {"id": vid, "size": size, "multiattach": multiattach}
        try:
            if source:
                backend = source["backend"]
                if backend and not self._room(backend, size):
                    raise ControlError(f"backend {backend} has no room for {size} GiB")
                if source.get("snapshot"):
                    self.driver(backend).create_volume_from_snapshot(
                        volume, {"id": source["snapshot"], "volume_id": source["id"],
                                 "volume_size": source["size"]})
                else:
                    self.driver(backend).create_cloned_volume(
                        volume, {"id": source["id"], "size": source["size"]})
            else:
                backend = self.schedule(specs, size)
                self._set(vid, backend=backend)
                self.driver(backend).create_volume(volume)
        except Exception as e:
            LOG.warning("volume %s: creation failed: %s", vid, e)
            self._set(vid, status="error", error=str(e))
            return self.show(vid)
        self._set(vid, status="available")
        return self.show(vid)

    def _source(self, snapshot_id: str | None, source_volid: str | None) -> dict | None:
        """The source volume's row (as a dict) and size; `snapshot`: the snapshot id,
        or `volume`: the volume copied."""
        db = self.db.connection()
        if snapshot_id:
            snap = self._snapshot_row(snapshot_id)
            row = self._volume_row(snap["volume_id"])
            source = {**dict(row), "size": snap["size"], "snapshot": snap["id"]}
        elif source_volid:
            row = self._volume_row(source_volid)
            source = {**dict(row), "volume": row["id"]}
        else:
            return None
        self._check_source(db, source)
        if not source["backend"]:
            raise Conflict(f"volume {source['id']} has no backend: nothing to copy")
        return source

    def _check_source(self, db, source: dict) -> None:
        if source.get("snapshot"):
            snap = self._snapshot_row(source["snapshot"], db)
            if snap["status"] != "available":
                raise Conflict(f"snapshot {snap['id']} is {snap['status']}, not available")
        else:
            row = self._volume_row(source["volume"], db)
            if row["status"] not in ("available", "in-use"):
                raise Conflict(f"volume {row['id']} is {row['status']}: a copy needs an "
                               "available or in-use volume")

    @staticmethod
    def _refuse_while_copied(db, vid: str) -> None:
        """A volume being copied (create --source-volid) keeps its data and size."""
        if db.execute("SELECT 1 FROM volumes WHERE source_volid=? AND status='creating'",
                      (vid,)).fetchone():
            raise Conflict(f"volume {vid} is being copied to a new volume: try again after")

    def _room(self, backend: str, size: int) -> bool:
        # the stats _fits has just refreshed, as schedule() reads them
        pool = self.driver(backend).get_volume_stats()["pools"][0]
        return no_room(pool, size) is None

    def delete(self, ref: str) -> None:
        self.authorize("volume:delete")
        with self.db.transaction() as db:
            row = self._volume_row(ref, db)
            if row["status"] not in ("available", "error"):
                raise Conflict(f"volume {row['id']} is {row['status']}: only available or "
                               "error volumes can be deleted")
            if self._attachments(row["id"], db):
                raise Conflict(f"volume {row['id']} has attachments")
            self._refuse_while_copied(db, row["id"])
            snaps = db.execute("SELECT COUNT(*) FROM snapshots WHERE volume_id=?",
                               (row["id"],)).fetchone()[0]
            if snaps:
                raise Conflict(f"volume {row['id']} still has {snaps} dependent snapshot(s): "
                               "delete them first")
            db.execute("UPDATE volumes SET status='deleting', updated_at=? WHERE id=?",
                       (now(), row["id"]))
        if row["backend"]:
            try:
                self.driver(row["backend"]).delete_volume({"id": row["id"],
                                                           "size": row["size"]})
            except Exception as e:
                self._set(row["id"], status="error_deleting", error=str(e))
                raise ControlError(f"volume {row['id']}: delete failed: {e}") from e
        with self.db.transaction() as db:
            db.execute("DELETE FROM volumes WHERE id=?", (row["id"],))

    def extend(self, ref: str, new_size: int) -> dict:
        self.authorize("volume:extend")
        with self.db.transaction() as db:
            row = self._volume_row(ref, db)
            if row["status"] != "available":
                raise Conflict(f"volume {row['id']} is {row['status']}: extend needs available")
            self._refuse_while_copied(db, row["id"])
            if (not isinstance(new_size, int) or isinstance(new_size, bool)
                    or not row["size"] < new_size <= MAX_SIZE_GB):
                raise InvalidInput(f"new size must be larger than {row['size']} GiB, at most "
                                   f"{MAX_SIZE_GB}")
            db.execute("UPDATE volumes SET status='extending', updated_at=? WHERE id=?",
                       (now(), row["id"]))
        try:
            self.driver(row["backend"]).extend_volume({"id": row["id"]}, new_size)
        except Exception as e:
            self._set(row["id"], status="available")
            raise ControlError(f"volume {row['id']}: extend failed: {e}") from e
        self._set(row["id"], status="available", size=new_size)
        return self.show(row["id"])

    def retype(self, ref: str, new_type: str) -> dict:
        """Change the volume's type; a change of `multiattach` needs `available`.

        Type and flag change together in one transaction, only after every
        check and the driver agreed: a failed retype leaves both as they were.
        """
        self.authorize("volume:retype")
        row = self._volume_row(ref)
        target = self._type_row(new_type)
        specs = db_mod.loads(target["extra_specs"])
        multiattach = is_multiattach(specs)
        if multiattach != bool(row["multiattach"]):
            if row["status"] != "available":
                raise Conflict(f"volume {row['id']} is {row['status']}: retypes affecting "
                               "multiattach are only allowed on available volumes")
            if multiattach:
                self.authorize("volume:multiattach")
        if not row["backend"]:
            raise Conflict(f"volume {row['id']} has no backend ({row['status']})")
        # the driver decides, as under Cinder, on the stats it refreshes
        drv = self.driver(row["backend"])
        volume = self.driver_volume(row["id"])
        new = {"id": target["id"], "name": target["name"], "extra_specs": specs}
        if drv.reshapes_export(volume, new):
            raise Conflict(f"volume {row['id']} is attached: retypes affecting "
                           "shared_reservations of an NVMe volume are only allowed on "
                           "detached volumes")
        ok, _ = drv.retype(None, volume, new, {}, row["backend"])
        if not ok:
            why = mismatch(drv.get_volume_stats(), specs) or "refused it"
            raise Conflict(f"retype to {target['name']} needs another backend ({row['backend']} "
                           f"{why}); migration is not supported")
        with self.db.transaction() as db:
            now_row = self._volume_row(row["id"], db)
            if (now_row["status"], now_row["multiattach"]) != (row["status"],
                                                               row["multiattach"]):
                raise Conflict(f"volume {row['id']} changed during retype; try again")
            if multiattach != bool(row["multiattach"]) and now_row["status"] != "available":
                raise Conflict("retypes affecting multiattach are only allowed on available "
                               "volumes")
            db.execute("UPDATE volumes SET volume_type_id=?, multiattach=?, updated_at=? "
                       "WHERE id=?", (target["id"], int(multiattach), now(), row["id"]))
        return self.show(row["id"])
