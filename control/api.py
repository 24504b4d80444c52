"""The control plane's Python API: what the CLI and the tests call.

Semantics are the seed's (Cinder's multi-attach): the volume's `multiattach`
flag comes from its type (`multiattach="<is> True"`, exactly); scheduling needs
a backend reporting the capability; retype that changes the flag needs an
`available` volume and passes policy; a volume that is not multiattach holds at
most one attachment (checked and reserved in one SQLite write transaction);
for multiattach volumes the in-use check is skipped.
"""
import contextlib
import datetime
import logging
import re
import uuid

from shareblock.control import config as config_mod
from shareblock.control import db as db_mod
from shareblock.control.locks import VolumeLocks
from shareblock.control.policy import Policy, PolicyNotAuthorized
from shareblock.driver import guard
from shareblock.driver.volume_driver import ShareBlockDriver
from shareblock.targets import names

LOG = logging.getLogger("shareblock.control")
MULTIATTACH_SPEC = "<is> True"
TYPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,254}$")
SPEC_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_:.-]{0,254}$")
SPEC_VALUE_RE = re.compile(r"^[\x20-\x7e]{0,255}$")
MAX_SIZE_GB = 2 ** 31 - 1  # Cinder's size column; larger ints do not fit SQLite's INTEGER
LIVE_ATTACHMENT = ("reserved", "attaching", "attached", "detaching")
RECONCILE_BATCH = 100  # volumes per batch: their locks held together, one apply

__all__ = ["ControlPlane", "ControlError", "NotFound", "InvalidInput", "Conflict",
           "PolicyNotAuthorized"]


class ControlError(RuntimeError):
    pass


class NotFound(ControlError):
    pass


class InvalidInput(ControlError, ValueError):
    pass


class Conflict(ControlError):
    """The request does not fit the volume's or attachment's state."""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def is_multiattach(extra_specs: dict) -> bool:
    return extra_specs.get("multiattach") == MULTIATTACH_SPEC


def no_room(pool: dict, size: int) -> str | None:
    """Why the pool cannot take `size` GiB, as Cinder's CapacityFilter decides; None
    if it can. Thin pools over-subscribe up to max_over_subscription_ratio, but a
    full pool takes nothing: its sparse volumes could not be written."""
    total = pool.get("total_capacity_gb", 0)
    free = pool.get("free_capacity_gb", 0) - total * pool.get("reserved_percentage", 0) / 100
    if free <= 0:
        return f"{pool.get('free_capacity_gb', 0)} GiB free"
    if not pool.get("thin_provisioning_support"):
        return None if free >= size else f"{free:.2f} GiB free"
    ratio = pool.get("max_over_subscription_ratio", 1.0)
    provisioned = pool.get("provisioned_capacity_gb", 0)
    if total and (provisioned + size) / total > ratio:
        return f"{provisioned} of {total} GiB provisioned, over-subscription ratio {ratio}"
    if free * ratio < size:
        return f"{free:.2f} GiB free, over-subscription ratio {ratio}"
    return None


class ControlPlane:
    def __init__(self, conf, user: str | None = None, drivers: dict | None = None,
                 database: db_mod.Database | None = None):
        self.conf = conf
        self.user = user or config_mod.current_user()
        self.roles = config_mod.roles_of(conf, self.user)
        self.policy = Policy(conf.policy_file)
        self.db = database or db_mod.Database(f"{conf.state_path}/shareblock.sqlite")
        self.locks = VolumeLocks(f"{conf.state_path}/locks")
        self._drivers = drivers
        self._ready: dict[str, object] = {}

    # --- plumbing ---------------------------------------------------------------
    def authorize(self, rule: str) -> None:
        self.policy.check(rule, self.user, self.roles)

    def drivers(self) -> dict:
        if self._drivers is None:
            self._drivers = {name: ShareBlockDriver(config_mod.BackendConf(self.conf, name))
                             for name in self.conf.enabled_backends}
        return self._drivers

    def driver(self, backend: str):
        drv = self.drivers().get(backend)
        if drv is None:
            raise ControlError(f"backend {backend!r} is not enabled")
        if backend not in self._ready:
            drv.do_setup(None)
            self._ready[backend] = drv
        return drv

    # --- volume types -------------------------------------------------------------
    def _type_row(self, ref: str, db=None):
        db = db or self.db.connection()
        row = db.execute("SELECT * FROM volume_types WHERE id=? OR name=?", (ref, ref)).fetchone()
        if row is None:
            raise NotFound(f"volume type {ref!r} not found")
        return row

    @staticmethod
    def _type_view(row) -> dict:
        return {"id": row["id"], "name": row["name"],
                "extra_specs": db_mod.loads(row["extra_specs"]),
                "is_public": True}

    def type_create(self, name: str) -> dict:
        self.authorize("volume_extension:types_manage")
        if not isinstance(name, str) or not TYPE_NAME_RE.match(name):
            raise InvalidInput(f"volume type name {name!r}: 1-255 of letters, digits, "
                               "space . _ : - starting with a letter or digit")
        with self.db.transaction() as db:
            if db.execute("SELECT 1 FROM volume_types WHERE name=?", (name,)).fetchone():
                raise Conflict(f"volume type {name!r} already exists")
            tid = str(uuid.uuid4())
            db.execute("INSERT INTO volume_types VALUES (?,?,?,?)", (tid, name, "{}", now()))
        return self.type_show(tid)

    def type_show(self, ref: str) -> dict:
        return self._type_view(self._type_row(ref))

    def type_list(self) -> list[dict]:
        return [self._type_view(r) for r in self.db.query(
            "SELECT * FROM volume_types ORDER BY name")]

    def type_key(self, ref: str, action: str, specs: dict | list) -> dict:
        """`set` key=value pairs or `unset` keys, as cinderclient's type-key."""
        self.authorize("volume_extension:types_manage")
        if action not in ("set", "unset"):
            raise InvalidInput("type-key action must be set or unset")
        keys = list(specs)
        for key in keys:
            if not isinstance(key, str) or not SPEC_KEY_RE.match(key):
                raise InvalidInput(f"extra spec key {key!r} is not valid")
        if action == "set":
            for key, value in specs.items():
                if not isinstance(value, str) or not SPEC_VALUE_RE.match(value):
                    raise InvalidInput(f"extra spec {key}: value must be printable text")
            guard = specs.get("shareblock:fs_guard")
            if guard is not None and guard not in ("enforce", "warn", "off"):
                raise InvalidInput("shareblock:fs_guard must be enforce, warn or off")
        with self.db.transaction() as db:
            row = self._type_row(ref, db)
            current = db_mod.loads(row["extra_specs"])
            if action == "set":
                current.update(specs)
            else:
                for key in keys:
                    current.pop(key, None)
            db.execute("UPDATE volume_types SET extra_specs=? WHERE id=?",
                       (db_mod.dumps(current), row["id"]))
        return self.type_show(row["id"])

    def type_delete(self, ref: str) -> None:
        self.authorize("volume_extension:types_manage")
        with self.db.transaction() as db:
            row = self._type_row(ref, db)
            if db.execute("SELECT 1 FROM volumes WHERE volume_type_id=?", (row["id"],)).fetchone():
                raise Conflict(f"volume type {row['name']!r} is in use")
            db.execute("DELETE FROM volume_types WHERE id=?", (row["id"],))

    # --- scheduling -----------------------------------------------------------------
    def _fits(self, backend: str, specs: dict) -> str | None:
        """None when the backend satisfies the type's capability specs, else why not."""
        stats = self.driver(backend).get_volume_stats(refresh=True)
        pool = (stats.get("pools") or [{}])[0]
        if is_multiattach(specs) and not (stats.get("multiattach") and pool.get("multiattach",
                                                                               True)):
            return "does not report the multiattach capability"
        want = specs.get("volume_backend_name")
        if want and want != stats.get("volume_backend_name"):
            return f"is not volume_backend_name {want}"
        proto = specs.get("storage_protocol")
        if proto:
            allowed = [p.strip() for p in proto.removeprefix("<in>").split()]
            if stats.get("storage_protocol") not in allowed:
                return f"speaks {stats.get('storage_protocol')}, not {proto}"
        return None

    def schedule(self, specs: dict, size: int) -> str:
        reasons, fitting = [], []
        for backend in self.conf.enabled_backends:
            try:
                why = self._fits(backend, specs)
            except Exception as e:  # a broken backend is not a candidate
                why = f"failed: {e}"
            if why:
                reasons.append(f"{backend} {why}")
                continue
            pool = self.driver(backend).get_volume_stats()["pools"][0]
            why = no_room(pool, size)
            if why:
                reasons.append(f"{backend} has no room for {size} GiB ({why})")
                continue
            fitting.append((pool.get("free_capacity_gb", 0), backend))
        if not fitting:
            raise ControlError("no valid backend: " + ("; ".join(reasons) or "none enabled"))
        return max(fitting)[1]

    # --- volumes ----------------------------------------------------------------------
    def _volume_row(self, ref: str, db=None):
        db = db or self.db.connection()
        rows = db.execute("SELECT * FROM volumes WHERE id=? OR name=?", (ref, ref)).fetchall()
        if not rows:
            raise NotFound(f"volume {ref!r} not found")
        if len(rows) > 1:
            raise InvalidInput(f"more than one volume is named {ref!r}: use its id")
        return rows[0]

    def _attachments(self, volume_id: str, db=None) -> list:
        db = db or self.db.connection()
        return db.execute("SELECT * FROM attachments WHERE volume_id=? ORDER BY created_at",
                          (volume_id,)).fetchall()

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

    def create(self, size: int, volume_type: str | None = None, name: str | None = None) -> dict:
        self.authorize("volume:create")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE_GB:
            raise InvalidInput(f"size {size!r} must be a whole number of GiB, 1 to "
                               f"{MAX_SIZE_GB}")
        if name is not None and (not isinstance(name, str) or not TYPE_NAME_RE.match(name)):
            raise InvalidInput(f"volume name {name!r}: 1-255 of letters, digits, "
                               "space . _ : - starting with a letter or digit")
        if volume_type is None:
            raise InvalidInput("a volume type is required (--volume-type)")
        vtype = self._type_row(volume_type)
        specs = db_mod.loads(vtype["extra_specs"])
        multiattach = is_multiattach(specs)
        if multiattach:
            self.authorize("volume:multiattach")
        vid = str(uuid.uuid4())
        with self.db.transaction() as db:
            db.execute("INSERT INTO volumes VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (vid, name, size, "creating", vtype["id"], int(multiattach), None, None,
                        now(), now()))
        try:
            backend = self.schedule(specs, size)
            self._set(vid, backend=backend)
            self.driver(backend).create_volume({"id": vid, "size": size,
                                                "multiattach": multiattach})
        except Exception as e:
            LOG.warning("volume %s: creation failed: %s", vid, e)
            self._set(vid, status="error", error=str(e))
            return self.show(vid)
        self._set(vid, status="available")
        return self.show(vid)

    def _set(self, vid: str, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.db.transaction() as db:
            db.execute(f"UPDATE volumes SET {cols}, updated_at=? WHERE id=?",  # noqa: S608
                       (*fields.values(), now(), vid))

    def delete(self, ref: str) -> None:
        self.authorize("volume:delete")
        with self.db.transaction() as db:
            row = self._volume_row(ref, db)
            if row["status"] not in ("available", "error"):
                raise Conflict(f"volume {row['id']} is {row['status']}: only available or "
                               "error volumes can be deleted")
            if self._attachments(row["id"], db):
                raise Conflict(f"volume {row['id']} has attachments")
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
        why = self._fits(row["backend"], specs) if row["backend"] else "has no backend"
        if why:
            raise Conflict(f"retype to {target['name']} needs another backend ({row['backend']} "
                           f"{why}); migration is not supported")
        ok, _ = self.driver(row["backend"]).retype(None, {"id": row["id"]}, dict(target), {},
                                                   row["backend"])
        if not ok:
            raise ControlError(f"backend {row['backend']} refused the retype")
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

    # --- attachments -------------------------------------------------------------------
    def _attachment_row(self, att_id: str, db=None):
        db = db or self.db.connection()
        row = db.execute("SELECT * FROM attachments WHERE id=?", (att_id,)).fetchone()
        if row is None:
            raise NotFound(f"attachment {att_id!r} not found")
        return row

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
        self.authorize("volume:attachment_create")
        if mode not in ("rw", "ro"):
            raise InvalidInput(f"attach mode {mode!r} must be rw or ro")
        if connector is not None:
            self._check_connector(self._volume_row(volume), connector)
        att_id = str(uuid.uuid4())
        with self.db.transaction() as db:  # the in-use check and the reserve: one step
            row = self._volume_row(volume, db)
            live = [a for a in self._attachments(row["id"], db) if a["status"] in LIVE_ATTACHMENT]
            if row["multiattach"]:
                if row["status"] not in ("available", "reserved", "attaching", "in-use"):
                    raise Conflict(f"volume {row['id']} is {row['status']}")
            elif row["status"] != "available" or live:
                raise Conflict(f"volume {row['id']} is {row['status']} and not multiattach: "
                               "it takes one attachment at a time")
            db.execute("INSERT INTO attachments VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (att_id, row["id"], "reserved", mode, None, None, instance, None, None,
                        now(), now()))
            if row["status"] == "available":
                db.execute("UPDATE volumes SET status='reserved', updated_at=? WHERE id=?",
                           (now(), row["id"]))
        if connector is not None:
            try:
                return self.attachment_update(att_id, connector)
            except Exception:
                self._drop_reservation(att_id)
                raise
        return self.attachment_show(att_id)

    def _check_connector(self, vol, connector) -> str:
        """The connector's host id, validated before anything is written."""
        if not isinstance(connector, dict):
            raise InvalidInput("connector must be a JSON object")
        if not vol["backend"]:
            raise Conflict(f"volume {vol['id']} has no backend ({vol['status']})")
        try:
            return self.driver(vol["backend"]).host_id(connector)
        except names.InvalidName as e:
            raise InvalidInput(str(e)) from e

    def _drop_reservation(self, att_id: str) -> None:
        with self.db.transaction() as db:
            att = db.execute("SELECT * FROM attachments WHERE id=?", (att_id,)).fetchone()
            if att is None:
                return
            db.execute("DELETE FROM attachments WHERE id=?", (att_id,))
            self._settle_status(db, att["volume_id"])

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

    def driver_volume(self, volume_id: str, db=None) -> dict:
        """The volume as the driver sees it: Cinder's fields, with its attachments."""
        row = self._volume_row(volume_id, db)
        vtype = (db or self.db.connection()).execute(
            "SELECT extra_specs FROM volume_types WHERE id=?", (row["volume_type_id"],)).fetchone()
        return {"id": row["id"], "size": row["size"], "multiattach": bool(row["multiattach"]),
                "volume_type": {"extra_specs": db_mod.loads(vtype["extra_specs"]) if vtype
                                else {}},
                "volume_attachment": [
                    {"id": a["id"], "attach_mode": a["attach_mode"], "attach_status": a["status"],
                     "connector": db_mod.loads(a["connector"])}
                    for a in self._attachments(row["id"], db) if a["connector"]]}

    def attachment_update(self, att_id: str, connector: dict) -> dict:
        """Give the attachment its host: the driver admits it and returns connection info."""
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
            vol = self._volume_row(att["volume_id"], db)
            drv = self.driver(vol["backend"])
            mode = att["attach_mode"]
            db.execute("UPDATE attachments SET status='attaching', connector=?, host_id=?, "
                       "updated_at=? WHERE id=?",
                       (db_mod.dumps(connector), host_id, now(), att_id))
            self._settle_status(db, vol["id"])
        try:
            volume = self.driver_volume(vol["id"])
            drv.create_export(None, volume, connector)
            info = drv.initialize_connection(volume, {**connector, "mode": mode})
        except Exception as e:
            with self.db.transaction() as db:  # back to reserved: nothing half-made
                db.execute("UPDATE attachments SET status='reserved', connector=NULL, "
                           "host_id=NULL, updated_at=? WHERE id=?", (now(), att_id))
                self._settle_status(db, vol["id"])
            self._revoke_if_unused(vol["id"], att_id, connector)
            if isinstance(e, names.InvalidName):
                raise InvalidInput(str(e)) from e
            raise ControlError(f"attachment {att_id}: the backend failed: {e}") from e
        decided = info["data"].get("shareblock_guard")
        with self.db.transaction() as db:
            db.execute("UPDATE attachments SET connection_info=?, attach_mode=?, reason=?, "
                       "updated_at=? WHERE id=?",
                       (db_mod.dumps(info), info["data"]["access_mode"],
                        decided["reason"] if decided else None, now(), att_id))
            if decided:
                self._event(db, vol["id"], host_id, decided["filesystem"], decided["action"],
                            decided["reason"])
        return self.attachment_show(att_id)

    @staticmethod
    def _event(db, volume_id, host, filesystem, action, detail) -> None:
        db.execute("INSERT INTO events (at, volume_id, host, filesystem, action, detail) "
                   "VALUES (?,?,?,?,?,?)", (now(), volume_id, host, filesystem, action, detail))

    def events(self, volume: str | None = None) -> list[dict]:
        self.authorize("volume:get")
        if volume:
            rows = self.db.query("SELECT * FROM events WHERE volume_id=? ORDER BY id",
                                 (self._volume_row(volume)["id"],))
        else:
            rows = self.db.query("SELECT * FROM events ORDER BY id")
        return [{**dict(r), "reason": r["detail"]} for r in rows]

    # --- the guard at run time ------------------------------------------------------------
    def guard_pass(self) -> list[dict]:
        """Probe multiattach volumes that several hosts hold rw; where a single-host
        filesystem appeared, demote all writers but one to ro, live, at the target."""
        self.authorize("shareblock:guard")
        done = []
        for vol in self.db.query("SELECT * FROM volumes WHERE multiattach=1 AND status IN "
                                 "('attaching','in-use')"):
            order = []
            for att in self._attachments(vol["id"]):
                if (att["status"] in ("attaching", "attached") and att["attach_mode"] == "rw"
                        and att["host_id"] and att["host_id"] not in order):
                    order.append(att["host_id"])
            if len(order) < 2:
                continue
            with self.locks.hold(vol["id"]):  # no attach changes the writers meanwhile
                drv = self.driver(vol["backend"])
                volume = self.driver_volume(vol["id"])
                mode = drv.guard_mode(volume)
                if mode == "off":
                    continue
                found = drv.probe(vol["id"])
                seen = drv.exports(vol["id"]).get(vol["id"])
                writes = {h: (s.counters or {}).get("write_mbytes")
                          for h, s in (seen.hosts.items() if seen else ())}
                writers = [h for h in order if seen and h in seen.hosts
                           and seen.hosts[h].mode == "rw"]
                for host, decision in guard.at_run_time(writers, writes, order, found.verdict,
                                                        found.filesystem, mode).items():
                    if decision.action == "demoted":
                        drv.set_host_mode(vol["id"], host, "ro")
                    with self.db.transaction() as db:
                        if decision.action == "demoted":
                            db.execute("UPDATE attachments SET attach_mode='ro', reason=?, "
                                       "updated_at=? WHERE volume_id=? AND host_id=?",
                                       (decision.reason, now(), vol["id"], host))
                        self._event(db, vol["id"], host, decision.filesystem, decision.action,
                                    decision.reason)
                    done.append({"volume_id": vol["id"], "host": host, "action": decision.action,
                                 "filesystem": decision.filesystem, "reason": decision.reason})
        return done

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
            if att["status"] not in ("attaching", "attached"):
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

    # --- reconcile ----------------------------------------------------------------------
    def reconcile(self) -> dict:
        """Bring the state store and the targets back in line after a crash or reboot:
        ACLs equal attachments, no orphan exports, no operation left half-way.

        The database is the truth for what should be; configfs for what is; the
        storage node's desired documents are rewritten on the way (the driver's
        batch path). Volumes are repaired in batches holding their locks, with
        their attachments read inside them: an attach or detach running meanwhile
        is waited for, not undone. configfs is read once up front; an operation
        finishing between that read and the lock makes at worst an idempotent step
        run again.
        """
        self.authorize("shareblock:reconcile")
        report = {"finished_detach": [], "revoked": [], "admitted": [], "unexported": [],
                  "volumes": [], "rolled_back": []}
        for row in self.db.query("SELECT * FROM volumes WHERE status IN "
                                 "('creating','deleting','extending')"):
            if row["status"] == "deleting":
                self._finish_delete(row)  # the delete was asked for: finish it
            elif row["status"] == "creating":
                # Cinder's answer: the volume goes to error; its half-made storage goes
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
            for vid in (set(held) | set(drv.recorded_exports())) - set(volumes):
                with self.locks.hold(vid):
                    if self.db.query("SELECT 1 FROM volumes WHERE id=?", (vid,)):
                        continue  # created after the volumes were read: not an orphan
                    drv.remove_export(None, {"id": vid})
                report["unexported"].append(vid)
            for start in range(0, len(volumes), RECONCILE_BATCH):
                self._reconcile_batch(drv, volumes[start:start + RECONCILE_BATCH], held,
                                      report)
        with self.db.transaction() as db:
            for row in db.execute("SELECT id FROM volumes WHERE status NOT IN "
                                  "('error','error_deleting')").fetchall():
                self._settle_status(db, row["id"])
        return report

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

    def _reconcile_batch(self, drv, vids: list[str], held: dict, report: dict) -> None:
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
                    if a["attach_status"] in ("attaching", "attached")]
            done = drv.sync_exports(volumes, held)
            for key in ("admitted", "revoked", "unexported"):
                report[key] += done[key]
            for decided in done["decisions"]:  # the guard decided a rising mode: record it
                with self.db.transaction() as db:
                    if decided["action"] == "demoted":
                        db.execute("UPDATE attachments SET attach_mode='ro', reason=?, "
                                   "updated_at=? WHERE volume_id=? AND host_id=? AND status "
                                   "IN ('attaching','attached')",
                                   (decided["reason"], now(), decided["volume_id"],
                                    decided["host"]))
                    self._event(db, decided["volume_id"], decided["host"],
                                decided["filesystem"], decided["action"], decided["reason"])
