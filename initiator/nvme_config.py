"""nvme-cli's JSON config (`/etc/nvme/config.json`): this node's DH-HMAC-CHAP keys
per host NQN and subsystem. nvme-cli 2.3 reads a host's keys from it when os-brick
connects; the file holds secrets, so it is written private (0600)."""
import json
import os

from shareblock.targets.privatefile import write_private_json

NVME_CONFIG = "/etc/nvme/config.json"


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
