"""The backend driver, with Cinder's method names and semantics, free of Cinder.

`configuration` is anything with `safe_get(name)`: Cinder's per-backend
Configuration inside Cinder, or shareblock's own for the embedded control plane.
Volumes and attachments are read by attribute or key, so Cinder's versioned
objects and plain dicts both work.
"""
import logging
import os

from shareblock.driver import access, crashpoints, guard, pools
from shareblock.driver.access import field
from shareblock.driver.state import DriverState
from shareblock.targets import credentials as creds_mod
from shareblock.targets import names
from shareblock.targets.base import Credentials, Desired, HostAccess, NotFound, Portal
from shareblock.targets.factory import open_target

LOG = logging.getLogger("shareblock.driver")
VERSION = "0.1.0"
DEFAULT_PORTS = {"iscsi": 3260, "nvmet_tcp": 4420}
PROTOCOL_NAMES = {"iscsi": "iSCSI", "nvmet_tcp": "NVMe-oF"}


class ShareBlockDriver:
    def __init__(self, configuration, target=None, pool=None, state=None):
        self.configuration = configuration
        self.target = target
        self.pool = pool
        self.state = state
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
            self.target = open_target(protocol, portals, node=node, prefix=prefix, **ssh)
        if self.pool is None:
            self.pool = pools.parse(self.conf("shareblock_pool",
                                              "file:/var/lib/shareblock/volumes"))
        if self.state is None:
            base = self.conf("shareblock_state_path", "/var/lib/shareblock")
            self.state = DriverState(os.path.join(base, f"driver-{self.backend_name}.json"))

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
        self.state.update(lambda d: d["exports"].pop(vid, None))

    def extend_volume(self, volume, new_size):
        self.pool.extend(field(volume, "id"), int(new_size))

    def create_cloned_volume(self, volume, src_vref):
        self.pool.clone(field(src_vref, "id"), field(volume, "id"), int(field(volume, "size")))
        return None

    # --- exports --------------------------------------------------------------
    def create_export(self, context, volume, connector=None):
        vid = field(volume, "id")
        device = self.pool.device(vid)
        self.target.export(vid, device)
        crashpoints.reached("export")
        self.state.update(lambda d: d["exports"].setdefault(vid, {"hosts": {}}))
        return {"provider_location": f"{self.protocol} {vid}"}

    def ensure_export(self, context, volume):
        """After a restart or reboot: the export and every admitted host, as saved."""
        vid = field(volume, "id")
        data = self.state.load()
        saved = data["exports"].get(vid)
        if saved is None:
            return None
        desired = Desired(vid, self.pool.device(vid), [
            HostAccess(host, mode, Credentials.from_dict(data["hosts"].get(host)))
            for host, mode in saved["hosts"].items()])
        self.target.restore([desired])
        return None

    def remove_export(self, context, volume):
        vid = field(volume, "id")
        self.target.unexport(vid)
        crashpoints.reached("unexport")
        self.state.update(lambda d: d["exports"].pop(vid, None))

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
        def ensure(data):
            if host not in data["hosts"]:
                fresh = (creds_mod.chap(names.short_hash(host, 10),
                                        mutual=self.conf("shareblock_mutual_chap", False))
                         if self.protocol == "iscsi" else creds_mod.dhchap())
                data["hosts"][host] = fresh.to_dict()
        return Credentials.from_dict(self.state.update(ensure)["hosts"][host])

    def guard_mode(self, volume) -> str:
        specs = field(field(volume, "volume_type"), "extra_specs") or {}
        return guard.guard_mode(specs, self.conf("shareblock_fs_guard", "enforce"))

    def probe(self, volume_id: str):
        return self.target.probe(self.pool.device(volume_id))

    def attach_decision(self, volume, host: str, requested: str) -> guard.Decision:
        """The guard at attach: a second writer on a single-host filesystem gets ro.
        Who already writes is read from the target itself, not from the caller."""
        vid = field(volume, "id")
        mode = self.guard_mode(volume)
        if requested != "rw" or not field(volume, "multiattach", False) or mode == "off":
            return guard.Decision(requested, "granted")
        seen = self.target.actual(vid).get(vid)
        writers = [h for h, s in (seen.hosts.items() if seen else ()) if s.mode == "rw"
                   and h != host]
        if not writers:
            return guard.Decision(requested, "granted")
        found = self.probe(vid)
        return guard.at_attach(requested, writers, found.verdict, found.filesystem, mode)

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
        conn = self.target.admit(vid, host, mode, creds)
        crashpoints.reached("admit")
        self.state.update(lambda d: d["exports"].setdefault(vid, {"hosts": {}})["hosts"]
                          .__setitem__(host, mode))
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
        """Change one admitted host's mode live (the guard's demotion), and remember it."""
        self.target.set_mode(volume_id, host, mode)
        crashpoints.reached("mode")
        self.state.update(lambda d: d["exports"].setdefault(volume_id, {"hosts": {}})["hosts"]
                          .__setitem__(host, mode))

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
            # Cinder 29 passes no attachment and still lists the one being detached:
            # leave out one attachment of this host.
            others = list(live)
            for i, a in enumerate(others):
                if connector and self._same_host(field(a, "connector") or {}, connector):
                    del others[i]
                    break
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
            self.state.update(lambda d: d["exports"].get(vid, {"hosts": {}})["hosts"]
                              .pop(host, None))
            LOG.info("volume %s: revoked %s", vid, host)
        return True if others else None

    # --- stats ------------------------------------------------------------------
    def get_volume_stats(self, refresh=False):
        if refresh or not self._stats:
            cap = self.pool.capacity()
            self._stats = {
                "volume_backend_name": self.backend_name,
                "vendor_name": "shareblock",
                "driver_version": VERSION,
                "storage_protocol": PROTOCOL_NAMES[self.protocol],
                "multiattach": bool(self.conf("shareblock_multiattach", True)),
                "pools": [{
                    "pool_name": getattr(self.pool, "name", "pool"),
                    **cap,
                    "thin_provisioning_support": True,
                    "thick_provisioning_support": False,
                    "max_over_subscription_ratio": self.conf("max_over_subscription_ratio", 20.0),
                    "reserved_percentage": self.conf("reserved_percentage", 0),
                    "multiattach": bool(self.conf("shareblock_multiattach", True)),
                    "QoS_support": False,
                }],
            }
        return self._stats

    def retype(self, context, volume, new_type, diff, host):
        """Same pool, same export: nothing moves (the control plane checks the rules)."""
        return True, None
