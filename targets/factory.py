"""One place that turns configuration into a target: local LIO, local nvmet, or SSH."""
from shareblock.targets import lio, names, nvmet
from shareblock.targets.base import Portal, Target

PROTOCOLS = ("iscsi", "nvmet_tcp")


def local_target(protocol: str, portals: list[Portal], prefix: str | None = None) -> Target:
    if protocol == "iscsi":
        return lio.LioTarget(portals, prefix or lio.DEFAULT_PREFIX)
    if protocol == "nvmet_tcp":
        return nvmet.NvmetTarget(portals, prefix or nvmet.DEFAULT_PREFIX)
    raise names.InvalidName(f"target protocol {protocol!r} must be one of {PROTOCOLS}")


def open_target(protocol: str, portals: list[Portal], node: str = "local",
                prefix: str | None = None, **ssh) -> Target:
    """`node` is `local` or `ssh://user@host[:port]` (ssh: known_hosts, key_filename,
    agent_command)."""
    if node == "local":
        return local_target(protocol, portals, prefix)
    from shareblock.targets.remote import RemoteTarget
    if protocol not in PROTOCOLS:
        raise names.InvalidName(f"target protocol {protocol!r} must be one of {PROTOCOLS}")
    default = lio.DEFAULT_PREFIX if protocol == "iscsi" else nvmet.DEFAULT_PREFIX
    return RemoteTarget(node, protocol, portals, prefix or default, **ssh)
