"""os-brick, in-process as root: connector properties, connect and disconnect.

No privsep daemon (client mode off: we are root) and a lock path shareblock
owns. One os-brick connector per protocol, from os-brick's own factory.
"""
import json
import os
import socket

from shareblock.targets.privatefile import write_private_json

LOCK_PATH = os.environ.get("SHAREBLOCK_LOCK_PATH", "/run/shareblock/locks")
PROTOCOLS = {"iscsi": "ISCSI", "nvmeof": "NVME"}
NVME_CONFIG = "/etc/nvme/config.json"
_ready = False


def setup() -> None:
    global _ready
    if _ready:
        return
    from os_brick import privileged
    from oslo_concurrency import lockutils
    os.makedirs(LOCK_PATH, mode=0o700, exist_ok=True)
    lockutils.set_defaults(LOCK_PATH)
    privileged.default.set_client_mode(False)
    _ready = True


def connector_properties(mode: str = "rw") -> dict:
    """This host's initiator IQN, host NQN, name and address, as Nova sends them."""
    setup()
    from os_brick.initiator import connector
    try:
        ip = socket.gethostbyname(socket.gethostname())
    except OSError:
        ip = "127.0.0.1"
    props = connector.get_connector_properties(None, ip, multipath=False,
                                               enforce_multipath=False)
    props["mode"] = mode
    return props


def connector_for(info: dict):
    setup()
    from os_brick.initiator import connector
    kind = PROTOCOLS.get(info.get("driver_volume_type"))
    if kind is None:
        raise ValueError(f"unsupported volume type {info.get('driver_volume_type')!r}")
    return connector.InitiatorConnector.factory(kind, None, use_multipath=False)


def nvme_keys(hostnqn: str, data: dict) -> None:
    """os-brick passes no DH-HMAC-CHAP keys to nvme-cli; nvme-cli reads them from
    its JSON config, so put this host's keys for this subsystem there (0600)."""
    if not data.get("dhchap_secret"):
        return
    try:
        with open(NVME_CONFIG) as f:
            config = json.load(f)
    except (FileNotFoundError, ValueError):
        config = []
    host = next((h for h in config if h.get("hostnqn") == hostnqn), None)
    if host is None:
        host = {"hostnqn": hostnqn, "subsystems": []}
        config.append(host)
    try:  # nvme-cli matches its config's host on host NQN and host id together
        with open(os.path.join(os.path.dirname(NVME_CONFIG), "hostid")) as f:
            host["hostid"] = f.read().strip()
    except FileNotFoundError:
        pass
    host["dhchap_key"] = data["dhchap_secret"]
    ports = [{"transport": t, "traddr": a, "trsvcid": str(p),
              **({"dhchap_key": data["dhchap_ctrl_secret"]}
                 if data.get("dhchap_ctrl_secret") else {})}
             for a, p, t in data["portals"]]
    host["subsystems"] = [s for s in host.get("subsystems", []) if s.get("nqn")
                          != data["target_nqn"]] + [{"nqn": data["target_nqn"], "ports": ports}]
    write_private_json(NVME_CONFIG, config)


def forget_nvme_keys(hostnqn: str, target_nqn: str) -> None:
    try:
        with open(NVME_CONFIG) as f:
            config = json.load(f)
    except (FileNotFoundError, ValueError):
        return
    for host in config:
        if host.get("hostnqn") == hostnqn:
            host["subsystems"] = [s for s in host.get("subsystems", [])
                                  if s.get("nqn") != target_nqn]
    write_private_json(NVME_CONFIG, config)
