"""The same target operations on a remote storage node, over SSH (paramiko).

The node runs `shareblock-target-agent`, one per connection, which reads JSON
requests on stdin and answers each with a JSON line on stdout. Requests never
travel on a command line (no shell ever sees a name or a secret), host keys must
already be known (RejectPolicy), and authentication is by key or agent.
"""
import dataclasses
import json
import socket
import threading

from shareblock.blockdev import fsprobe
from shareblock.targets import names, ssh
from shareblock.targets.base import (ActualExport, ActualHost, Connection, Credentials,
                                     Desired, ModeUnsupported, NotFound, Portal,
                                     ReservationsUnsupported, Target, TargetError)
from shareblock.targets.ssh import Unreachable, parse_node  # noqa: F401  (re-exported)

AGENT = "shareblock-target-agent"


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
                 agent_command: str = AGENT, timeout: float = 15.0,
                 port_ids: list[int] | None = None):
        super().__init__(portals, prefix)
        self.port_ids = port_ids
        self.protocol = protocol
        self.user, self.host, self.port = parse_node(url)
        self.url = url
        self.known_hosts = known_hosts
        self.key_filename = key_filename
        self.agent_command = agent_command
        self.timeout = timeout
        self._client = None
        self._agent = None  # (stdin, stdout, stderr) of this connection's agent
        # One request at a time on the agent's pipe (Cinder calls a driver from
        # several green threads): a reply must meet its own request.
        self._lock = threading.Lock()
        self._shares: bool | None = None

    def check_host(self, host: str) -> str:
        return names.iqn(host) if self.protocol == "iscsi" else names.nqn(host)

    def _session(self):
        if self._agent is None:
            if self._client is None:
                self._client = ssh.connect(self.url, self.known_hosts, self.key_filename,
                                           self.timeout)
            self._agent = self._client.exec_command(self.agent_command,
                                                    timeout=self.timeout * 8)
        return self._agent

    def close(self):
        if self._agent is not None:
            self._agent[0].close()  # the agent sees its stdin end and exits
            self._agent = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _exchange(self, op: str, line: str) -> dict:
        try:
            stdin, stdout, stderr = self._session()
            stdin.write(line)
            stdin.flush()
            raw = stdout.readline()
        except (OSError, socket.timeout, EOFError) as e:
            self.close()
            raise Unreachable(f"storage node {self.host}: connection lost during {op}: "
                              f"{e}") from e
        if not raw:  # the agent ended without answering
            status = stdout.channel.recv_exit_status()
            detail = stderr.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
            self.close()
            raise TargetError(f"storage node {self.host}: agent failed (exit {status}) "
                              f"{detail[0]}")
        try:
            return json.loads(raw)
        except ValueError:
            self.close()  # out of step with the agent: start a new one next time
            raise TargetError(f"storage node {self.host}: agent answered "
                              f"{raw[:80]!r}") from None

    def call(self, op: str, **args):
        request = {"protocol": self.protocol, "prefix": self.prefix,
                   "portals": encode(self.portals), "op": op, "args": encode(args)}
        if self.port_ids:
            request["port_ids"] = list(self.port_ids)
        with self._lock:
            reply = self._exchange(op, json.dumps(request) + "\n")
        if not reply.get("ok"):
            kind = {"InvalidName": names.InvalidName, "NotFound": NotFound,
                    "ReservationsUnsupported": ReservationsUnsupported,
                    "ModeUnsupported": ModeUnsupported}.get(
                reply.get("error"), TargetError)
            raise kind(reply.get("message", "remote error"))
        return reply.get("result")

    def export(self, volume_id, device, backing=None, hosts=None, shared_reservations=False):
        self.call("export", volume_id=volume_id, device=device, backing=backing,
                  hosts=sorted(hosts) if hosts is not None else None,
                  shared_reservations=shared_reservations)

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

    def actual(self, volume_id=None, hosts_only=False):
        return decode_actual(self.call("actual", volume_id=volume_id, hosts_only=hosts_only))

    def probe(self, device):
        data = self.call("probe", device=device)
        return fsprobe.Probe([fsprobe.Finding(**f) for f in data["findings"]], data["table"])

    def reservations(self, volume_id):
        return self.call("reservations", volume_id=volume_id)

    def last_restore(self):
        return self.call("last_restore")

    def shares_reservations(self):
        if self._shares is None:  # a kernel fact: asked once per connection's target
            self._shares = bool(self.call("shares_reservations"))
        return self._shares

    def restore(self, desired: list[Desired]):
        self.call("restore", desired=[d.to_dict(secrets=True) for d in desired])

    def apply(self, desired: list[Desired]):
        self.call("apply", desired=[d.to_dict(secrets=True) for d in desired])

    def desired(self, volume_id=None):
        return {v: Desired.from_dict(d)
                for v, d in self.call("desired", volume_id=volume_id).items()}
