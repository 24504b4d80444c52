"""The backend driver, with Cinder's method names and semantics, free of Cinder.

`configuration` is anything with `safe_get(name)`: Cinder's per-backend
Configuration inside Cinder, or shareblock's own for the embedded control plane.
Volumes and attachments are read by attribute or key, so Cinder's versioned
objects and plain dicts both work.
"""
import logging
import os

from shareblock.driver import access, capabilities, guard, pools
from shareblock.driver.access import field
from shareblock.driver.interface import VolumeDriverCore
from shareblock.driver.secret_key import backend_key
from shareblock.targets import crashpoints, names
from shareblock.targets import credentials as creds_mod
from shareblock.targets.base import (ActualExport, ActualHost, Credentials, Desired, HostAccess,
                                     ModeUnsupported, NotFound, Portal, TargetError)
from shareblock.targets.factory import open_target

LOG = logging.getLogger("shareblock.driver")
VERSION = "0.1.0"
DEFAULT_PORTS = {"iscsi": 3260, "nvmet_tcp": 4420}
PROTOCOL_NAMES = {"iscsi": "iSCSI", "nvmet_tcp": "NVMe-oF"}


class VolumeInUse(RuntimeError):
    """The volume is exported to hosts: what was asked needs it detached."""


class ShareBlockDriver(VolumeDriverCore):
    def __init__(self, configuration, target=None, pool=None):
        self.configuration = configuration
        self.target = target
        self.pool = pool
        self._key: bytes | None = None
        self._stats = {}

    def conf(self, name, default=None):
        value = self.configuration.safe_get(name)
        return default if value is None else value

    @property
    def protocol(self) -> str:
        return self.conf("target_protocol", "iscsi")

    @property
    def backend_name(self) -> str:
        return self.conf("volume_backend_name", "shareblock")

    # --- set-up ---------------------------------------------------------------
    def do_setup(self, context=None) -> None:
        protocol = self.protocol
        if protocol not in DEFAULT_PORTS:
            raise names.InvalidName(f"target_protocol {protocol!r} must be iscsi or nvmet_tcp")
        port = int(self.conf("target_port") or DEFAULT_PORTS[protocol])
        addresses = [self.conf("target_ip_address", "127.0.0.1"),
                     *self.conf("target_secondary_ip_addresses", [])]
        portals = [Portal(a, port) for a in addresses]
        prefix = self.conf("shareblock_iqn_prefix" if protocol == "iscsi"
                           else "shareblock_nqn_prefix")
        node = self.conf("shareblock_storage_node", "local")
        ssh = {}
        if node != "local":
            ssh = {"known_hosts": self.conf("shareblock_known_hosts"),
                   "key_filename": self.conf("shareblock_ssh_key"),
                   "agent_command": self.conf("shareblock_remote_agent",
                                              "shareblock-target-agent")}
        if self.target is None:
            self.target = open_target(
                protocol, portals, node=node, prefix=prefix,
                state_dir=self.conf("shareblock_node_state_path", "/var/lib/shareblock/node"),
                port_ids=self.conf("shareblock_nvmet_port_ids") or None, **ssh)
        if self.pool is None:
            self.pool = pools.parse(self.conf("shareblock_pool",
                                              "file:/var/lib/shareblock/volumes"))
        self._key = backend_key(self.conf("shareblock_secret_key"),
                                self.conf("shareblock_state_path", "/var/lib/shareblock"),
                                names.token("volume_backend_name", self.backend_name))

    def check_for_setup_error(self) -> None:
        """The pool answers and the target can be read back (locally or over SSH)."""
        self.pool.capacity()
        if self.conf("shareblock_storage_node", "local") == "local":
            root = "/sys/kernel/config/" + ("target" if self.protocol == "iscsi" else "nvmet")
            if not os.path.isdir(root):
                raise RuntimeError(f"{root} does not exist: this kernel cannot serve "
                                   f"{PROTOCOL_NAMES[self.protocol]} targets")
        self.target.actual()

    # --- volumes --------------------------------------------------------------
    def create_volume(self, volume):
        self.pool.create(field(volume, "id"), int(field(volume, "size")))
        crashpoints.reached("pool.create")
        return None

    def delete_volume(self, volume):
        vid = field(volume, "id")
        self.target.unexport(vid)
        crashpoints.reached("unexport")
        self.pool.delete(vid)
        crashpoints.reached("pool.delete")

    def extend_volume(self, volume, new_size):
        self.pool.extend(field(volume, "id"), int(new_size))

    def create_cloned_volume(self, volume, src_vref):
        self.pool.clone(field(src_vref, "id"), field(volume, "id"), int(field(volume, "size")))
        crashpoints.reached("pool.create")
        return None

    # --- snapshots ----------------------------------------------------------------
    def create_snapshot(self, snapshot):
        """Taken with the volume in use, nobody detached: crash-consistent on an LVM
        thin pool and on a file pool whose filesystem reflinks; a plain copy
        otherwise (consistent only for a volume no host writes)."""
        sid, vid = field(snapshot, "id"), field(snapshot, "volume_id")
        how = self.pool.snapshot(vid, sid)
        crashpoints.reached("pool.snapshot")
        LOG.info("snapshot %s of volume %s taken (%s)", sid, vid, how)
        return None

    def delete_snapshot(self, snapshot):
        self.pool.delete_snapshot(field(snapshot, "id"))
        crashpoints.reached("pool.delete")

    def create_volume_from_snapshot(self, volume, snapshot):
        self.pool.from_snapshot(field(snapshot, "id"), field(volume, "id"),
                                int(field(volume, "size")))
        crashpoints.reached("pool.create")
        return None

    def revert_to_snapshot(self, context, volume, snapshot):
        """The volume's data becomes the snapshot's. Cinder reverts only volumes
        with no attachment: an export left without hosts is removed first, and a
        volume some host still reaches is refused."""
        vid = field(volume, "id")
        held = self.target.actual(vid).get(vid)
        if held is not None and held.hosts:
            raise VolumeInUse(f"volume {vid} is exported to {len(held.hosts)} host(s): "
                              "detach them before a revert")
        if held is not None or vid in self.target.desired(vid):
            self.target.unexport(vid)
            crashpoints.reached("unexport")
        self.pool.revert(vid, field(snapshot, "id"), int(field(volume, "size")))
        crashpoints.reached("pool.revert")

    # --- exports --------------------------------------------------------------
    def create_export(self, context, volume, connector=None):
        vid = field(volume, "id")
        self.target.export(vid, self.pool.device(vid), self.pool.backing(vid),
                           shared_reservations=self.shares_reservations(volume))
        crashpoints.reached("export")
        return {"provider_location": f"{self.protocol} {vid}"}

    def ensure_export(self, context, volume):
        """After a restart or reboot: the volume's export brought to the host-access
        rule over its live attachments (under Cinder, Cinder's database is the
        record), through the same batch path as reconcile (`sync_exports`).

        A host's mode is held where configfs still holds it, else where the node's
        document says it (a reboot emptied configfs), and never raised above that:
        a guard demotion, which Cinder's database does not know, stays. A node that
        lost both rebuilds with the guard deciding every writer.
        """
        vid = field(volume, "id")
        held = self.target.actual(vid)
        recorded = self.target.desired(vid)
        if vid not in held and vid in recorded:
            doc = recorded[vid]
            held = {vid: ActualExport(vid, None, {a.host: ActualHost(a.host, a.mode)
                                                  for a in doc.hosts})}
        live = access.live(field(volume, "volume_attachment", None))
        if any(not field(a, "connector") for a in live) and vid in held:
            # a live attachment that names no host (an attach in progress, an older
            # flow): who it is cannot be told, so nobody held is revoked, only kept
            key = "initiator" if self.protocol == "iscsi" else "nqn"
            kept = [{"attach_mode": h.mode, "connector": {key: h.host}}
                    for h in held[vid].hosts.values()]
            volume = {"id": vid, "multiattach": field(volume, "multiattach", False),
                      "volume_type": field(volume, "volume_type"),
                      "volume_attachment": [*live, *kept]}
        done = self.sync_exports([volume], held=held, recorded=recorded, keep_low=True)
        for decided in done["decisions"]:
            LOG.warning("volume %s: guard %s %s at ensure_export: %s", vid,
                        decided["action"], decided["host"], decided["reason"])
        return None

    def _host_of(self, attachment) -> str | None:
        connector = field(attachment, "connector")
        if not connector:
            return None
        try:
            return self.host_id(connector)
        except names.InvalidName:
            return None

    def remove_export(self, context, volume):
        vid = field(volume, "id")
        self.target.unexport(vid)
        crashpoints.reached("unexport")

    # --- connections ----------------------------------------------------------
    def host_id(self, connector: dict) -> str:
        if not isinstance(connector, dict):
            raise names.InvalidName("connector must be a dict")
        if self.protocol == "iscsi":
            return names.iqn(connector.get("initiator"))
        return names.nqn(connector.get("nqn"))

    def requested_mode(self, volume, connector: dict) -> str:
        """The mode this attachment asks for: the connector's, else `ro` when the
        volume's attachments for this host say so, else `rw`."""
        mode = connector.get("mode") or connector.get("attach_mode")
        if mode is None:
            mode = access.host_mode(self._host_attachment_modes(volume, connector)) or "rw"
        if mode not in ("rw", "ro"):
            raise names.InvalidName(f"attach mode {mode!r} must be rw or ro")
        return mode

    def _host_attachment_modes(self, volume, connector: dict) -> list[str]:
        """The modes of this host's live attachments of the volume."""
        return [field(a, "attach_mode") or "rw"
                for a in access.live(field(volume, "volume_attachment", None))
                if self._same_host(field(a, "connector") or {}, connector)]

    def host_mode(self, volume, connector: dict) -> str:
        """The host's mode at the target (the host-access rule): `rw` when this
        attachment or any other live attachment of the same host is `rw`."""
        modes = self._host_attachment_modes(volume, connector)
        return access.host_mode([*modes, self.requested_mode(volume, connector)])

    def _same_host(self, a: dict, b: dict) -> bool:
        key = "initiator" if self.protocol == "iscsi" else "nqn"
        return bool(a.get(key)) and a.get(key) == b.get(key)

    def _credentials(self, host: str) -> Credentials:
        """The host's secrets, derived from the backend's key: the same on every node."""
        return creds_mod.for_host(self.protocol, self._key, self.backend_name, host,
                                  mutual=self.conf("shareblock_mutual_chap", False))

    @staticmethod
    def shares_reservations(volume) -> bool:
        """Whether the volume's type puts all its hosts in one reservation domain."""
        return capabilities.shares_reservations(
            field(field(volume, "volume_type"), "extra_specs") or {})

    def guard_mode(self, volume) -> str:
        specs = field(field(volume, "volume_type"), "extra_specs") or {}
        return guard.guard_mode(specs, self.conf("shareblock_fs_guard", "enforce"))

    def probe(self, volume_id: str):
        return self.target.probe(self.pool.device(volume_id))

    def attach_decision(self, volume, host: str, requested: str,
                        writers: list[str] | None = None) -> guard.Decision:
        """The guard at attach: a second writer on a single-host filesystem gets ro.
        Who already writes is read from the target itself, not from the caller
        (`writers`: the hosts a batch has already found writing)."""
        vid = field(volume, "id")
        mode = self.guard_mode(volume)
        if requested != "rw" or not field(volume, "multiattach", False) or mode == "off":
            return guard.Decision(requested, "granted")
        if writers is None:
            writers = [h for h, m in self.target.modes(vid).items() if m == "rw"]
        writers = [h for h in writers if h != host]
        if writers:  # a live migration's source is the same writer as its destination
            moving = access.same_writer(field(volume, "volume_attachment", None),
                                        self._host_of, host,
                                        self._instance_of_host(volume, host))
            writers = [h for h in writers if h not in moving]
        if not writers:
            return guard.Decision(requested, "granted")
        found = self.probe(vid)
        return guard.at_attach(requested, writers, found.verdict, found.filesystem, mode)

    def _instance_of_host(self, volume, host: str) -> str | None:
        """The one instance `host` attaches the volume for: that of its live
        attachments, else (Cinder names no attachment to initialize_connection) that
        of the attachments not yet connected; None when there are several."""
        atts = access.live(field(volume, "volume_attachment", None))
        mine = {access.instance_of(a) for a in atts if self._host_of(a) == host}
        if not mine:
            mine = {access.instance_of(a) for a in atts if not field(a, "connector")}
        return next(iter(mine)) if len(mine) == 1 else None

    def exports(self, volume_id: str | None = None, hosts_only: bool = False) -> dict:
        """What the target holds for this backend's volumes (ActualExport per volume:
        hosts with their modes, sessions and counters), read from configfs."""
        return self.target.actual(volume_id, hosts_only)

    def reservations(self, volume_id: str) -> dict:
        return self.target.reservations(volume_id)

    def last_restore(self) -> dict | None:
        return self.target.last_restore()

    def recorded_exports(self, volume_id: str | None = None) -> dict:
        """The storage node's desired state of this backend's exports (Desired per
        volume; of one volume when named), as the boot-time restore would replay it."""
        return self.target.desired(volume_id)

    def sync_exports(self, volumes, held: dict | None = None,
                     recorded: dict | None = None, keep_low: bool = False) -> dict:
        """Bring the target to the host-access rule for many volumes in one batch:
        each volume's hosts and modes from its live attachments, the guard deciding
        every rising mode (a host that is not yet rw), then one apply on the target
        (the node's desired documents, then configfs). `held`, `recorded`:
        exports() and recorded_exports() already read, so configfs and the node's
        documents are read once for many batches. `keep_low`: a host held `ro`
        stays `ro` (the caller's attachments do not record the guard's demotions).

        Returns what changed: admitted [volume, host, mode], revoked [volume, host],
        unexported volumes, and the guard's decisions.
        """
        held = self.exports() if held is None else held
        recorded = self.recorded_exports() if recorded is None else recorded
        report = {"admitted": [], "revoked": [], "unexported": [], "decisions": []}
        batch = []
        for volume in volumes:
            vid = field(volume, "id")
            modes = access.host_modes(field(volume, "volume_attachment", None), self._host_of)
            seen = held.get(vid)
            have = seen.hosts if seen else {}
            report["revoked"] += [[vid, h] for h in have if h not in modes]
            if not modes:
                # also a document with nothing in configfs (a crash between the two)
                if seen is not None or vid in recorded:
                    self.remove_export(None, volume)
                    report["unexported"].append(vid)
                continue
            writers = [h for h, m in modes.items()
                       if m == "rw" and h in have and have[h].mode == "rw"]
            hosts = []
            for host, mode in modes.items():
                now = have.get(host)
                if keep_low and now and now.mode == "ro":
                    mode = "ro"
                if mode == "rw" and not (now and now.mode == "rw"):
                    decision = self.attach_decision(volume, host, "rw", writers)
                    mode = decision.mode
                    if decision.action != "granted":
                        report["decisions"].append({
                            "volume_id": vid, "host": host, "action": decision.action,
                            "reason": decision.reason, "filesystem": decision.filesystem})
                    if mode == "rw":
                        writers.append(host)
                if now is None or now.mode != mode:
                    report["admitted"].append([vid, host, mode])
                hosts.append(HostAccess(host, mode, self._credentials(host)))
            batch.append(Desired(vid, self.pool.device(vid), hosts, self.pool.backing(vid),
                                 shared_reservations=self.shares_reservations(volume)))
        self.target.apply(batch)
        crashpoints.reached("admit")
        return report

    def initialize_connection(self, volume, connector):
        vid = field(volume, "id")
        host = self.host_id(connector)
        requested = self.requested_mode(volume, connector)
        decision = self.attach_decision(volume, host, self.host_mode(volume, connector))
        mode = decision.mode
        if decision.action != "granted":
            LOG.warning("volume %s: guard %s %s: %s", vid, decision.action, host,
                        decision.reason)
        creds = self._credentials(host)
        try:
            conn = self.target.admit(vid, host, mode, creds)
        except ModeUnsupported as e:
            if decision.action == "granted":
                raise
            raise ModeUnsupported(f"{e}; the guard gives it ro: {decision.reason}") from e
        crashpoints.reached("admit")
        LOG.info("volume %s: admitted %s (%s)", vid, host, mode)
        info = self.connection_info(vid, conn, creds)
        # this attachment's own mode: a ro attachment of a host that also holds a rw
        # one is rw at the target but ro to its user (os-brick, Nova)
        info["data"]["access_mode"] = "ro" if "ro" in (mode, requested) else "rw"
        if decision.action != "granted":
            info["data"]["shareblock_guard"] = {"action": decision.action,
                                                "reason": decision.reason,
                                                "filesystem": decision.filesystem}
        return info

    def set_host_mode(self, volume_id: str, host: str, mode: str) -> None:
        """Change one admitted host's mode live (the guard's demotion)."""
        self.target.set_mode(volume_id, host, mode)
        crashpoints.reached("mode")

    def connection_info(self, volume_id: str, conn, creds: Credentials) -> dict:
        if self.protocol == "iscsi":
            portals = [str(p) for p in conn.portals]
            data = {"target_discovered": False, "target_iqn": conn.target,
                    "target_portal": portals[0], "target_lun": conn.lun,
                    "volume_id": volume_id, "auth_method": "CHAP",
                    "auth_username": creds.user, "auth_password": creds.secret,
                    "access_mode": conn.mode, "encrypted": False,
                    "shareblock_serial": conn.wwn}  # the LUN's unit serial: how hosts find it
            if len(portals) > 1:
                data.update(target_portals=portals, target_iqns=[conn.target] * len(portals),
                            target_luns=[conn.lun] * len(portals))
            return {"driver_volume_type": "iscsi", "data": data}
        data = {"target_nqn": conn.target, "vol_uuid": conn.uuid,
                "portals": [(p.address, p.port, "tcp") for p in conn.portals],
                "volume_id": volume_id, "access_mode": conn.mode, "encrypted": False}
        if creds.dhchap_key:  # os-brick 7 does not pass these on; shareblock's host side does
            data["dhchap_secret"] = creds.dhchap_key
            if creds.dhchap_ctrl_key:
                data["dhchap_ctrl_secret"] = creds.dhchap_ctrl_key
        return {"driver_volume_type": "nvmeof", "data": data}

    def terminate_connection(self, volume, connector, **kwargs):
        """Revoke this host unless another attachment of the volume still uses it.

        Returns True while other attachments share the export: Cinder removes
        the export on any other return value.
        """
        vid = field(volume, "id")
        live = access.live(field(volume, "volume_attachment", None))
        this_id = field(kwargs.get("attachment"), "id")
        if this_id is not None:
            others = [a for a in live if field(a, "id") != this_id]
        else:
            others = self._without_one_of_this_host(live, connector)
        if connector is None:  # force-detach of every host
            return bool(others) or None
        host = self.host_id(connector)
        remaining = access.host_mode(
            field(a, "attach_mode") or "rw" for a in others
            if self._same_host(field(a, "connector") or {}, connector))
        if remaining == "ro":
            # the host keeps only ro attachments: ro at the target, live. Detach
            # never raises a mode (a guard demotion stays).
            try:
                self.set_host_mode(vid, host, "ro")
            except NotFound:
                pass  # not admitted (an attach rolled back): nothing to lower
        if remaining is None:
            self.target.revoke(vid, host)
            crashpoints.reached("revoke")
            LOG.info("volume %s: revoked %s", vid, host)
        return True if others else None

    def _without_one_of_this_host(self, live: list, connector) -> list:
        """The live attachments less the one being detached, when the caller does not
        say which: Cinder 29 passes no attachment and still lists it as attached.
        The connector Cinder passes is the attachment's own, with its `mode` when it
        was given: that attachment of this host goes. Without a mode, a `ro` one goes
        first, so that a host that may still hold a `rw` attachment is never lowered
        by guesswork (the next sync of the volume lowers it if it must)."""
        if not connector:
            return list(live)
        mine = [i for i, a in enumerate(live)
                if self._same_host(field(a, "connector") or {}, connector)]
        if not mine:
            return list(live)
        wanted = connector.get("mode") or "ro"
        drop = next((i for i in mine if (field(live[i], "attach_mode") or "rw") == wanted),
                    mine[0])
        return [a for i, a in enumerate(live) if i != drop]

    # --- stats ------------------------------------------------------------------
    def get_volume_stats(self, refresh=False):
        if refresh or not self._stats:
            cap = self.pool.capacity()
            shares = self._target_shares_reservations()
            self._stats = {
                "volume_backend_name": self.backend_name,
                "vendor_name": "shareblock",
                "driver_version": VERSION,
                "storage_protocol": PROTOCOL_NAMES[self.protocol],
                "multiattach": bool(self.conf("shareblock_multiattach", True)),
                capabilities.SHARED_RESERVATIONS: shares,
                "pools": [{
                    "pool_name": getattr(self.pool, "name", "pool"),
                    **cap,
                    "thin_provisioning_support": True,
                    "thick_provisioning_support": False,
                    "max_over_subscription_ratio": self.conf("max_over_subscription_ratio", 20.0),
                    "reserved_percentage": self.conf("reserved_percentage", 0),
                    "multiattach": bool(self.conf("shareblock_multiattach", True)),
                    capabilities.SHARED_RESERVATIONS: shares,
                    "QoS_support": False,
                    # extend needs an available volume: no capacity change under a host
                    "online_extend_support": False,
                    # both pools are thin: a copy of an image may skip zero blocks
                    "sparse_copy_volume": True,
                }],
            }
        return self._stats

    def _target_shares_reservations(self) -> bool:
        try:
            return self.target.shares_reservations()
        except TargetError as e:  # e.g. the storage node unreachable: not reported
            LOG.warning("cannot tell whether the target shares reservations: %s", e)
            return False

    def retype(self, context, volume, new_type, diff, host):
        """(True, None) when this backend honours the new type in place, the export
        untouched; False when it cannot (another backend named, a protocol or a
        capability it lacks, an encryption or QoS change, a change of
        shared_reservations on an attached NVMe volume), so that Cinder migrates or
        refuses instead of pretending."""
        why = self._retype_refusal(new_type, diff)
        if not why and self.reshapes_export(volume, new_type):
            why = ("shared_reservations changes how NVMe hosts connect: only while the "
                   "volume is detached")
        if why:
            LOG.info("volume %s: retype refused: %s", field(volume, "id"), why)
            return False, None
        return True, None

    def reshapes_export(self, volume, new_type) -> bool:
        """Whether retyping this attached volume would change its nvmet export's
        shape (one subsystem for all hosts, or one per host)."""
        return (self.protocol == "nvmet_tcp"
                and bool(access.live(field(volume, "volume_attachment", None)))
                and self.shares_reservations(volume) != capabilities.shares_reservations(
                    field(new_type, "extra_specs") or {}))

    def _retype_refusal(self, new_type, diff=None) -> str | None:
        """Why this backend cannot keep a volume under new_type; None if it can."""
        why = capabilities.mismatch(self.get_volume_stats(refresh=True),
                                    field(new_type, "extra_specs") or {})
        if why:
            return f"backend {self.backend_name} {why}"
        for change in ("encryption", "qos_specs"):
            if any(old != new for old, new in ((diff or {}).get(change) or {}).values()):
                return f"backend {self.backend_name} has no {change.replace('_specs', '')}"
        return None
