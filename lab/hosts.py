"""Transport-neutral host identities (lab and demo): connect, write, read, fail."""
import subprocess
import uuid

from shareblock.lab.initiators import (InitiatorError, IscsiInitiator, NvmeInitiator,
                                       read_back, write_pattern)
from shareblock.targets import credentials
from shareblock.targets.base import Connection, Credentials, Portal


class Host:
    """One initiator identity of either transport."""

    def __init__(self, protocol: str, tag: str, lost_after: int | None = None):
        """`lost_after`: NVMe's controller loss timeout (s), as the lab's iSCSI logins
        set a short replacement timeout; None: nvme-cli's default."""
        self.protocol = protocol
        self.lost_after = lost_after
        if protocol == "iscsi":
            self.id = f"iqn.2026-11.io.shareblock.test:{tag}"
            self.initiator = IscsiInitiator(self.id)
            self.credentials = credentials.random_chap(tag)
        else:
            self.id = f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid5(uuid.NAMESPACE_DNS, tag)}"
            self.initiator = NvmeInitiator(self.id)
            self.credentials = credentials.random_dhchap()
        self.conn: Connection | None = None

    def connect(self, conn: Connection, creds: Credentials | None = None, timeout: float = 60):
        creds = creds or self.credentials
        self.conn = conn
        portal = conn.portals[0]
        if self.protocol == "iscsi":
            mutual = (creds.mutual_user, creds.mutual_secret) if creds.mutual_user else None
            return self.initiator.login(conn.target, portal.address, portal.port,
                                        chap=(creds.user, creds.secret), mutual=mutual,
                                        timeout=timeout)
        return self.initiator.connect(conn.target, portal.address, portal.port,
                                      dhchap_secret=creds.dhchap_key,
                                      ctrl_secret=creds.dhchap_ctrl_key, timeout=timeout)

    def device(self):
        if self.protocol == "iscsi":
            return self.initiator.device(self.conn.target)
        return self.initiator.device(self.conn.target)

    def connected(self) -> bool:
        if self.protocol == "iscsi":
            sess = self.initiator.session(self.conn.target)
            return bool(sess) and (sess / "state").read_text().strip() == "LOGGED_IN"
        ctrl = self.initiator.controller(self.conn.target)
        return bool(ctrl) and (ctrl / "state").read_text().strip() == "live"

    def rescan(self):
        if self.protocol == "iscsi":
            self.initiator.rescan(self.conn.target)

    def disconnect(self):
        if not self.conn:
            return
        portal = self.conn.portals[0]
        if self.protocol == "iscsi":
            self.initiator.logout(self.conn.target, portal.address, portal.port)
        else:
            self.initiator.disconnect(self.conn.target)

    def cleanup(self):
        self.disconnect()
        if self.protocol == "iscsi":
            self.initiator.remove()

    def write(self, data: bytes, offset_mb: int = 0) -> None:
        write_pattern(self.device(), data, offset_mb)

    def read(self, size: int, offset_mb: int = 0) -> bytes:
        return read_back(self.device(), size, offset_mb)

    def write_fails_at_target(self, data: bytes, offset_mb: int = 0) -> bool:
        """Try to write with the host-side read-only flag cleared: only the target stops it."""
        dev = self.device()
        subprocess.run(["blockdev", "--setrw", str(dev)], check=False)
        try:
            write_pattern(dev, data, offset_mb)
        except InitiatorError:
            return True
        return False

    def attach(self, info: dict):
        """Connect exactly as the driver's connection info says (os-brick's keys)."""
        data = info["data"]
        if info["driver_volume_type"] == "iscsi":
            address, port = data["target_portal"].rsplit(":", 1)
            self.conn = Connection("iscsi", data["target_iqn"], [Portal(address, int(port))])
            return self.initiator.login(data["target_iqn"], address, int(port),
                                        chap=(data["auth_username"], data["auth_password"]))
        address, port, _ = data["portals"][0]
        self.conn = Connection("nvmet_tcp", data["target_nqn"], [Portal(address, port)])
        return self.initiator.connect(data["target_nqn"], address, port,
                                      dhchap_secret=data.get("dhchap_secret"),
                                      ctrl_secret=data.get("dhchap_ctrl_secret"),
                                      ctrl_loss_tmo=self.lost_after)

    def connector(self, name: str | None = None) -> dict:
        """A Cinder-style connector for this identity."""
        key = "initiator" if self.protocol == "iscsi" else "nqn"
        return {key: self.id, "host": name or self.id[-12:]}
