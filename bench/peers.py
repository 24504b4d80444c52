"""The peers, each driven as its users drive it.

targetcli and cinder-rtstool run as one process per operation (an admin typing a
command; Cinder's LVM driver calling its root helper). rtslib-fb runs in this
process, as a library user would call it.
"""
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RTSTOOL = REPO / ".venv-cinder" / "bin" / "cinder-rtstool"


class ToolError(RuntimeError):
    pass


class ToolStopped(ToolError):
    """Stopped at its time limit: its time is a lower bound."""

    def __init__(self, msg: str, limit: float):
        super().__init__(msg)
        self.limit = limit


# Seconds. Under emulation targetcli takes minutes per command at 1,000 exports; a
# command still running at the limit is stopped and reported as "> limit".
RESTORE_LIMIT = 60.0
COMMAND_LIMIT = 60.0


def _run(cmd: list[str], env: dict | None = None, timeout: float = COMMAND_LIMIT) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolStopped(f"{cmd[0]} {cmd[1]}: still running after {timeout:.0f} s",
                          timeout) from None
    if res.returncode != 0:
        raise ToolError(f"{cmd[0]} {cmd[1]}: exit {res.returncode}: "
                        f"{(res.stderr or res.stdout).strip()[-300:]}")


def start_dbus() -> None:
    """Debian's targetcli fails every command without a system bus."""
    Path("/run/dbus").mkdir(parents=True, exist_ok=True)
    if not Path("/run/dbus/system_bus_socket").exists():
        # a forked daemon keeps inherited pipes open: give it none
        subprocess.run(["dbus-daemon", "--system", "--fork"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Targetcli:
    name = "targetcli"

    def __init__(self, home: str = "/tmp/bench-targetcli"):
        Path(home).mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TARGETCLI_HOME": home}
        start_dbus()

    def admit(self, iqn: str, host: str, user: str, secret: str) -> None:
        # One command, as an admin admits a host; the LUN is mapped automatically
        # (auto_add_mapped_luns). Setting CHAP would be a second command: not counted.
        _run(["targetcli", f"/iscsi/{iqn}/tpg1/acls", "create", host], self.env)

    def revoke(self, iqn: str, host: str) -> None:
        _run(["targetcli", f"/iscsi/{iqn}/tpg1/acls", "delete", host], self.env)


class Rtstool:
    name = "cinder-rtstool"

    def admit(self, iqn: str, host: str, user: str, secret: str) -> None:
        _run([str(RTSTOOL), "add-initiator", iqn, user, secret, host])  # its argument order

    def revoke(self, iqn: str, host: str) -> None:
        _run([str(RTSTOOL), "delete-initiator", iqn, host])


class Rtslib:
    """rtslib-fb in process: look the target up, NodeACL + CHAP + MappedLUN."""
    name = "rtslib-fb"

    def _tpg(self, iqn: str):
        from rtslib_fb import TPG, FabricModule, Target
        return TPG(Target(FabricModule("iscsi"), iqn, mode="lookup"), 1, mode="lookup")

    def admit(self, iqn: str, host: str, user: str, secret: str) -> None:
        from rtslib_fb import MappedLUN, NodeACL
        acl = NodeACL(self._tpg(iqn), host, mode="create")
        acl.chap_userid = user
        acl.chap_password = secret
        MappedLUN(acl, 0, tpg_lun=0)

    def revoke(self, iqn: str, host: str) -> None:
        from rtslib_fb import NodeACL
        NodeACL(self._tpg(iqn), host, mode="lookup").delete()


def targetctl_restore(path: str) -> None:
    _run(["targetctl", "restore", path], timeout=RESTORE_LIMIT)


def rtslib_save(exports: list[dict], path: str) -> None:
    """The saveconfig document rtslib-fb writes for these exports (as for `targetctl
    restore`): rtslib-fb's own dump of the first one, repeated for the others with
    their names, devices, serials, IQNs, hosts and CHAP. RTSRoot.save_to_file() on
    500 exports x 4 hosts takes four minutes under emulation; the document is the same.
    exports: [{iqn, name, device, serial, hosts: [{host, user, secret}]}]."""
    import copy
    import json

    from rtslib_fb import BlockStorageObject, FabricModule, Target
    first = exports[0]
    so_t = BlockStorageObject(first["name"]).dump()
    target_t = Target(FabricModule("iscsi"), first["iqn"], mode="lookup").dump()
    acl_t = target_t["tpgs"][0]["node_acls"][0]
    storage_objects, targets = [], []
    for e in exports:
        so = copy.deepcopy(so_t) | {"name": e["name"], "dev": e["device"], "wwn": e["serial"]}
        storage_objects.append(so)
        target = copy.deepcopy(target_t) | {"wwn": e["iqn"]}
        for tpg in target["tpgs"]:
            for lun in tpg["luns"]:
                lun["storage_object"] = f"/backstores/{so_t['plugin']}/{e['name']}"
            tpg["node_acls"] = [
                copy.deepcopy(acl_t) | {"node_wwn": h["host"], "chap_userid": h["user"],
                                        "chap_password": h["secret"]}
                for h in e["hosts"]]
        targets.append(target)
    with open(path, "w") as f:
        json.dump({"fabric_modules": [], "storage_objects": storage_objects,
                   "targets": targets}, f)
