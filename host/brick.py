"""os-brick, in-process as root: connector properties, connect and disconnect.

No privsep daemon (client mode off: we are root) and a lock path shareblock
owns. One os-brick connector per protocol, from os-brick's own factory.
"""
import os
import socket

LOCK_PATH = os.environ.get("SHAREBLOCK_LOCK_PATH", "/run/shareblock/locks")
PROTOCOLS = {"iscsi": "ISCSI", "nvmeof": "NVME"}
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
