"""`shareblock connect` / `disconnect` / `hosts-status`: the admin's host side.

connect: this host's connector (os-brick) -> attachment with the control plane
-> os-brick connects -> pyudev finds the volume's own device -> read-only on the
host too when the attachment is ro -> attachment completed. Any failure rolls
back what was done: no half-made attachment stays behind.
"""
import contextlib
import datetime
import fcntl
import json
import logging
import os
import subprocess
from pathlib import Path

from shareblock.targets.privatefile import write_private_json
from shareblock.host import brick, devices
from shareblock.initiator import nvme_config

LOG = logging.getLogger("shareblock.host")
STATE = Path(os.environ.get("SHAREBLOCK_HOST_STATE", "/var/lib/shareblock/host-attachments.json"))
SECRETS = ("auth_password", "dhchap_secret", "dhchap_ctrl_secret")


class AttachError(RuntimeError):
    pass


def _load() -> dict:
    try:
        return json.loads(STATE.read_text())
    except FileNotFoundError:
        return {}


def _save(records: dict) -> None:
    write_private_json(STATE, records)


@contextlib.contextmanager
def _host_lock():
    """One connect or disconnect at a time on this host: each reads the records,
    talks to the control plane and the target, then writes the records back; two
    at once would lose one's record or attach one volume twice."""
    STATE.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(f"{STATE}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def connect(control, volume: str, mode: str = "rw", timeout: float = 90.0) -> dict:
    with _host_lock():
        return _connect(control, volume, mode, timeout)


def _connect(control, volume: str, mode: str, timeout: float) -> dict:
    records = _load()
    vol = control.show(volume)
    if vol["id"] in records:  # already connected here: idempotent
        record = records[vol["id"]]
        if not record.get("completed", True):  # a crash came before the complete
            control.attachment_complete(record["attachment_id"])
            record["completed"] = True
            _save(records)
        return record
    props = brick.connector_properties(mode)
    att = control.attachment_create(vol["id"], props, mode)
    info = device_info = connector = None
    try:
        info = att.get("connection_info") or {}
        if not isinstance(info.get("data"), dict) or "driver_volume_type" not in info:
            raise AttachError("the control plane gave no connection info")
        connector = brick.connector_for(info)
        if info["driver_volume_type"] == "nvmeof":
            nvme_config.nvme_keys(props["nqn"], info["data"])
        device_info = connector.connect_volume(info["data"])
        device = devices.wait_for_device(info, device_info.get("path"), timeout)
        granted = info["data"]["access_mode"]
        if granted == "ro":  # the target enforces it; the host should not even try
            subprocess.run(["blockdev", "--setro", device], check=True)
        # recorded before the complete: a crash between the two leaves a record
        # that the next connect completes, not a second attachment
        records[vol["id"]] = record = {
            "volume_id": vol["id"], "volume_name": vol.get("name"),
            "attachment_id": att["id"], "device": device, "mode": granted,
            "reason": att.get("reason"), "transport": info["driver_volume_type"],
            "connection_info": {"driver_volume_type": info["driver_volume_type"],
                                "data": {k: v for k, v in info["data"].items()
                                         if k not in SECRETS}},
            "device_info": device_info, "hostnqn": props.get("nqn"), "completed": False,
            # UTC without a zone, as the control plane's times (the CLI shows local)
            "attached_at": datetime.datetime.now(datetime.timezone.utc).replace(
                tzinfo=None).isoformat(timespec="seconds")}
        _save(records)
        control.attachment_complete(att["id"])
    except Exception as e:
        LOG.warning("connect %s failed, rolling back: %s", volume, e)
        _roll_back(control, att["id"], info, props, connector, device_info)
        if records.pop(vol["id"], None) is not None:
            _save(records)
        raise AttachError(f"connect {volume}: {_one_line(e)}") from e
    record["completed"] = True
    _save(records)
    return record


def _roll_back(control, att_id, info, props, connector, device_info) -> None:
    """Undo a connect that failed part-way. os-brick may have left a session, a
    node record or a controller behind even when connect_volume raised. Each
    step is tried; the attachment is deleted whatever failed before it (that
    revokes the host at the target)."""
    try:
        if connector is not None:
            connector.disconnect_volume(info["data"], device_info or {}, force=True,
                                        ignore_errors=True)
        if info and info.get("driver_volume_type") == "nvmeof" and props.get("nqn"):
            nvme_config.forget_nvme_keys(props["nqn"], info["data"]["target_nqn"])
    except Exception as undo:
        LOG.warning("undoing the host side during rollback: %s", undo)
    finally:
        control.attachment_delete(att_id)


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())  # os-brick's errors carry command output
    return text if len(text) <= 300 else text[:297] + "..."


def find(records: dict, volume: str) -> dict | None:
    for rec in records.values():
        if volume in (rec["volume_id"], rec["volume_name"], rec["attachment_id"]):
            return rec
    return None


def disconnect(control, volume: str) -> dict:
    with _host_lock():
        return _disconnect(control, volume)


def _disconnect(control, volume: str) -> dict:
    records = _load()
    rec = find(records, volume)
    if rec is None:
        raise AttachError(f"volume {volume} is not connected on this host")
    info = rec["connection_info"]
    subprocess.run(["blockdev", "--flushbufs", rec["device"]], check=False)
    brick.connector_for(info).disconnect_volume(info["data"], rec["device_info"], force=False)
    if rec["transport"] == "nvmeof" and rec.get("hostnqn"):
        nvme_config.forget_nvme_keys(rec["hostnqn"], info["data"]["target_nqn"])
    control.attachment_delete(rec["attachment_id"])
    del records[rec["volume_id"]]
    _save(records)
    return rec


def status() -> list[dict]:
    out = []
    for rec in _load().values():
        data = rec["connection_info"]["data"]
        out.append({"volume_id": rec["volume_id"], "name": rec["volume_name"],
                    "device": rec["device"], "mode": rec["mode"], "transport": rec["transport"],
                    "target": data.get("target_iqn") or data.get("target_nqn"),
                    "session": session_state(rec), "attached_at": rec.get("attached_at")})
    return out


def session_state(rec: dict) -> str:
    data = rec["connection_info"]["data"]
    if rec["transport"] == "iscsi":
        for sess in Path("/sys/class/iscsi_session").glob("session*"):
            if (sess / "targetname").read_text().strip() == data["target_iqn"]:
                return (sess / "state").read_text().strip()
        return "gone"
    for ctrl in Path("/sys/class/nvme").glob("nvme*"):
        try:
            if (ctrl / "subsysnqn").read_text().strip() == data["target_nqn"]:
                return (ctrl / "state").read_text().strip()
        except OSError:
            continue
    return "gone"
