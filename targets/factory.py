"""One place that turns configuration into a target: local LIO, local nvmet, or SSH."""
from shareblock.targets import lio, names, nvmet
from shareblock.targets.base import Portal, Target
from shareblock.targets.desired import DesiredStore
from shareblock.targets.recorded import RecordedTarget

PROTOCOLS = ("iscsi", "nvmet_tcp")


def kernel_target(protocol: str, portals: list[Portal], prefix: str | None = None,
                  port_ids: list[int] | None = None) -> Target:
    """The bare kernel target: configfs only, no desired state kept. `port_ids`:
    nvmet's own port per portal (default: derived from the portal)."""
    if protocol == "iscsi":
        return lio.LioTarget(portals, prefix or lio.DEFAULT_PREFIX)
    if protocol == "nvmet_tcp":
        return nvmet.NvmetTarget(portals, prefix or nvmet.DEFAULT_PREFIX, port_ids=port_ids)
    raise names.InvalidName(f"target protocol {protocol!r} must be one of {PROTOCOLS}")


def local_target(protocol: str, portals: list[Portal], prefix: str | None = None,
                 state_dir: str | None = None, port_ids: list[int] | None = None) -> Target:
    """This node's target; with `state_dir`, one that keeps the node's desired state
    there (what the boot-time restore replays)."""
    kernel = kernel_target(protocol, portals, prefix, port_ids)
    return RecordedTarget(kernel, DesiredStore(state_dir)) if state_dir else kernel


def open_target(protocol: str, portals: list[Portal], node: str = "local",
                prefix: str | None = None, state_dir: str | None = None,
                port_ids: list[int] | None = None, **ssh) -> Target:
    """`node` is `local` or `ssh://user@host[:port]` (ssh: known_hosts, key_filename,
    agent_command). A remote node keeps its desired state itself (the agent's
    --state-dir); `state_dir` is this node's."""
    if node == "local":
        return local_target(protocol, portals, prefix, state_dir, port_ids)
    from shareblock.targets.remote import RemoteTarget
    if protocol not in PROTOCOLS:
        raise names.InvalidName(f"target protocol {protocol!r} must be one of {PROTOCOLS}")
    default = lio.DEFAULT_PREFIX if protocol == "iscsi" else nvmet.DEFAULT_PREFIX
    return RemoteTarget(node, protocol, portals, prefix or default, port_ids=port_ids, **ssh)
