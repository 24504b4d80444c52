"""Real initiators, one object per host identity, for lab tests and the demo.

Several identities share one kernel in the lab: open-iscsi gets one iface per
IQN, nvme-cli a --hostnqn/--hostid pair per host NQN (the lab boots with
nvme_core.multipath=N so each identity keeps its own block device).
"""
import hashlib
import os
import subprocess
import time
import uuid
from pathlib import Path

SYS = Path("/sys")


class InitiatorError(RuntimeError):
    pass


def run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise InitiatorError(f"{' '.join(cmd[:4])}... exit {res.returncode}: "
                             f"{(res.stderr or res.stdout).strip()}")
    return res


def _wait_for(find, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found:
            return found
        if time.monotonic() > deadline:
            raise InitiatorError(f"{what} did not appear within {timeout:.0f} s")
        time.sleep(0.2)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def portal_arg(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class IscsiInitiator:
    """One open-iscsi identity: an iface carrying its own initiator IQN."""

    def __init__(self, iqn: str):
        self.iqn = iqn
        self.iface = "sb" + hashlib.sha1(iqn.encode()).hexdigest()[:10]
        if run(["iscsiadm", "-m", "iface", "-I", self.iface], check=False).returncode:
            run(["iscsiadm", "-m", "iface", "-I", self.iface, "--op=new"])
        self._update_iface("iface.initiatorname", iqn)
        self._update_iface("iface.transport_name", "tcp")

    def _update_iface(self, name: str, value: str) -> None:
        run(["iscsiadm", "-m", "iface", "-I", self.iface, "--op=update", "-n", name, "-v", value])

    def _node(self, target: str, portal: str) -> list[str]:
        return ["iscsiadm", "-m", "node", "-T", target, "-p", portal, "-I", self.iface]

    def login(self, target: str, address: str, port: int = 3260,
              chap: tuple[str, str] | None = None,
              mutual: tuple[str, str] | None = None, timeout: float = 60,
              replacement_timeout: int = 5) -> Path:
        """Log in and return the LUN 0 block device this identity sees.

        A short replacement timeout makes I/O fail soon after the target ends
        the session (the default, 120 s, queues it for two minutes)."""
        portal = portal_arg(address, port)
        node = self._node(target, portal)
        run(node + ["--op=new"])
        settings = {"node.session.auth.authmethod": "CHAP" if chap else "None",
                    "node.session.timeo.replacement_timeout": str(replacement_timeout)}
        if chap:
            settings["node.session.auth.username"], settings["node.session.auth.password"] = chap
        if mutual:
            settings["node.session.auth.username_in"] = mutual[0]
            settings["node.session.auth.password_in"] = mutual[1]
        for name, value in settings.items():
            run(node + ["--op=update", "-n", name, "-v", value])
        try:
            run(node + ["--login"])
        except InitiatorError:
            run(node + ["--op=delete"], check=False)
            raise
        return _wait_for(lambda: self.device(target), f"iSCSI disk of {target}", timeout)

    def session(self, target: str) -> Path | None:
        for sess in sorted(SYS.glob("class/iscsi_session/session*")):
            if (_read(sess / "targetname") == target
                    and _read(sess / "initiatorname") == self.iqn):
                return sess
        return None

    def device(self, target: str, lun: int = 0) -> Path | None:
        sess = self.session(target)
        if not sess:
            return None
        for block in sorted(sess.glob(f"device/target*/*:*:*:{lun}/block/*")):
            return Path("/dev") / block.name
        return None

    def rescan(self, target: str) -> None:
        sess = self.session(target)
        if sess:
            sid = sess.name.removeprefix("session")
            run(["iscsiadm", "-m", "session", "-r", sid, "--rescan"])

    def logout(self, target: str, address: str, port: int = 3260) -> None:
        node = self._node(target, portal_arg(address, port))
        run(node + ["--logout"], check=False)
        run(node + ["--op=delete"], check=False)

    def remove(self) -> None:
        run(["iscsiadm", "-m", "iface", "-I", self.iface, "--op=delete"], check=False)


class NvmeInitiator:
    """One nvme-cli identity: a host NQN and host id of its own."""

    def __init__(self, hostnqn: str, hostid: str | None = None):
        self.hostnqn = hostnqn
        self.hostid = hostid or str(uuid.uuid5(uuid.NAMESPACE_URL, hostnqn))

    def connect(self, subnqn: str, address: str, port: int = 4420,
                dhchap_secret: str | None = None, ctrl_secret: str | None = None,
                timeout: float = 60, ctrl_loss_tmo: int | None = None) -> Path:
        """`ctrl_loss_tmo`: seconds the host retries a lost controller before its I/O
        fails and the controller goes (nvme-cli's default: 600)."""
        # the kernel's connect options; nvme-cli's long options have the same names
        options = {"transport": "tcp", "traddr": address, "trsvcid": str(port), "nqn": subnqn,
                   "hostnqn": self.hostnqn, "hostid": self.hostid}
        if ctrl_loss_tmo is not None:
            options.update(ctrl_loss_tmo=ctrl_loss_tmo, reconnect_delay=1)
        if dhchap_secret:
            options["dhchap_secret"] = dhchap_secret
        if ctrl_secret:
            options["dhchap_ctrl_secret"] = ctrl_secret
        if self._others_connected(subnqn):
            self._connect_fabrics(options)
        else:
            run(["nvme", "connect", *(f"--{k.replace('_', '-')}={v}"
                                      for k, v in options.items())])
        return _wait_for(lambda: self.device(subnqn), f"NVMe namespace of {subnqn}", timeout)

    @staticmethod
    def _connect_fabrics(options: dict) -> None:
        """The same connect written to the kernel's own interface, /dev/nvme-fabrics
        (as nvme-cli does in the end). nvme-cli 2.3 takes another identity's
        controller of the same subsystem and portal for this one's and stops
        ("already connected", --duplicate-connect too); the kernel tells them apart
        by host NQN. So several hosts of one shared subsystem on one lab kernel
        connect this way."""
        line = ",".join(f"{k}={v}" for k, v in options.items())
        try:
            fd = os.open("/dev/nvme-fabrics", os.O_RDWR)
            try:
                os.write(fd, line.encode())
                os.read(fd, 4096)  # instance=N,cntlid=M
            finally:
                os.close(fd)
        except OSError as e:
            raise InitiatorError(f"connect {options['nqn']} as {options['hostnqn']} "
                                 f"through /dev/nvme-fabrics: {e.strerror}") from None

    def _others_connected(self, subnqn: str) -> bool:
        return any(_read(c / "subsysnqn") == subnqn and _read(c / "hostnqn") != self.hostnqn
                   for c in SYS.glob("class/nvme/nvme*"))

    def controller(self, subnqn: str) -> Path | None:
        for ctrl in sorted(SYS.glob("class/nvme/nvme*")):
            if _read(ctrl / "subsysnqn") == subnqn and _read(ctrl / "hostnqn") == self.hostnqn:
                return ctrl
        return None

    def device(self, subnqn: str) -> Path | None:
        ctrl = self.controller(subnqn)
        if not ctrl:
            return None
        for ns in sorted(ctrl.glob("nvme*n*")):
            if (ns / "dev").exists() and (Path("/dev") / ns.name).exists():
                return Path("/dev") / ns.name
        return None

    def disconnect(self, subnqn: str) -> None:
        ctrl = self.controller(subnqn)
        if ctrl:
            run(["nvme", "disconnect", "-d", ctrl.name], check=False)


def write_pattern(device: str | Path, pattern: bytes, offset_mb: int = 0) -> None:
    """Write through the page cache's back door (O_DIRECT), so the target sees it now."""
    run_bytes(["dd", f"of={device}", "bs=1M", f"seek={offset_mb}", "oflag=direct",
               "status=none"], pattern)


def read_back(device: str | Path, size: int, offset_mb: int = 0) -> bytes:
    count = max(1, -(-size // (1 << 20)))
    return run_bytes(["dd", f"if={device}", "bs=1M", f"skip={offset_mb}", "iflag=direct",
                      f"count={count}", "status=none"])[:size]


def run_bytes(cmd: list[str], data: bytes | None = None) -> bytes:
    res = subprocess.run(cmd, input=data, capture_output=True)
    if res.returncode != 0:
        raise InitiatorError(f"{cmd[0]} {cmd[1]} exit {res.returncode}: "
                             f"{res.stderr.decode(errors='replace').strip()}")
    return res.stdout
