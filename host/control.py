"""How the host reaches the control plane: in-process, or `shareblock` over SSH."""
import json
import os
import shlex

from shareblock.targets import ssh


class ControlFailed(RuntimeError):
    pass


class LocalControl:
    """The control plane on this machine (the host is also the storage node)."""

    def __init__(self, config_file: str | None = None):
        from shareblock.control import config
        from shareblock.control.api import ControlPlane
        self.cp = ControlPlane(config.load(config_file))

    def attachment_create(self, volume, connector, mode):
        return self.cp.attachment_create(volume, connector, mode)

    def attachment_complete(self, att_id):
        return self.cp.attachment_complete(att_id)

    def attachment_delete(self, att_id):
        self.cp.attachment_delete(att_id)

    def show(self, volume):
        return self.cp.show(volume)


class SshControl:
    """`shareblock --json ...` on the storage node; the host needs only SSH access."""

    def __init__(self, url: str, known_hosts=None, key=None, config_file=None):
        self.url, self.known_hosts, self.key = url, known_hosts, key
        command = os.environ.get("SHAREBLOCK_REMOTE_COMMAND", "shareblock")
        self.base = shlex.split(command) + (["--config", config_file] if config_file else [])

    def _run(self, *args):
        client = ssh.connect(self.url, self.known_hosts, self.key)
        try:
            line = shlex.join([*self.base, "--json", "--show-secrets", *args])
            _, stdout, stderr = client.exec_command(line)
            out, err = stdout.read(), stderr.read()
            status = stdout.channel.recv_exit_status()
        finally:
            client.close()
        if status != 0:
            raise ControlFailed(err.decode(errors="replace").strip().removeprefix(
                "shareblock: error: ") or f"remote shareblock exit {status}")
        return json.loads(out) if out.strip() else None

    def attachment_create(self, volume, connector, mode):
        return self._run("attachment-create", volume, "--connector", json.dumps(connector),
                         "--mode", mode)

    def attachment_complete(self, att_id):
        return self._run("attachment-complete", att_id)

    def attachment_delete(self, att_id):
        self._run("attachment-delete", att_id)

    def show(self, volume):
        return self._run("show", volume)
