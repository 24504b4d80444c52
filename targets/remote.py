"""The same target operations on a remote storage node, over SSH (paramiko).

The node runs `shareblock-target-agent`, which reads one JSON request on stdin
and answers one JSON reply on stdout. Requests never travel on a command line
(no shell ever sees a name or a secret), host keys must already be known
(RejectPolicy), and authentication is by key or agent.
"""
import dataclasses
import json
import socket
import urllib.parse

from shareblock.targets import names
from shareblock.targets.base import (ActualExport, ActualHost, Connection, Credentials,
                                     Desired, NotFound, Portal, Target, TargetError)

AGENT = "shareblock-target-agent"


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


def encode(value):
    if dataclasses.is_dataclass(value):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def decode_connection(data: dict) -> Connection:
    return Connection(**{**data, "portals": [Portal(**p) for p in data["portals"]]})


def decode_actual(data: dict) -> dict[str, ActualExport]:
    return {vol: ActualExport(volume_id=e["volume_id"], device=e["device"],
                              hosts={h: ActualHost(**a) for h, a in e["hosts"].items()},
                              problems=e["problems"])
            for vol, e in data.items()}


class RemoteTarget(Target):
    def __init__(self, url: str, protocol: str, portals: list[Portal], prefix: str,
                 known_hosts: str | None = None, key_filename: str | None = None,
                 agent_command: str = AGENT, timeout: float = 15.0):
        super().__init__(portals, prefix)
        self.protocol = protocol
        self.user, self.host, self.port = parse_node(url)
        self.url = url
        self.known_hosts = known_hosts
        self.key_filename = key_filename
        self.agent_command = agent_command
        self.timeout = timeout
        self._client = None

    def check_host(self, host: str) -> str:
        return names.iqn(host) if self.protocol == "iscsi" else names.nqn(host)

    def _connect(self):
        import paramiko
        if self._client is not None:
            return self._client
        client = paramiko.SSHClient()
        client.load_system_host_keys()
        if self.known_hosts:
            client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, self.port, username=self.user,
                           key_filename=self.key_filename, allow_agent=True,
                           look_for_keys=self.key_filename is None, timeout=self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout)
        except paramiko.BadHostKeyException as e:
            raise TargetError(f"storage node {self.host}: host key changed ({e})") from e
        except paramiko.AuthenticationException as e:
            raise TargetError(f"storage node {self.host}: SSH authentication failed") from e
        except paramiko.SSHException as e:
            if "known_hosts" in str(e) or "not found" in str(e):
                raise TargetError(f"storage node {self.host}: unknown host key, refused "
                                  f"(add it to known_hosts first)") from e
            raise Unreachable(f"storage node {self.host}:{self.port}: {e}") from e
        except (OSError, socket.timeout) as e:
            raise Unreachable(f"storage node {self.host}:{self.port} is unreachable: "
                              f"{getattr(e, 'strerror', None) or e}") from e
        self._client = client
        return client

    def close(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def call(self, op: str, **args):
        request = {"protocol": self.protocol, "prefix": self.prefix,
                   "portals": encode(self.portals), "op": op, "args": encode(args)}
        client = self._connect()
        try:
            stdin, stdout, stderr = client.exec_command(self.agent_command,
                                                        timeout=self.timeout * 8)
            stdin.write(json.dumps(request))
            stdin.channel.shutdown_write()
            raw = stdout.read()
            status = stdout.channel.recv_exit_status()
        except (OSError, socket.timeout, EOFError) as e:
            self.close()
            raise Unreachable(f"storage node {self.host}: connection lost during {op}: "
                              f"{e}") from e
        try:
            reply = json.loads(raw)
        except ValueError:
            detail = stderr.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise TargetError(f"storage node {self.host}: agent failed (exit {status}) "
                              f"{detail[0]}") from None
        if not reply.get("ok"):
            kind = {"InvalidName": names.InvalidName, "NotFound": NotFound}.get(
                reply.get("error"), TargetError)
            raise kind(reply.get("message", "remote error"))
        return reply.get("result")

    def export(self, volume_id, device):
        self.call("export", volume_id=volume_id, device=device)

    def unexport(self, volume_id):
        self.call("unexport", volume_id=volume_id)

    def admit(self, volume_id, host, mode, credentials: Credentials):
        return decode_connection(self.call("admit", volume_id=volume_id, host=host, mode=mode,
                                           credentials=credentials.to_dict()))

    def set_mode(self, volume_id, host, mode):
        self.call("set_mode", volume_id=volume_id, host=host, mode=mode)

    def revoke(self, volume_id, host):
        self.call("revoke", volume_id=volume_id, host=host)

    def connection(self, volume_id, host):
        return decode_connection(self.call("connection", volume_id=volume_id, host=host))

    def actual(self, volume_id=None):
        return decode_actual(self.call("actual", volume_id=volume_id))

    def restore(self, desired: list[Desired]):
        self.call("restore", desired=[d.to_dict(secrets=True) for d in desired])
