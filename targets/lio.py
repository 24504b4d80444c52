"""LIO iSCSI: one target IQN per volume, one NodeACL + mapped LUN per host.

Exports (backstore, target, TPG, portals, LUN), the per-host path (ACL, CHAP,
mapped LUN, write_protect) and read-back use direct configfs nodes: every path
is derived from the volume id and host IQN, so no operation walks configfs and
each costs the same with 1 or 1,000 exports. rtslib-fb's recursive delete still
removes an export (unexport is rare and must not leave anything behind).
"""
import functools
import os
import zlib
from pathlib import Path

from shareblock.targets import devmapper, lio_pr, names
from shareblock.targets.base import (LOG, ActualExport, ActualHost, Connection, Credentials,
                                     NotFound, Portal, Target, TargetError)
from shareblock.targets.configfs import CONFIGFS, ConfigfsError, Node

DEFAULT_PREFIX = "iqn.2026-11.io.shareblock"
TPG_ATTRIBUTES = {
    "authentication": "1",          # CHAP for every session
    "generate_node_acls": "0",      # never demo mode: no ACL, no access
    "cache_dynamic_acls": "0",
    "demo_mode_write_protect": "1",
    "demo_mode_discovery": "0",     # discovery shows the target only to its ACLs
    "prod_mode_write_protect": "1",  # a new mapped LUN starts read-only (fail closed)
}
MAPPED_LUN = "lun_0"
LUN_LINK = "shareblock"


class LioTarget(Target):
    protocol = "iscsi"

    def __init__(self, portals: list[Portal], prefix: str = DEFAULT_PREFIX,
                 configfs=CONFIGFS):
        names.iqn(prefix)
        super().__init__(portals, prefix)
        self.root = Node(configfs) / "target"
        self.iscsi = self.root / "iscsi"
        self._iqns: dict[str, str] = {}  # volume id -> target IQN, validated once
        self._pr_folder: str | None = None

    # --- names: all derived, never looked up -------------------------------
    def check_host(self, host: str) -> str:
        return names.iqn(host)

    def target_iqn(self, volume_id: str) -> str:
        iqn = self._iqns.get(volume_id) if isinstance(volume_id, str) else None
        if iqn is None:
            iqn = names.iqn(f"{self.prefix}:{names.volume_token(volume_id)}")
            self._iqns[volume_id] = iqn
        return iqn

    def tpg(self, volume_id: str) -> Node:
        return self.iscsi / self.target_iqn(volume_id) / "tpgt_1"

    def acl(self, volume_id: str, host: str) -> Node:
        return self.tpg(volume_id) / "acls" / self.check_host(host)

    @staticmethod
    def backstore_name(volume_id: str) -> str:
        return "sb-" + names.token("volume id", volume_id)

    def backstore_index(self, volume_id: str) -> int:
        """The iblock HBA index for this volume: a hash, probed past other users' HBAs."""
        name = self.backstore_name(volume_id)
        index = 100000 + zlib.crc32(name.encode()) % 800000
        core = self.root / "core"
        while True:
            hba = core / f"iblock_{index}"
            if not hba.exists() or hba.children() == [name] or (hba / name).exists():
                return index
            index += 1

    @staticmethod
    @functools.lru_cache(maxsize=4096)  # a hash per admit otherwise (connection info)
    def unit_serial(volume_id: str) -> str:
        return names.stable_uuid("lio", volume_id)

    # --- export ------------------------------------------------------------
    def export(self, volume_id: str, device: str, backing: str | None = None,
               hosts=None, shared_reservations: bool = False) -> None:
        """Backstore, target, TPG, portals and LUN 0, written straight to configfs
        (the writes rtslib-fb makes, without its lookups, which walk configfs and
        made a restore of hundreds of exports quadratic). A new backstore gets the
        volume's APTPL registrations back (of `hosts` only, when given) before its
        LUN links it (lio_pr). Every host of a LUN is in its one reservation
        domain, so `shared_reservations` asks nothing more of LIO."""
        if not self._pr_folder:  # without it every PR REGISTER fails
            self._pr_folder = lio_pr.ensure_folder(self.root)
        if self._exported(volume_id, device):
            return
        devmapper.sectors(device)  # a clear error for a missing device, before configfs
        iqn = self.target_iqn(volume_id)
        name = self.backstore_name(volume_id)
        try:
            hba = self.root / "core" / f"iblock_{self.backstore_index(volume_id)}"
            so = hba / name
            have = so.read("udev_path")
            fresh = not have
            if fresh:  # new, or left half-made by a crash
                hba.create()
                so.create()
                so.write("control", f"udev_path={device}", check=False)
                so.write("udev_path", device, check=False)
            elif have != device:
                raise TargetError(f"volume {volume_id} is already exported from {have}, "
                                  f"not {device}")
            # each step checked, not only the first: a crash may fall between them
            if so.read("enable") != "1":
                so.write("enable", "1", check=False)
            serial = self.unit_serial(volume_id)
            if serial not in (so.read("wwn/vpd_unit_serial") or ""):
                # before any LUN links the device (the kernel refuses after): hosts
                # find the volume's disk by this serial
                so.write("wwn/vpd_unit_serial", serial, check=False)
            if fresh:
                # the kernel takes APTPL records only while no LUN links the device,
                # and keeps every one written: once, on the new backstore
                count = lio_pr.replay(so, lio_pr.file_of(self.root, serial), hosts)
                if count:
                    LOG.info("volume %s: %d persistent registration(s) replayed",
                             volume_id, count)
            tpg = self.tpg(volume_id)
            self.iscsi.create()  # the fabric appears (and loads) on first mkdir
            (self.iscsi / iqn).create()
            tpg.create()
            for attr, value in TPG_ATTRIBUTES.items():
                tpg.write(f"attrib/{attr}", value)
            for portal in self.portals:
                (tpg / "np" / str(portal)).create()
            lun = (tpg / "lun" / "lun_0").create()
            if not lun.links():
                lun.link(name, so)
            tpg.write("enable", "1")
        except ConfigfsError as e:
            raise TargetError(f"export of volume {volume_id}: {e}") from e
        LOG.info("exported volume %s as %s", volume_id, iqn)

    def _exported(self, volume_id: str, device: str) -> bool:
        """True when the whole export is in place from this device: the idempotent
        path (every attach calls export) reads a few attributes instead of asking
        rtslib-fb, whose lookups walk configfs (seconds at hundreds of exports)."""
        name = self.backstore_name(volume_id)
        hba = self.root / "core" / f"iblock_{self.backstore_index(volume_id)}"
        tpg = self.tpg(volume_id)
        lun = tpg / "lun" / "lun_0"
        return ((hba / name).read("udev_path") == device and tpg.read("enable") == "1"
                and [t.name for t in lun.links().values()] == [name]
                and all(tpg.read(f"attrib/{a}") == v for a, v in TPG_ATTRIBUTES.items())
                and all((tpg / "np" / str(p)).exists() for p in self.portals))

    def unexport(self, volume_id: str) -> None:
        from rtslib_fb import BlockStorageObject, FabricModule, RTSLibError
        from rtslib_fb import Target as RtsTarget
        iqn = self.target_iqn(volume_id)
        try:
            if (self.iscsi / iqn).exists():
                RtsTarget(FabricModule("iscsi"), iqn, mode="lookup").delete()
            name = self.backstore_name(volume_id)
            index = self.backstore_index(volume_id)
            if (self.root / "core" / f"iblock_{index}" / name).exists():
                BlockStorageObject(name, index=index).delete()
            # no host reaches the volume any more: its registrations are gone with
            # the device, and must not come back with the next export
            lio_pr.forget(self.root, self.unit_serial(volume_id))
        except RTSLibError as e:
            raise TargetError(f"unexport of volume {volume_id}: {e}") from e
        LOG.info("unexported volume %s", volume_id)

    def _require_export(self, volume_id: str) -> Node:
        tpg = self.tpg(volume_id)
        if not (tpg / "lun" / "lun_0").exists():
            raise NotFound(f"volume {volume_id} is not exported")
        return tpg

    # --- per host ----------------------------------------------------------
    def admit(self, volume_id: str, host: str, mode: str,
              credentials: Credentials) -> Connection:
        self.check_mode(mode)
        acl = self.acl(volume_id, host)
        creds = self._check_credentials(credentials)
        tpg = self._require_export(volume_id)
        try:
            # A new ACL holds the kernel's defaults (no CHAP, no mapped LUN): write
            # without reading back first, and leave the empty mutual CHAP alone.
            check = acl.exists()
            acl.create(groups=("auth",))
            auth = acl / "auth"
            auth.write("userid", creds.user, check=check)
            auth.write("password", creds.secret, secret=True, check=check)
            if creds.mutual_user or (check and auth.read("userid_mutual", "")):
                auth.write("userid_mutual", creds.mutual_user or "", check=check)
                auth.write("password_mutual", creds.mutual_secret or "", secret=True,
                           check=check)
            mapped = (acl / MAPPED_LUN).create()
            mapped.link(LUN_LINK, tpg / "lun" / "lun_0")
            mapped.write("write_protect", "1" if mode == "ro" else "0", check=check)
        except ConfigfsError as e:
            raise TargetError(f"admit {host} to volume {volume_id}: {e}") from e
        LOG.info("admitted %s to volume %s (%s)", host, volume_id, mode)
        return self.connection(volume_id, host, mode)

    @staticmethod
    def _check_credentials(creds: Credentials) -> Credentials:
        if not (creds.user and creds.secret):
            raise names.InvalidName("iSCSI hosts need CHAP credentials (user and secret)")
        names.chap_user(creds.user)
        names.chap_secret(creds.secret)
        if creds.mutual_user or creds.mutual_secret:
            names.chap_user(creds.mutual_user)
            names.chap_secret(creds.mutual_secret)
            if creds.mutual_secret == creds.secret:
                raise names.InvalidName("mutual CHAP secret must differ from the host's")
        return creds

    def set_mode(self, volume_id: str, host: str, mode: str) -> None:
        self.check_mode(mode)
        mapped = self.acl(volume_id, host) / MAPPED_LUN
        if not mapped.exists():
            raise NotFound(f"{host} is not admitted to volume {volume_id}")
        try:
            mapped.write("write_protect", "1" if mode == "ro" else "0")
        except ConfigfsError as e:
            raise TargetError(str(e)) from e
        LOG.info("set %s on volume %s to %s", host, volume_id, mode)

    def revoke(self, volume_id: str, host: str) -> None:
        acl = self.acl(volume_id, host)
        try:
            mapped = acl / MAPPED_LUN
            mapped.unlink(LUN_LINK)
            mapped.remove()
            acl.remove()  # the kernel ends this ACL's sessions
        except ConfigfsError as e:
            raise TargetError(f"revoke {host} from volume {volume_id}: {e}") from e
        LOG.info("revoked %s from volume %s", host, volume_id)

    def connection(self, volume_id: str, host: str, mode: str | None = None) -> Connection:
        if mode is None:
            wp = (self.acl(volume_id, host) / MAPPED_LUN).read("write_protect")
            if wp is None:
                raise NotFound(f"{host} is not admitted to volume {volume_id}")
            mode = "ro" if wp == "1" else "rw"
        return Connection(protocol=self.protocol, target=self.target_iqn(volume_id),
                          portals=list(self.portals), lun=0,
                          wwn=self.unit_serial(volume_id), mode=mode)

    # --- read back ---------------------------------------------------------
    def shares_reservations(self) -> bool:
        return True

    def reservations(self, volume_id: str) -> dict:
        so = (self.root / "core" / f"iblock_{self.backstore_index(volume_id)}"
              / self.backstore_name(volume_id))
        if not so.exists():
            raise NotFound(f"volume {volume_id} is not exported")
        return lio_pr.view(so)

    def modes(self, volume_id: str) -> dict[str, str]:
        acls = self.tpg(volume_id) / "acls"
        found = {}
        for host in acls.children():
            wp = (acls / host / MAPPED_LUN).read("write_protect")
            found[host] = "ro" if wp == "1" else "rw"
        return found

    def actual(self, volume_id: str | None = None,
               hosts_only: bool = False) -> dict[str, ActualExport]:
        if volume_id is not None:
            iqns = [self.target_iqn(volume_id)]
        else:
            iqns = [i for i in self.iscsi.children() if i.startswith(self.prefix + ":")]
        found = {}
        for iqn in iqns:
            tpg = self.iscsi / iqn / "tpgt_1"
            if not tpg.exists():
                continue
            vol = iqn[len(self.prefix) + 1:]
            export = ActualExport(volume_id=vol, hosts={},
                                  device=None if hosts_only else self._device(tpg))
            for attr, value in ({} if hosts_only else TPG_ATTRIBUTES).items():
                if tpg.read(f"attrib/{attr}") not in (value, None):
                    export.problems.append(f"TPG attribute {attr} is not {value}")
            for host in (tpg / "acls").children():
                acl = tpg / "acls" / host
                mapped = acl / MAPPED_LUN
                wp = mapped.read("write_protect")
                if not hosts_only and (wp is None or not mapped.links()):
                    export.problems.append(f"{host} has an ACL but no mapped LUN")
                info = acl.read("info", "")
                stats = mapped / "statistics" / "scsi_auth_intr"
                counters = {k: int(stats.read(k, "0") or 0)
                            for k in ("num_cmds", "read_mbytes", "write_mbytes")}
                export.hosts[host] = ActualHost(
                    host=host, mode="ro" if wp == "1" else "rw",
                    logged_in=bool(info) and not info.startswith("No active"),
                    counters=counters)
            found[vol] = export
        return found

    @staticmethod
    def _device(tpg: Node) -> str | None:
        lun = (tpg / "lun" / "lun_0").path
        for target in (tpg / "lun" / "lun_0").links().values():
            # configfs links are relative paths through plain folders: joined and
            # normalised as text, not resolved one component at a time (a syscall
            # each, per volume, on every full read-back)
            so = os.path.normpath(os.path.join(lun, target))
            try:
                return Path(so, "udev_path").read_text().strip()
            except OSError:
                return None
        return None
