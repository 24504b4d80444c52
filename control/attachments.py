"""Attachments, as Cinder's attachment API: reserve, connect, complete, delete.

A volume that is not multiattach holds at most one attachment (checked and
reserved in one SQLite write transaction); for multiattach volumes the in-use
check is skipped. Connecting and detaching go through the driver.
"""
import contextlib
import logging
import re
import uuid

from shareblock.control import db as db_mod
from shareblock.control.errors import (Conflict, ControlError, Fenced, InUse, InvalidInput,
                                       NotFound)
from shareblock.control.policy import PolicyNotAuthorized
from shareblock.control.reconcile import REPAIRS
from shareblock.control.records import CONNECTED, now
from shareblock.targets import names
from shareblock.targets.base import ModeUnsupported, ReservationsUnsupported

SINCE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$")
LOG = logging.getLogger("shareblock.control")
LIVE_ATTACHMENT = ("reserved", "attaching", "attached", "detaching")


def refusal_reason(e: Exception) -> str:
    """A refused attach's reason, as a metric label: few values, never a message."""
    if isinstance(e, PolicyNotAuthorized):
        return "policy"
    if isinstance(e, (ModeUnsupported, ReservationsUnsupported)) or isinstance(
            e.__cause__, (ModeUnsupported, ReservationsUnsupported)):
        return "mode_unsupported"
    for kind, reason in ((Fenced, "fenced"), (InUse, "in_use"), (InvalidInput, "invalid_input"),
                         (NotFound, "not_found"), (Conflict, "conflict")):
        if isinstance(e, kind):
            return reason
    return "backend_failed"


class Attachments:
    @staticmethod
    def _attachment_view(row) -> dict:
        return {"id": row["id"], "volume_id": row["volume_id"], "status": row["status"],
                "attach_mode": row["attach_mode"], "instance": row["instance_uuid"],
                "connector": db_mod.loads(row["connector"]),
                "connection_info": db_mod.loads(row["connection_info"]),
                "reason": row["reason"], "attached_at": row["updated_at"]
                if row["status"] == "attached" else None}

    def attachment_show(self, att_id: str) -> dict:
        self.authorize("volume:get")
        return self._attachment_view(self._attachment_row(att_id))

    def attachment_list(self, volume: str | None = None) -> list[dict]:
        self.authorize("volume:get")
        if volume:
            rows = self._attachments(self._volume_row(volume)["id"])
        else:
            rows = self.db.query("SELECT * FROM attachments ORDER BY created_at")
        return [self._attachment_view(r) for r in rows]

    def attachment_create(self, volume: str, connector: dict | None = None, mode: str = "rw",
                          instance: str | None = None) -> dict:
        """Reserve (and with a connector, also connect), as Cinder's attachment-create."""
        with self._counting_refusals():
            return self._attachment_create(volume, connector, mode, instance)

    @contextlib.contextmanager
    def _counting_refusals(self):
        """A refused attach is counted by reason, then raised as it was."""
        try:
            yield
        except (ControlError, PolicyNotAuthorized) as e:
            reason = refusal_reason(e)
            try:
                with self.db.transaction() as db:
                    db.execute("INSERT INTO refusals VALUES (?, 1) ON CONFLICT(reason) DO "
                               "UPDATE SET count = count + 1", (reason,))
            except Exception as counting:  # never hides the refusal itself
                LOG.warning("could not count a refused attach (%s): %s", reason, counting)
            raise

    def refusal_counts(self) -> dict[str, int]:
        self.authorize("volume:get")
        return {r["reason"]: r["count"] for r in self.db.query("SELECT * FROM refusals")}

    def _attachment_create(self, volume: str, connector: dict | None, mode: str,
                           instance: str | None) -> dict:
        self.authorize("volume:attachment_create")
        if mode not in ("rw", "ro"):
            raise InvalidInput(f"attach mode {mode!r} must be rw or ro")
        if connector is None:
            return self.attachment_show(self._reserve(volume, mode, instance))
        self.authorize("volume:attachment_update")
        vol = self._volume_row(volume)
        host_id = self._check_connector(vol, connector)
        # Reserved and connecting in one write, the volume's lock held from it to the
        # end (as attachment_update holds it): reconcile never mistakes this for an
        # update a crash cut short.
        with self.locks.hold(vol["id"]):
            att_id = self._reserve(vol["id"], mode, instance, connector, host_id)
            try:
                return self._connect(att_id, vol["id"], connector, host_id, mode)
            except Exception:
                self._drop_reservation(att_id)
                raise

    def _reserve(self, volume: str, mode: str, instance: str | None,
                 connector: dict | None = None, host_id: str | None = None) -> str:
        """The in-use check and the new attachment: one write transaction. With a
        connector the attachment is `attaching` at once (its host named)."""
        att_id = str(uuid.uuid4())
        with self.db.transaction() as db:
            row = self._volume_row(volume, db)
            live = [a for a in self._attachments(row["id"], db) if a["status"] in LIVE_ATTACHMENT]
            if row["multiattach"]:
                # Another attachment's detach does not hold this one up: each
                # attachment is its own, and the volume's lock orders their work.
                if row["status"] not in ("available", "reserved", "attaching", "in-use",
                                         "detaching"):
                    raise Conflict(f"volume {row['id']} is {row['status']}")
            elif (row["status"] != "available" or live) and not self._same_instance(
                    row, live, instance):
                raise InUse(f"volume {row['id']} is {row['status']} and not multiattach: "
                            "it takes one attachment at a time")
            at = now()
            db.execute("INSERT INTO attachments VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (att_id, row["id"], "attaching" if connector else "reserved", mode,
                        db_mod.dumps(connector), host_id, instance, None, None, at, at))
            self._settle_status(db, row["id"])
        return att_id

    @staticmethod
    def _same_instance(row, live, instance: str | None) -> bool:
        """A live migration (Cinder bug 1694530): Nova attaches the volume to the same
        instance on the destination host before it deletes the source's attachment;
        that second attachment is allowed, any other instance's is not."""
        return (instance is not None and row["status"] in ("reserved", "in-use")
                and any(a["instance_uuid"] == instance for a in live))

    def _check_connector(self, vol, connector) -> str:
        """The connector's host id, validated before anything is written."""
        if not isinstance(connector, dict):
            raise InvalidInput("connector must be a JSON object")
        if not vol["backend"]:
            raise Conflict(f"volume {vol['id']} has no backend ({vol['status']})")
        try:
            host_id = self.driver(vol["backend"]).host_id(connector)
        except names.InvalidName as e:
            raise InvalidInput(str(e)) from e
        node = self.fence_of(self._fences(), vol["id"], connector, host_id)
        if node:
            raise Fenced(f"node {node} is fenced at the target: unfence it first")
        return host_id

    def _drop_reservation(self, att_id: str) -> None:
        with self.db.transaction() as db:
            att = db.execute("SELECT * FROM attachments WHERE id=?", (att_id,)).fetchone()
            if att is None:
                return
            db.execute("DELETE FROM attachments WHERE id=?", (att_id,))
            self._settle_status(db, att["volume_id"])

    def attachment_update(self, att_id: str, connector: dict) -> dict:
        """Give the attachment its host: the driver admits it and returns connection info."""
        with self._counting_refusals():
            return self._attachment_update_checked(att_id, connector)

    def _attachment_update_checked(self, att_id: str, connector: dict) -> dict:
        self.authorize("volume:attachment_update")
        volume_id = self._attachment_row(att_id)["volume_id"]
        host_id = self._check_connector(self._volume_row(volume_id), connector)
        # The whole update holds the volume's lock: reconcile, which takes it too,
        # then never mistakes an update in progress for one a crash cut short.
        with self.locks.hold(volume_id):
            return self._attachment_update(att_id, connector, host_id)

    def _attachment_update(self, att_id: str, connector: dict, host_id: str) -> dict:
        with self.db.transaction() as db:
            att = self._attachment_row(att_id, db)
            if att["status"] != "reserved":
                raise Conflict(f"attachment {att_id} is {att['status']}, not reserved")
            db.execute("UPDATE attachments SET status='attaching', connector=?, host_id=?, "
                       "updated_at=? WHERE id=?",
                       (db_mod.dumps(connector), host_id, now(), att_id))
            self._settle_status(db, att["volume_id"])
        return self._connect(att_id, att["volume_id"], connector, host_id, att["attach_mode"])

    def _connect(self, att_id: str, volume_id: str, connector: dict, host_id: str,
                 mode: str) -> dict:
        """An `attaching` attachment's admit through the driver, and its record."""
        try:
            drv = self.driver(self._volume_row(volume_id)["backend"])
            volume = self.driver_volume(volume_id)
            drv.create_export(None, volume, connector)
            info = drv.initialize_connection(volume, {**connector, "mode": mode})
        except Exception as e:
            with self.db.transaction() as db:  # back to reserved: nothing half-made
                db.execute("UPDATE attachments SET status='reserved', connector=NULL, "
                           "host_id=NULL, updated_at=? WHERE id=?", (now(), att_id))
                self._settle_status(db, volume_id)
            self._revoke_if_unused(volume_id, att_id, connector)
            if isinstance(e, names.InvalidName):
                raise InvalidInput(str(e)) from e
            if isinstance(e, (ModeUnsupported, ReservationsUnsupported)):
                raise Conflict(f"attachment {att_id}: {e}") from e
            raise ControlError(f"attachment {att_id}: the backend failed: {e}") from e
        decided = info["data"].get("shareblock_guard")
        with self.db.transaction() as db:
            db.execute("UPDATE attachments SET connection_info=?, attach_mode=?, reason=?, "
                       "updated_at=? WHERE id=?",
                       (db_mod.dumps(info), info["data"]["access_mode"],
                        decided["reason"] if decided else None, now(), att_id))
            if decided:
                self._event(db, volume_id, host_id, decided["filesystem"], decided["action"],
                            decided["reason"])
        return self.attachment_show(att_id)

    def _revoke_if_unused(self, volume_id: str, att_id: str, connector: dict) -> None:
        try:
            volume = self.driver_volume(volume_id)
            drv = self.driver(self._volume_row(volume_id)["backend"])
            drv.terminate_connection(volume, connector, attachment={"id": att_id})
        except Exception as e:  # reconcile cleans up what this could not
            LOG.warning("volume %s: could not roll back the admit: %s", volume_id, e)

    def attachment_complete(self, att_id: str) -> dict:
        self.authorize("volume:attachment_complete")
        with self.db.transaction() as db:
            att = self._attachment_row(att_id, db)
            if att["status"] not in CONNECTED:
                raise Conflict(f"attachment {att_id} is {att['status']}, not attaching")
            db.execute("UPDATE attachments SET status='attached', updated_at=? WHERE id=?",
                       (now(), att_id))
            self._settle_status(db, att["volume_id"])
        return self.attachment_show(att_id)

    def attachment_delete(self, att_id: str) -> None:
        """Detach: revoke the host unless another attachment uses it; the others stay."""
        self.authorize("volume:attachment_delete")
        with self.locks.hold(self._attachment_row(att_id)["volume_id"]):
            self._attachment_delete(att_id)

    def _attachment_delete(self, att_id: str) -> None:
        with self.db.transaction() as db:
            att = self._attachment_row(att_id, db)
            db.execute("UPDATE attachments SET status='detaching', updated_at=? WHERE id=?",
                       (now(), att_id))
            self._settle_status(db, att["volume_id"])
        connector = db_mod.loads(att["connector"])
        if connector:
            vol = self._volume_row(att["volume_id"])
            drv = self.driver(vol["backend"])
            volume = self.driver_volume(vol["id"])
            try:
                shared = drv.terminate_connection(volume, connector,
                                                  attachment={"id": att_id})
                if shared is not True:
                    drv.remove_export(None, volume)
            except Exception as e:
                raise ControlError(f"attachment {att_id}: detach failed ({e}); it stays "
                                   "detaching until reconcile") from e
        with self.db.transaction() as db:
            db.execute("DELETE FROM attachments WHERE id=?", (att_id,))
            self._settle_status(db, att["volume_id"])

    def event_summary(self) -> dict:
        """What the metrics count from the event log, aggregated by SQLite: each
        action's count and latest time, the repairs of every reconcile by kind, and
        each volume's latest guard decision (demoted or warned)."""
        self.authorize("volume:get")
        actions = {r["action"]: {"count": r["n"], "last_at": r["at"]} for r in self.db.query(
            "SELECT action, COUNT(*) AS n, MAX(at) AS at FROM events GROUP BY action")}
        sums = ", ".join(f"SUM(json_extract(detail, '$.{kind}')) AS {kind}" for kind in REPAIRS)
        row = self.db.query(f"SELECT {sums} FROM events WHERE action='reconciled'")[0]  # noqa: S608
        repairs = {kind: row[kind] or 0 for kind in REPAIRS}
        guard = {r["volume_id"]: {"action": r["action"], "filesystem": r["filesystem"],
                                  "at": r["at"]}
                 for r in self.db.query(
                     "SELECT e.volume_id, e.action, e.filesystem, e.at FROM events e JOIN "
                     "(SELECT MAX(id) AS id FROM events WHERE action IN ('demoted','warned') "
                     "GROUP BY volume_id) last ON e.id = last.id")}
        return {"actions": actions, "repairs": repairs, "last_guard": guard}

    def events(self, volume: str | None = None, since: str | None = None) -> list[dict]:
        """The event log, oldest first; of one volume, and from `since` on (a UTC
        time as the log writes them, ISO 8601)."""
        self.authorize("volume:get")
        where, args = [], []
        if volume:
            where.append("volume_id=?")
            args.append(self._volume_row(volume)["id"])
        if since is not None:
            if not isinstance(since, str) or not SINCE_RE.match(since):
                raise InvalidInput(f"since {since!r} must be a UTC time, "
                                   "YYYY-MM-DDTHH:MM:SS")
            where.append("at >= ?")
            args.append(since)
        rows = self.db.query("SELECT * FROM events" + (" WHERE " + " AND ".join(where)
                                                       if where else "") + " ORDER BY id",
                             tuple(args))
        return [{**dict(r), "reason": r["detail"]} for r in rows]
