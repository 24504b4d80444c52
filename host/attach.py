"""`shareblock connect` / `disconnect` / `hosts-status`: the admin's host side.

connect: this host's connector (os-brick) -> attachment with the control plane
-> os-brick connects -> pyudev finds the volume's own device -> read-only on the
host too when the attachment is ro -> attachment completed. Any failure rolls
back what was done: no half-made attachment stays behind.
"""
import json
import logging
import os
import subprocess
from pathlib import Path

from shareblock.driver.state import write_private_json
from shareblock.host import brick, devices

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


def connect(control, volume: str, mode: str = "rw", timeout: float = 90.0) -> dict:
    records = _load()
    vol = control.show(volume)
    if vol["id"] in records:
        return records[vol["id"]]  # already connected here: idempotent
    props = brick.connector_properties(mode)
    att = control.attachment_create(vol["id"], props, mode)
    info = att["connection_info"]
    device_info = None
    connector = None
    try:
        connector = brick.connector_for(info)
        if info["driver_volume_type"] == "nvmeof":
            brick.nvme_keys(props["nqn"], info["data"])
        device_info = connector.connect_volume(info["data"])
        device = devices.wait_for_device(info, device_info.get("path"), timeout)
        granted = info["data"]["access_mode"]
        if granted == "ro":  # the target enforces it; the host should not even try
            subprocess.run(["blockdev", "--setro", device], check=True)
        control.attachment_complete(att["id"])
    except Exception as e:
        LOG.warning("connect %s failed, rolling back: %s", volume, e)
        _roll_back(control, att["id"], info, props, connector, device_info)
        raise AttachError(f"connect {volume}: {_one_line(e)}") from e
    record = {"volume_id": vol["id"], "volume_name": vol.get("name"),
              "attachment_id": att["id"], "device": device, "mode": granted,
              "reason": att.get("reason"), "transport": info["driver_volume_type"],
              "connection_info": {"driver_volume_type": info["driver_volume_type"],
                                  "data": {k: v for k, v in info["data"].items()
                                           if k not in SECRETS}},
              "device_info": device_info, "hostnqn": props.get("nqn")}
    records[vol["id"]] = record
    _save(records)
    return record


def _roll_back(control, att_id, info, props, connector, device_info) -> None:
    """Undo a connect that failed part-way. os-brick may have left a session, a
    node record or a controller behind even when connect_volume raised."""
    if connector is not None:
        try:
            connector.disconnect_volume(info["data"], device_info or {}, force=True,
                                        ignore_errors=True)
        except Exception as undo:  # the attachment delete below still revokes
            LOG.warning("disconnect during rollback: %s", undo)
    if info["driver_volume_type"] == "nvmeof" and props.get("nqn"):
        brick.forget_nvme_keys(props["nqn"], info["data"]["target_nqn"])
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
    records = _load()
    rec = find(records, volume)
    if rec is None:
        raise AttachError(f"volume {volume} is not connected on this host")
    info = rec["connection_info"]
    subprocess.run(["blockdev", "--flushbufs", rec["device"]], check=False)
    brick.connector_for(info).disconnect_volume(info["data"], rec["device_info"], force=False)
    if rec["transport"] == "nvmeof" and rec.get("hostnqn"):
        brick.forget_nvme_keys(rec["hostnqn"], info["data"]["target_nqn"])
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
                    "session": session_state(rec)})
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
