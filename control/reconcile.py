"""Reconcile: the database, the storage node and configfs back in line."""
import contextlib
import logging

from shareblock.control import db as db_mod
from shareblock.control.errors import NotFound
from shareblock.control.records import CONNECTED, now

LOG = logging.getLogger("shareblock.control")
RECONCILE_BATCH = 100  # volumes per batch: their locks held together, one apply
# what a reconcile run repaired, by kind (its report's lists)
REPAIRS = ("admitted", "revoked", "unexported", "finished_detach", "rolled_back", "volumes")


class Reconcile:
    def reconcile(self, progress=None) -> dict:
        """Bring the state store and the targets back in line after a crash or reboot:
        ACLs equal attachments, no orphan exports, no operation left half-way.

        The database is the truth for what should be; configfs for what is; the
        storage node's desired documents are rewritten on the way (the driver's
        batch path). Volumes are repaired in batches holding their locks, with
        their attachments read inside them: an attach or detach running meanwhile
        is waited for, not undone. configfs is read once up front; an operation
        finishing between that read and the lock makes at worst an idempotent step
        run again. `progress(done, total)` hears of each batch of volumes done.
        """
        self.authorize("shareblock:reconcile")
        total = self.db.query("SELECT COUNT(*) AS n FROM volumes WHERE backend IS NOT NULL")[0]["n"]
        done = 0
        report = {"finished_detach": [], "revoked": [], "admitted": [], "unexported": [],
                  "volumes": [], "rolled_back": []}
        report["snapshots"] = self._finish_snapshots()
        for row in self.db.query("SELECT * FROM volumes WHERE status IN "
                                 "('creating','deleting','extending')"):
            if row["status"] == "deleting":
                self._finish_delete(row)  # the delete was asked for: finish it
            elif row["status"] == "creating":
                # Cinder's answer: the volume goes to error; its half-made storage goes.
                # A create holds the new volume's lock: one still running is waited for.
                with self.locks.hold(row["id"]):
                    if self._volume_row(row["id"])["status"] != "creating":
                        continue
                    self._drop_storage(row)
                    self._set(row["id"], status="error", error="create was interrupted")
            else:
                self._set(row["id"], status="available")
            report["volumes"].append(row["id"])
        # An update that never answered its caller (no process holds its volume's
        # lock): back to reserved, as its own failure path does; the admit it may
        # have made is revoked below.
        for att in self.db.query("SELECT id, volume_id FROM attachments WHERE "
                                 "status='attaching' AND connection_info IS NULL"):
            with self.locks.hold(att["volume_id"]), self.db.transaction() as db:
                if db.execute("UPDATE attachments SET status='reserved', connector=NULL, "
                              "host_id=NULL, updated_at=? WHERE id=? AND status='attaching' "
                              "AND connection_info IS NULL", (now(), att["id"])).rowcount:
                    report["rolled_back"].append(att["id"])
        for att in self.db.query("SELECT id FROM attachments WHERE status='detaching'"):
            try:
                self.attachment_delete(att["id"])
            except NotFound:
                continue  # its own detach finished it meanwhile
            report["finished_detach"].append(att["id"])
        for backend in self.conf.enabled_backends:
            drv = self.driver(backend)
            volumes = [r["id"] for r in self.db.query(
                "SELECT id FROM volumes WHERE backend=? ORDER BY id", (backend,))]
            held = drv.exports()  # configfs, read once for the whole backend
            recorded = drv.recorded_exports()  # and the node's documents
            for vid in (set(held) | set(recorded)) - set(volumes):
                with self.locks.hold(vid):
                    if self.db.query("SELECT 1 FROM volumes WHERE id=?", (vid,)):
                        continue  # created after the volumes were read: not an orphan
                    drv.remove_export(None, {"id": vid})
                report["unexported"].append(vid)
            for start in range(0, len(volumes), RECONCILE_BATCH):
                batch = volumes[start:start + RECONCILE_BATCH]
                self._reconcile_batch(drv, batch, held, recorded, report)
                done += len(batch)
                if progress:
                    progress(done, max(total, done))
        with self.db.transaction() as db:
            for row in db.execute("SELECT id FROM volumes WHERE status NOT IN "
                                  "('error','error_deleting')").fetchall():
                self._settle_status(db, row["id"])
            # one event per run, its repairs counted by kind (the exporter's
            # shareblock_reconcile_repairs_total and last reconcile time)
            self._event(db, None, None, None, "reconciled", db_mod.dumps(
                {k: len(v) for k, v in report.items() if k in REPAIRS}))
        return report

    def _finish_snapshots(self) -> list[str]:
        """Snapshot work a crash cut short (each operation holds its volume's lock, so
        one found with the lock free was cut short): a revert of a volume still
        `reverting` is finished (the pool's revert resumes), a delete is finished,
        a snapshot being taken goes to `error` (as Cinder's) with what was made of
        it removed."""
        done = []
        for found in self.db.query("SELECT id, volume_id FROM snapshots WHERE status IN "
                                   "('creating','deleting','restoring')"):
            with self.locks.hold(found["volume_id"]):
                snap = self._snapshot_row(found["id"])
                vol = self._volume_row(snap["volume_id"])
                try:
                    if snap["status"] == "restoring" and vol["status"] == "reverting":
                        self._revert(vol, snap)
                    elif snap["status"] == "restoring":  # the revert's end was written
                        self._set_snapshot(snap["id"], status="available")
                    elif snap["status"] == "deleting":
                        self._delete_snapshot(vol["backend"], snap)
                    elif snap["status"] == "creating":
                        self.driver(vol["backend"]).delete_snapshot(
                            {"id": snap["id"], "volume_id": vol["id"]})
                        self._set_snapshot(snap["id"], status="error",
                                           error="snapshot was interrupted")
                    else:
                        continue  # finished meanwhile
                except Exception as e:  # recorded on the rows by the step itself
                    LOG.warning("snapshot %s: could not finish %s: %s", snap["id"],
                                snap["status"], e)
            done.append(snap["id"])
        return done

    def _finish_delete(self, row) -> None:
        try:
            if row["backend"]:
                self.driver(row["backend"]).delete_volume({"id": row["id"],
                                                           "size": row["size"]})
        except Exception as e:
            self._set(row["id"], status="error_deleting", error=str(e))
            return
        with self.db.transaction() as db:
            db.execute("DELETE FROM volumes WHERE id=?", (row["id"],))

    def _drop_storage(self, row) -> None:
        if not row["backend"]:
            return  # not scheduled yet: nothing was made
        try:
            self.driver(row["backend"]).delete_volume({"id": row["id"], "size": row["size"]})
        except Exception as e:  # the volume stays in error; delete retries
            LOG.warning("volume %s: could not remove its half-made storage: %s", row["id"], e)

    def _reconcile_batch(self, drv, vids: list[str], held: dict, recorded: dict,
                         report: dict) -> None:
        """One batch of volumes brought to their attachments through the driver's
        batch path, each volume's lock held (taken in id order: no deadlock with
        an operation, which holds one)."""
        with contextlib.ExitStack() as stack:
            for vid in vids:
                stack.enter_context(self.locks.hold(vid))
            volumes = [self.driver_volume(vid) for vid in vids
                       if self.db.query("SELECT 1 FROM volumes WHERE id=?", (vid,))]
            for volume in volumes:  # only connected, live attachments count
                volume["volume_attachment"] = [
                    a for a in volume["volume_attachment"]
                    if a["attach_status"] in CONNECTED]
            done = drv.sync_exports(volumes, held, recorded)
            for key in ("admitted", "revoked", "unexported"):
                report[key] += done[key]
            for decided in done["decisions"]:  # the guard decided a rising mode: record it
                with self.db.transaction() as db:
                    if decided["action"] == "demoted":
                        db.execute("UPDATE attachments SET attach_mode='ro', reason=?, "
                                   "updated_at=? WHERE volume_id=? AND host_id=? AND status "
                                   "IN (?, ?)", (decided["reason"], now(), decided["volume_id"],
                                                 decided["host"], *CONNECTED))
                    self._event(db, decided["volume_id"], decided["host"],
                                decided["filesystem"], decided["action"], decided["reason"])
