"""SSH to a storage node with paramiko: known host keys only, key or agent auth."""
import socket
import urllib.parse

from shareblock.targets import names
from shareblock.targets.base import TargetError


class Unreachable(TargetError):
    pass


def parse_node(url: str) -> tuple[str, str, int]:
    """ssh://user@host[:port] -> (user, host, port)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "ssh" or not parsed.hostname or parsed.path not in ("", "/"):
        raise names.InvalidName(f"storage node {url!r} must look like ssh://user@host[:port]")
    try:
        port = parsed.port or 22
    except ValueError:
        raise names.InvalidName(f"storage node {url!r} has a bad port") from None
    user = parsed.username or "root"
    if not names.TOKEN_RE.match(user):
        raise names.InvalidName(f"SSH user {user!r} is not a plain user name")
    return user, parsed.hostname, port


def connect(url: str, known_hosts: str | None = None, key_filename: str | None = None,
            timeout: float = 15.0):
    """An SSHClient to the node; unknown host keys are refused (RejectPolicy)."""
    import paramiko
    user, host, port = parse_node(url)
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    if known_hosts:
        client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host, port, username=user, key_filename=key_filename, allow_agent=True,
                       look_for_keys=key_filename is None, timeout=timeout,
                       banner_timeout=timeout, auth_timeout=timeout)
    except paramiko.BadHostKeyException as e:
        raise TargetError(f"storage node {host}: host key changed ({e})") from e
    except paramiko.AuthenticationException as e:
        raise TargetError(f"storage node {host}: SSH authentication failed") from e
    except paramiko.SSHException as e:
        if "known_hosts" in str(e) or "not found" in str(e):
            raise TargetError(f"storage node {host}: unknown host key, refused "
                              f"(add it to known_hosts first)") from e
        raise Unreachable(f"storage node {host}:{port}: {e}") from e
    except (OSError, socket.timeout) as e:
        raise Unreachable(f"storage node {host}:{port} is unreachable: "
                          f"{getattr(e, 'strerror', None) or e}") from e
    return client
