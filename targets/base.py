"""What every target backend does, and the plain documents it speaks.

A backend exports one block device per volume to many hosts, each host by its
own ACL and credentials, `rw` or `ro` enforced by the target. Desired state is a
plain document (`Desired`), and `actual()` reads back the same shape from
configfs, so the two compare directly and `restore()` replays one into the other.
"""
import abc
import dataclasses
import ipaddress
import logging

from shareblock.blockdev import fsprobe
from shareblock.targets import names

LOG = logging.getLogger("shareblock.targets")
MODES = ("rw", "ro")


class TargetError(RuntimeError):
    """The kernel target refused or failed an operation."""


class ReservationsUnsupported(TargetError):
    """The target (transport or kernel) has no persistent reservations to show."""


class ModeUnsupported(TargetError):
    """The target cannot give one host of this export the mode asked for."""


class NotFound(TargetError):
    pass


@dataclasses.dataclass(frozen=True)
class Portal:
    address: str
    port: int

    def __post_init__(self):
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise names.InvalidName(f"portal address {self.address!r} is not an IP") from None
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise names.InvalidName(f"portal port {self.port!r} is not a TCP port")

    @property
    def ipv6(self) -> bool:
        return ":" in self.address

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if self.ipv6 else f"{self.address}:{self.port}"


@dataclasses.dataclass
class Credentials:
    """Per-host secrets. iSCSI: CHAP (mutual optional). NVMe: DH-HMAC-CHAP keys.

    repr() never shows a secret, so logging a Credentials object is harmless.
    """
    user: str | None = None
    secret: str | None = dataclasses.field(default=None, repr=False)
    mutual_user: str | None = None
    mutual_secret: str | None = dataclasses.field(default=None, repr=False)
    dhchap_key: str | None = dataclasses.field(default=None, repr=False)
    dhchap_ctrl_key: str | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict:
        # field by field: dataclasses.asdict deep-copies, on every document write
        return {f.name: getattr(self, f.name) for f in FIELDS_OF_CREDENTIALS
                if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Credentials":
        data = data or {}
        unknown = set(data) - {f.name for f in FIELDS_OF_CREDENTIALS}
        if unknown:
            raise names.InvalidName(f"unknown credential fields {sorted(unknown)}")
        return cls(**data)


FIELDS_OF_CREDENTIALS = dataclasses.fields(Credentials)


@dataclasses.dataclass
class HostAccess:
    host: str  # initiator IQN or host NQN
    mode: str = "rw"
    credentials: Credentials = dataclasses.field(default_factory=Credentials)

    def __post_init__(self):
        if self.mode not in MODES:
            raise names.InvalidName(f"mode {self.mode!r} must be rw or ro")


@dataclasses.dataclass
class Desired:
    """Everything one volume's export should be: the document restore replays.
    `backing` is the file a loop device gives `device` from (file pools), so a
    restore after a reboot can attach it again; None for a device that comes
    back by itself (an LVM volume). `shared_reservations`: every host is in one
    persistent-reservation domain (the volume type's `shared_reservations` spec;
    LIO always shares one, nvmet only in the export shape it asks for)."""
    volume_id: str
    device: str
    hosts: list[HostAccess] = dataclasses.field(default_factory=list)
    backing: str | None = None
    shared_reservations: bool = False

    def to_dict(self, secrets: bool = False) -> dict:
        return {"volume_id": self.volume_id, "device": self.device, "backing": self.backing,
                "shared_reservations": self.shared_reservations,
                "hosts": [{"host": h.host, "mode": h.mode,
                           **({"credentials": h.credentials.to_dict()} if secrets else {})}
                          for h in self.hosts]}

    @classmethod
    def from_dict(cls, data: dict) -> "Desired":
        return cls(volume_id=data["volume_id"], device=data["device"],
                   backing=data.get("backing"),
                   shared_reservations=data.get("shared_reservations") is True,
                   hosts=[HostAccess(h["host"], h.get("mode", "rw"),
                                     Credentials.from_dict(h.get("credentials")))
                          for h in data.get("hosts", [])])

    def host(self, host: str) -> HostAccess | None:
        return next((a for a in self.hosts if a.host == host), None)


@dataclasses.dataclass
class Connection:
    """How one admitted host reaches its volume: what os-brick needs, minus secrets."""
    protocol: str          # "iscsi" or "nvmet_tcp"
    target: str            # target IQN, or the subsystem NQN this host connects to
    portals: list[Portal]
    lun: int | None = None         # iSCSI LUN
    nsid: int | None = None        # NVMe namespace id
    uuid: str | None = None        # NVMe namespace uuid the host sees
    wwn: str | None = None         # iSCSI unit serial the host sees
    mode: str = "rw"


@dataclasses.dataclass
class ActualHost:
    host: str
    mode: str
    logged_in: bool | None = None       # None: the kernel does not say
    counters: dict | None = None        # per-host I/O counters, where the kernel has them


@dataclasses.dataclass
class ActualExport:
    volume_id: str
    device: str | None
    hosts: dict[str, ActualHost]
    problems: list[str] = dataclasses.field(default_factory=list)


class Target(abc.ABC):
    """One transport's kernel target. All operations are idempotent."""

    protocol: str

    def __init__(self, portals: list[Portal], prefix: str):
        if not portals:
            raise names.InvalidName("a target needs at least one portal")
        self.portals = list(portals)
        self.prefix = prefix

    # --- names -----------------------------------------------------------
    @staticmethod
    def check_mode(mode: str) -> str:
        if mode not in MODES:
            raise names.InvalidName(f"mode {mode!r} must be rw or ro")
        return mode

    @abc.abstractmethod
    def check_host(self, host: str) -> str:
        """Validate a host identifier for this transport."""

    # --- operations --------------------------------------------------------
    @abc.abstractmethod
    def export(self, volume_id: str, device: str, backing: str | None = None,
               hosts=None, shared_reservations: bool = False) -> None:
        """Make the volume's device exportable (no host admitted yet). `backing`:
        the file behind a loop device, kept in the node's desired state. `hosts`:
        the hosts a batch is about to admit, when known (LIO replays only their
        persistent reservations). `shared_reservations`: every host in one
        reservation domain (ReservationsUnsupported where the kernel has none)."""

    @abc.abstractmethod
    def unexport(self, volume_id: str) -> None:
        """Remove the volume's export and every host's access to it."""

    @abc.abstractmethod
    def admit(self, volume_id: str, host: str, mode: str,
              credentials: Credentials) -> Connection:
        """Admit one host with its own credentials, `rw` or `ro`."""

    @abc.abstractmethod
    def set_mode(self, volume_id: str, host: str, mode: str) -> None:
        """Change one admitted host's mode live, leaving every other host alone."""

    @abc.abstractmethod
    def revoke(self, volume_id: str, host: str) -> None:
        """End one host's access (and its session); the others keep theirs."""

    @abc.abstractmethod
    def connection(self, volume_id: str, host: str) -> Connection:
        """How an admitted host connects (no configfs walk)."""

    @abc.abstractmethod
    def actual(self, volume_id: str | None = None,
               hosts_only: bool = False) -> dict[str, ActualExport]:
        """Read back what is really in configfs for shareblock's own exports.
        `hosts_only`: each host's mode, session and counters, without the device
        and the checks that fill `problems` (the exporter's read at every scrape)."""

    def modes(self, volume_id: str) -> dict[str, str]:
        """Each admitted host's mode on this volume, read from configfs: what
        actual() says of its hosts, without devices, sessions or counters."""
        export = self.actual(volume_id).get(volume_id)
        return {h: s.mode for h, s in export.hosts.items()} if export else {}

    def probe(self, device: str):
        """What is on the device (filesystem signatures), read on the storage node."""
        return fsprobe.probe(device)

    def last_restore(self) -> dict | None:
        """The node's last boot-time restore (`at`, epoch seconds; `exports`,
        `hosts`, `failed`), None when none ran or the node keeps no state."""
        return None

    def shares_reservations(self) -> bool:
        """True when this target can put every host of a volume in one persistent
        reservation domain (the `shared_reservations` capability)."""
        return False

    def reservations(self, volume_id: str) -> dict:
        """The persistent reservation the kernel holds on the volume: `holder`
        ({host, isid, key} or None), `type` (SPC-4 code), `type_name`,
        `registrations` ([{host, isid, key}]), `aptpl`, `generation`."""
        raise ReservationsUnsupported(
            f"{self.protocol}: this target keeps no persistent reservations to show")

    def restore(self, desired: list[Desired]) -> None:
        """Bring every export and ACL back, e.g. after a reboot emptied configfs."""
        for export in desired:
            self.export(export.volume_id, export.device, export.backing,
                        hosts={a.host for a in export.hosts},
                        shared_reservations=export.shared_reservations)
            for access in export.hosts:
                self.admit(export.volume_id, access.host, access.mode, access.credentials)

    def apply(self, desired: list[Desired]) -> None:
        """Converge each volume on its document: export, revoke extra hosts, admit
        and change the rest. configfs is read once per volume, never walked whole."""
        for want in desired:
            self.export(want.volume_id, want.device, want.backing,
                        hosts={a.host for a in want.hosts},
                        shared_reservations=want.shared_reservations)
            actual = self.actual(want.volume_id).get(want.volume_id)
            wanted = {a.host for a in want.hosts}
            for host in set(actual.hosts if actual else ()) - wanted:
                self.revoke(want.volume_id, host)
            for access in want.hosts:
                self.admit(want.volume_id, access.host, access.mode, access.credentials)

    def desired(self, volume_id: str | None = None) -> dict[str, Desired]:
        """The node's desired state of its exports: none kept by a bare kernel target
        (see `recorded.RecordedTarget`)."""
        return {}
