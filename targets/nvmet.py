"""Kernel nvmet over NVMe/TCP: one subsystem per (volume, host), never any host.

Why one subsystem per host: nvmet's access control is per subsystem, and taking
a host out of `allowed_hosts` does not end its live controller. Unlinking a
host's own subsystem from the ports does, without touching the other hosts.
Each host's namespace sits on its own device-mapper view of the volume
(devmapper.py), which is how read-only is enforced by the target and switched
live. The volume's own subsystem (no hosts, no port) records its device.

Shared reservations (a volume type's `shared_reservations` spec, Linux 6.13+):
nvmet keeps reservations per namespace of a subsystem, so one subsystem per host
gives each host a private domain. A volume that asks for one domain is served
by its own subsystem instead: its namespace is the volume's device with
`resv_enable`, every host admitted in its `allowed_hosts` with its own keys.
What that shape cannot do, it refuses: one namespace is one device, so no host
of it can be read-only (ModeUnsupported). A revoke unlinks the subsystem from
the ports, which ends every host's controllers, takes the host out and links it
again: the others reconnect (their I/O waits, their registrations stay, as the
kernel keeps them per host id while the namespace is enabled).
"""
import contextlib
import os
import secrets
import zlib

from shareblock.targets import devmapper, names
from shareblock.targets.base import (LOG, ActualExport, ActualHost, Connection, Credentials,
                                     ModeUnsupported, NotFound, Portal, ReservationsUnsupported,
                                     Target, TargetError)
from shareblock.targets.configfs import CONFIGFS, ConfigfsError, Node

DEFAULT_PREFIX = "nqn.2026-11.io.shareblock"
HOST_MARK = ":h-"
DHCHAP_HASH = "hmac(sha256)"
DHCHAP_GROUP = "ffdhe2048"
RESERVATIONS = "resv_enable"  # a namespace attribute from Linux 6.13, absent before


def default_port_id(portal: Portal) -> int:
    """shareblock's port id for a portal when none is configured: stable, and
    in a range (8000-8999) admins' tools do not number from (nvmetcli counts from 1)."""
    return 8000 + zlib.crc32(str(portal).encode()) % 1000


def portal_address(portal: Portal) -> tuple:
    return ("tcp", "ipv6" if portal.ipv6 else "ipv4", portal.address, str(portal.port))


def port_address(port: Node) -> tuple:
    return tuple(port.read(a) for a in ("addr_trtype", "addr_adrfam", "addr_traddr",
                                       "addr_trsvcid"))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    return True


class NvmetTarget(Target):
    protocol = "nvmet_tcp"

    def __init__(self, portals: list[Portal], prefix: str = DEFAULT_PREFIX,
                 configfs=CONFIGFS, dm=devmapper, port_ids: list[int] | None = None):
        names.nqn(prefix + ":x")
        super().__init__(portals, prefix)
        self.root = Node(configfs) / "nvmet"
        self.dm = dm
        if port_ids is None:
            port_ids = [default_port_id(p) for p in self.portals]
        if len(port_ids) != len(self.portals) or len(set(port_ids)) != len(port_ids) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 < i < 65536
                for i in port_ids):
            raise names.InvalidName(f"nvmet port ids {port_ids!r}: one distinct id (1-65535) "
                                    f"per portal, {len(self.portals)} portals")
        self.port_ids = dict(zip(self.portals, port_ids, strict=True))
        self._reservations: bool | None = None  # a kernel fact, read once

    # --- names -------------------------------------------------------------
    def check_host(self, host: str) -> str:
        return names.nqn(host)

    def volume_nqn(self, volume_id: str) -> str:
        return names.nqn(f"{self.prefix}:{names.volume_token(volume_id)}")

    def view_nqn(self, volume_id: str, host: str) -> str:
        return names.nqn(f"{self.volume_nqn(volume_id)}{HOST_MARK}"
                         f"{names.short_hash(self.check_host(host))}")

    def subsystem(self, nqn: str) -> Node:
        return self.root / "subsystems" / nqn

    @staticmethod
    def view_uuid(volume_id: str, host: str) -> str:
        # Distinct per host: one kernel holding two views must not see duplicate ids.
        return names.stable_uuid("nvmet", volume_id, host)

    @staticmethod
    def serial(nqn: str) -> str:
        return names.short_hash(nqn, 20)

    def port(self, portal: Portal) -> Node:
        return self.root / "ports" / str(self.port_ids[portal])

    # --- export ------------------------------------------------------------
    def export(self, volume_id: str, device: str, backing: str | None = None,
               hosts=None, shared_reservations: bool = False) -> None:
        if shared_reservations and not self.shares_reservations():
            raise ReservationsUnsupported(
                f"volume {volume_id} asks for shared_reservations: this kernel's nvmet has "
                "no reservations (they came in Linux 6.13)")
        devmapper.sectors(device)  # a clear error for a missing device, before configfs
        nqn = self.volume_nqn(volume_id)
        sub = self.subsystem(nqn)
        ns = sub / "namespaces" / "1"
        try:
            have = ns.read("device_path")
            if have and have != device:
                raise TargetError(f"volume {volume_id} is already exported from {have}, "
                                  f"not {device}")
            resv = ns.read(RESERVATIONS)
            if resv is not None and (resv == "1") != shared_reservations:
                self._check_unused(volume_id, sub)
            self._subsystem(sub, nqn)
            self._namespace(ns, device, names.stable_uuid("nvmet", volume_id),
                            "1" if shared_reservations else None)
        except ConfigfsError as e:
            raise TargetError(f"export of volume {volume_id}: {e}") from e
        LOG.info("exported volume %s as %s", volume_id, nqn)

    def _check_unused(self, volume_id: str, sub: Node) -> None:
        """How hosts share reservations changes with no host admitted: the shape
        (one subsystem, or one per host) is what they are connected to."""
        if (sub / "allowed_hosts").links() or self._views(volume_id):
            raise TargetError(f"volume {volume_id} has hosts admitted: whether they share "
                              "reservations changes only when none is (detach them first)")

    def _shared(self, volume_id: str) -> bool:
        """Whether the volume is exported in the shared-reservations shape."""
        ns = self.subsystem(self.volume_nqn(volume_id)) / "namespaces" / "1"
        return ns.read(RESERVATIONS) == "1"

    def shares_reservations(self) -> bool:
        if self._reservations is None:
            self._reservations = self._has_reservations()
        return self._reservations

    def _has_reservations(self) -> bool:
        """Whether nvmet namespaces have `resv_enable`: read on a namespace made for
        the question and removed (its attributes exist as soon as it does, with no
        device). Named outside the prefix's volumes, so no read-back sees it, and
        after this process: control planes starting together each ask on their own
        (one shared name let one remove the namespace another was reading)."""
        probes = names.nqn(f"{self.prefix}-probe:reservations-")
        for left in (self.root / "subsystems").children_named(probes):
            pid = left[len(probes):].partition("-")[0]
            if pid.isdigit() and not _running(int(pid)):  # a crash's leftover
                with contextlib.suppress(ConfigfsError):
                    self._remove_subsystem(self.subsystem(left))
        sub = self.subsystem(f"{probes}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            ns = (sub.create(groups=("namespaces", "allowed_hosts")) / "namespaces" / "1")
            return ns.create().read(RESERVATIONS) is not None
        except ConfigfsError as e:
            LOG.warning("cannot tell whether nvmet has reservations: %s", e)
            return False
        finally:
            try:
                self._remove_subsystem(sub)
            except ConfigfsError as e:
                LOG.warning("left %s behind: %s", sub.name, e)

    def _subsystem(self, sub: Node, nqn: str) -> None:
        sub.create(groups=("namespaces", "allowed_hosts"))
        sub.write("attr_allow_any_host", "0")
        sub.write("attr_serial", self.serial(nqn))
        sub.write("attr_model", "shareblock")

    @staticmethod
    def _namespace(ns: Node, device: str, uuid: str, reservations: str | None = None) -> None:
        """`reservations`: "1" for a shared domain; None leaves it off (the kernel's
        default, and the only state of a kernel without them)."""
        ns.create()
        have = ns.read(RESERVATIONS)
        want = reservations or ("0" if have == "1" else None)
        if ns.read("enable") == "1" and ns.read("device_path") == device and (
                want is None or have == want):
            return
        ns.write("enable", "0")  # resv_enable changes only on a disabled namespace
        ns.write("device_path", device)
        ns.write("device_uuid", uuid)
        ns.write("device_nguid", uuid)
        if want is not None:
            ns.write(RESERVATIONS, want)
        ns.write("enable", "1")

    def _ports(self) -> list[Node]:
        """shareblock's own ports, by their explicit ids: made with the portal's
        address, used as they are when they have it; a port of that id with
        another address, or another port already serving the portal, is an
        admin's: refused, never reused or changed."""
        nodes = []
        for portal in self.portals:
            port = self.port(portal)
            if port.exists() and port.read("addr_traddr"):
                if port_address(port) != portal_address(portal):
                    raise TargetError(
                        f"nvmet port {port.name} serves {port_address(port)}, not {portal}: "
                        "it is not shareblock's; give shareblock its own port ids "
                        "(shareblock_nvmet_port_ids)")
            else:
                other = self._port_serving(portal)
                if other is not None:
                    raise TargetError(
                        f"portal {portal} is served by nvmet port {other}, not shareblock's "
                        f"port {port.name}: use that port's id in shareblock_nvmet_port_ids "
                        "only if it is shareblock's, or another address or target_port")
                port.create(groups=("subsystems",))
                port.set({"addr_trtype": "tcp", "addr_adrfam": "ipv6" if portal.ipv6 else "ipv4",
                          "addr_traddr": portal.address, "addr_trsvcid": str(portal.port)})
            nodes.append(port)
        return nodes

    def _port_serving(self, portal: Portal) -> str | None:
        """Another port already at this portal's address (the kernel lets only one listen)."""
        ports = self.root / "ports"
        for name in ports.children():
            if name != self.port(portal).name and port_address(ports / name) == \
                    portal_address(portal):
                return name
        return None

    def unexport(self, volume_id: str) -> None:
        base = self.volume_nqn(volume_id)
        for nqn in self._views(volume_id):
            self._remove_view(nqn)
        for view in self.dm.views(volume_id):  # made by an admit that crashed before
            self.dm.remove(view)               # its subsystem: it holds the device open
        sub = self.subsystem(base)
        if sub.exists():  # with its hosts and ports when it serves them (shared reservations)
            try:
                for portal in self.portals:
                    (self.port(portal) / "subsystems").unlink(base)
                hosts = list((sub / "allowed_hosts").links())
                for host in hosts:
                    (sub / "allowed_hosts").unlink(host)
                self._remove_subsystem(sub)
                for host in hosts:
                    self._forget_host(host)
            except ConfigfsError as e:
                raise TargetError(f"unexport of volume {volume_id}: {e}") from e
        LOG.info("unexported volume %s", volume_id)

    def _views(self, volume_id: str) -> list[str]:
        head = self.volume_nqn(volume_id) + HOST_MARK
        return (self.root / "subsystems").children_named(head)

    def _device_of(self, volume_id: str) -> str:
        device = (self.subsystem(self.volume_nqn(volume_id)) / "namespaces" / "1").read(
            "device_path")
        if not device:
            raise NotFound(f"volume {volume_id} is not exported")
        return device

    # --- per host ----------------------------------------------------------
    def admit(self, volume_id: str, host: str, mode: str,
              credentials: Credentials) -> Connection:
        self.check_mode(mode)
        nqn = self.view_nqn(volume_id, host)
        self._check_credentials(credentials)
        device = self._device_of(volume_id)
        shared = self._shared(volume_id)
        if shared:
            if mode != "rw":
                raise ModeUnsupported(self._no_read_only(volume_id, host))
            nqn = self.volume_nqn(volume_id)
        try:
            ports = self._ports()  # refused before anything of the host is made
            hostnode = self._host_entry(host, credentials)
            sub = self.subsystem(nqn)
            if not shared:
                view = self.dm.ensure(devmapper.view_name(volume_id, host), device, mode)
                self._subsystem(sub, nqn)
                self._namespace(sub / "namespaces" / "1", view,
                                self.view_uuid(volume_id, host))
            (sub / "allowed_hosts").link(host, hostnode)
            for port in ports:
                (port / "subsystems").link(nqn, sub)
        except ConfigfsError as e:
            raise TargetError(f"admit {host} to volume {volume_id}: {e}") from e
        LOG.info("admitted %s to volume %s (%s)", host, volume_id, mode)
        return self._connection(volume_id, host, mode, shared)

    def _host_entry(self, host: str, credentials: Credentials) -> Node:
        """The host's entry under nvmet/hosts, with its DH-HMAC-CHAP keys."""
        hostnode = (self.root / "hosts" / host).create()
        if credentials.dhchap_key:
            if hostnode.read("dhchap_key") is None:
                raise TargetError("this kernel's nvmet has no DH-HMAC-CHAP "
                                  "(CONFIG_NVME_TARGET_AUTH): cannot admit with keys")
            hostnode.write("dhchap_hash", DHCHAP_HASH)
            hostnode.write("dhchap_dhgroup", DHCHAP_GROUP)
            hostnode.write("dhchap_key", credentials.dhchap_key, secret=True)
            hostnode.write("dhchap_ctrl_key", credentials.dhchap_ctrl_key or "", secret=True)
        return hostnode

    @staticmethod
    def _no_read_only(volume_id: str, host: str) -> str:
        return (f"volume {volume_id} shares reservations: its hosts share one nvmet "
                f"namespace, which has no per-host write protect, so {host} cannot be "
                "read-only there (use a volume type without shared_reservations)")

    @staticmethod
    def _check_credentials(creds: Credentials) -> None:
        if creds.user or creds.secret or creds.mutual_user or creds.mutual_secret:
            raise names.InvalidName("NVMe hosts take DH-HMAC-CHAP keys, not CHAP")
        if creds.dhchap_key:
            names.dhchap_key(creds.dhchap_key)
        if creds.dhchap_ctrl_key:
            if not creds.dhchap_key:
                raise names.InvalidName("a controller key needs a host key")
            names.dhchap_key(creds.dhchap_ctrl_key)

    def set_mode(self, volume_id: str, host: str, mode: str) -> None:
        self.check_mode(mode)
        nqn = self.view_nqn(volume_id, host)
        if self._shared(volume_id):
            if not (self.subsystem(self.volume_nqn(volume_id)) / "allowed_hosts").has_link(host):
                raise NotFound(f"{host} is not admitted to volume {volume_id}")
            if mode != "rw":
                raise ModeUnsupported(self._no_read_only(volume_id, host))
            return
        if not self.subsystem(nqn).exists():
            raise NotFound(f"{host} is not admitted to volume {volume_id}")
        self.dm.ensure(devmapper.view_name(volume_id, host), self._device_of(volume_id), mode)
        LOG.info("set %s on volume %s to %s", host, volume_id, mode)

    def revoke(self, volume_id: str, host: str) -> None:
        nqn = self.view_nqn(volume_id, host)  # checks the host: nothing removed for a bad one
        if self._shared(volume_id):
            self._revoke_shared(volume_id, host)
            LOG.info("revoked %s from volume %s", host, volume_id)
            return
        name = devmapper.view_name(volume_id, host)
        if self._remove_view(nqn) != name:
            # no subsystem, or one a crash left without its namespace: the view may
            # still be there
            self.dm.remove(name)
        LOG.info("revoked %s from volume %s", host, volume_id)

    def _revoke_shared(self, volume_id: str, host: str) -> None:
        """Out of the shared subsystem, its controllers ended: nvmet cannot end one
        host's controllers of a subsystem (leaving allowed_hosts does not), so the
        subsystem leaves the ports, which ends all of them, and comes back once the
        host is out. Ports first: a crash in between leaves the host still allowed
        (a retried revoke ends it) or everyone off the ports (the next admit or
        reconcile links them again), never the host connected and not allowed."""
        nqn = self.volume_nqn(volume_id)
        sub = self.subsystem(nqn)
        allowed = sub / "allowed_hosts"
        try:
            if allowed.has_link(host):
                for portal in self.portals:
                    (self.port(portal) / "subsystems").unlink(nqn)
                allowed.unlink(host)
            if allowed.links():
                for port in self._ports():
                    (port / "subsystems").link(nqn, sub)
            self._forget_host(host)
        except ConfigfsError as e:
            raise TargetError(f"revoke {host} from volume {volume_id}: {e}") from e

    def _remove_view(self, nqn: str) -> str | None:
        """Remove one host's subsystem and its view; returns the view's name, None
        when the subsystem named none (or did not exist)."""
        sub = self.subsystem(nqn)
        if not sub.exists():
            return None
        try:
            view = (sub / "namespaces" / "1").read("device_path") or ""
            for portal in self.portals:  # unlinking ends this subsystem's controllers
                (self.port(portal) / "subsystems").unlink(nqn)  # (no port made to remove)
            hosts = list((sub / "allowed_hosts").links())
            for host in hosts:
                (sub / "allowed_hosts").unlink(host)
            self._remove_subsystem(sub)
            name = None
            if view.startswith(devmapper.NODES + "/"):
                name = view.rsplit("/", 1)[-1]
                self.dm.remove(name)
            for host in hosts:
                self._forget_host(host)
        except ConfigfsError as e:
            raise TargetError(f"remove {nqn}: {e}") from e
        return name

    @staticmethod
    def _remove_subsystem(sub: Node) -> None:
        for ns in (sub / "namespaces").children():
            (sub / "namespaces" / ns).write("enable", "0")
            (sub / "namespaces" / ns).remove()
        sub.remove()

    def _forget_host(self, host: str) -> None:
        """Drop the host entry once no subsystem allows it any more. configfs refuses
        to remove an item a link still points to (EBUSY, checked on 6.12), so the
        kernel is the check: no walk of the subsystems folder on revoke."""
        try:
            (self.root / "hosts" / host).remove()
        except ConfigfsError:
            pass  # still allowed by another subsystem (ours or someone else's): keep it

    def connection(self, volume_id: str, host: str, mode: str | None = None) -> Connection:
        return self._connection(volume_id, host, mode, self._shared(volume_id))

    def _connection(self, volume_id: str, host: str, mode: str | None,
                    shared: bool) -> Connection:
        nqn = self.view_nqn(volume_id, host)
        if shared:
            nqn = self.volume_nqn(volume_id)
            if mode is None and not (self.subsystem(nqn) / "allowed_hosts").has_link(host):
                raise NotFound(f"{host} is not admitted to volume {volume_id}")
            return Connection(protocol=self.protocol, target=nqn, portals=list(self.portals),
                              nsid=1, uuid=names.stable_uuid("nvmet", volume_id), mode="rw")
        if mode is None:
            if not self.subsystem(nqn).exists():
                raise NotFound(f"{host} is not admitted to volume {volume_id}")
            mode = devmapper.mode_of(
                self.dm.current_table(devmapper.view_name(volume_id, host))) or "rw"
        return Connection(protocol=self.protocol, target=nqn, portals=list(self.portals),
                          nsid=1, uuid=self.view_uuid(volume_id, host), mode=mode)

    # --- read back ---------------------------------------------------------
    def _view_mode(self, sub: Node) -> tuple[str, str | None]:
        """A host subsystem's dm view and its mode (None: the view is missing)."""
        view = ((sub / "namespaces" / "1").read("device_path") or "").rsplit("/", 1)[-1]
        return view, devmapper.mode_of(self.dm.current_table(view))

    def modes(self, volume_id: str) -> dict[str, str]:
        # hosts of the shared shape: all rw, in the volume's own subsystem
        found = {h: "rw" for h in (self.subsystem(self.volume_nqn(volume_id))
                                   / "allowed_hosts").links()}
        for nqn in self._views(volume_id):
            sub = self.subsystem(nqn)
            mode = self._view_mode(sub)[1] or "rw"
            for host in (sub / "allowed_hosts").links():
                found[host] = mode
        return found

    def actual(self, volume_id: str | None = None,
               hosts_only: bool = False) -> dict[str, ActualExport]:
        if volume_id is not None:  # the volume's few subsystems, found by name
            base = self.volume_nqn(volume_id)
            subs = [n for n in (self.root / "subsystems").children_named(base)
                    if n == base or n.startswith(base + HOST_MARK)]
        else:
            subs = (self.root / "subsystems").children_named(self.prefix + ":")
        ports = [self.port(portal) / "subsystems" for portal in self.portals]
        if hosts_only:
            linked = set(subs)  # (on no port is a problem, which hosts_only does not read)
        elif volume_id is None:
            linked = {name for port in ports for name in port.links()}
        else:  # a volume's few subsystems, not every port link (one per exported volume)
            linked = {n for n in subs if any(port.has_link(n) for port in ports)}
        found: dict[str, ActualExport] = {}
        for nqn in subs:
            base, _, _ = nqn.partition(HOST_MARK)
            vol = base[len(self.prefix) + 1:]
            export = found.setdefault(vol, ActualExport(volume_id=vol, device=None, hosts={}))
            sub = self.subsystem(nqn)
            if not hosts_only and sub.read("attr_allow_any_host") != "0":
                export.problems.append(f"{nqn} allows any host")
            if nqn == base:
                if not hosts_only:
                    export.device = (sub / "namespaces" / "1").read("device_path")
                for host in (sub / "allowed_hosts").links():  # shared reservations: all rw
                    export.hosts[host] = ActualHost(host=host, mode="rw")
                    if nqn not in linked:
                        export.problems.append(f"{host}'s subsystem is on no port")
                continue
            view, mode = self._view_mode(sub)
            for host in (sub / "allowed_hosts").links():
                export.hosts[host] = ActualHost(host=host, mode=mode or "rw", logged_in=None,
                                                counters=self.dm.stats(view))
                if mode is None and not hosts_only:
                    export.problems.append(f"{host}'s view {view} is missing")
                if nqn not in linked:
                    export.problems.append(f"{host}'s subsystem is on no port")
        return found
