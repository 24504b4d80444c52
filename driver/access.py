"""The host-access rule: what one host may do on a volume, from its live attachments.

One function, used by attach, detach and reconcile alike, so a host's mode is
never kept anywhere as a fact of its own: a host is admitted iff it has a live
attachment, and `rw` iff at least one of its live attachments is `rw` (the
guard may still lower that, see `ShareBlockDriver.attach_decision`).
"""
DEAD = ("detached", "deleted")


def field(obj, name, default=None):
    """A field of a Cinder object or of a plain dict."""
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def live(attachments) -> list:
    return [a for a in attachments or () if field(a, "attach_status", "attached") not in DEAD]


def host_mode(modes) -> str | None:
    """The host's mode from the modes of its live attachments: None (not admitted)
    when it has none, `rw` when any is `rw`, else `ro`."""
    modes = list(modes)
    if not modes:
        return None
    for mode in modes:
        if mode not in ("rw", "ro"):
            raise ValueError(f"attach mode {mode!r} must be rw or ro")
    return "rw" if "rw" in modes else "ro"


def host_modes(attachments, host_of) -> dict[str, str]:
    """Every admitted host's mode, in the order of each host's first live attachment.
    `host_of(attachment)` returns the attachment's host id, or None (not connected)."""
    per_host: dict[str, list[str]] = {}
    for att in live(attachments):
        host = host_of(att)
        if host:
            per_host.setdefault(host, []).append(field(att, "attach_mode") or "rw")
    return {host: host_mode(modes) for host, modes in per_host.items()}


def instance_of(attachment) -> str | None:
    return field(attachment, "instance_uuid") or field(attachment, "instance")


def _writes(attachments, host_of) -> dict[str, set]:
    """Each writing host's instances: those of its live `rw` attachments."""
    writes: dict[str, set] = {}
    for att in live(attachments):
        host = host_of(att)
        if host and (field(att, "attach_mode") or "rw") == "rw":
            writes.setdefault(host, set()).add(instance_of(att))
    return writes


def one_writer_groups(attachments, host_of) -> list[list[str]]:
    """Hosts that write as one: the ends of a live migration. Nova attaches the
    volume to the same instance on the destination host and deletes the source's
    attachment when the move ends, so two hosts whose only `rw` attachments are of
    one instance are that instance, one writer that moves, not a second writer.
    Every writing host is in exactly one group, in the order of first attachment."""
    groups: dict[object, list[str]] = {}
    for host, instances in _writes(attachments, host_of).items():
        only = next(iter(instances)) if len(instances) == 1 else None
        key = only if only is not None else ("host", host)
        groups.setdefault(key, []).append(host)
    return list(groups.values())


def same_writer(attachments, host_of, host: str, instance: str | None) -> set[str]:
    """The other hosts that write only for `instance`: when `host` attaches it,
    they are the same writer moving (a live migration), not a second one."""
    if instance is None:
        return set()
    return {other for other, instances in _writes(attachments, host_of).items()
            if other != host and instances == {instance}}
