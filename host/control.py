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
        self.base = shlex.split(command) + ([f"--config={config_file}"] if config_file else [])

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

    # Options as --name=value, names after `--`: no value is ever read as an option
    # by the node's argparse (a volume called `--config=/x` stays a volume name).
    def attachment_create(self, volume, connector, mode):
        return self._run("attachment-create", f"--connector={json.dumps(connector)}",
                         f"--mode={mode}", "--", volume)

    def attachment_complete(self, att_id):
        return self._run("attachment-complete", "--", att_id)

    def attachment_delete(self, att_id):
        self._run("attachment-delete", "--", att_id)

    def show(self, volume):
        return self._run("show", "--", volume)


class CinderControl:
    """Cinder's attachment API through python-cinderclient, as Nova uses it:
    create with this host's connector, complete, delete. Authenticates like the
    `cinder` client: OS_AUTH_TYPE (default `password`) and that plugin's OS_*
    options from the environment (OS_AUTH_URL, OS_USERNAME, ...)."""

    API_VERSION = "3.54"  # attachments with a mode (rw/ro)

    def __init__(self, environ=None):
        environ = os.environ if environ is None else environ
        try:
            from cinderclient import client
            from keystoneauth1 import loading, session
        except ImportError as e:
            raise ControlFailed("--control cinder needs python-cinderclient "
                                "(pip install 'shareblock[cinder-host]')") from e
        loader = loading.get_plugin_loader(environ.get("OS_AUTH_TYPE", "password"))
        options = {}
        for opt in loader.get_options():
            value = next((environ[e] for e in opt.argparse_envvars if environ.get(e)), None)
            if value is not None:
                options[opt.dest] = value
        try:
            auth = loader.load_from_options(**options)
        except Exception as e:  # keystoneauth names the missing option
            raise ControlFailed(f"Cinder credentials: {e}") from e
        verify = environ.get("OS_CACERT") or environ.get("OS_INSECURE", "").lower() != "true"
        self.cinder = client.Client(self.API_VERSION, session=session.Session(auth=auth,
                                                                              verify=verify),
                                    region_name=environ.get("OS_REGION_NAME"),
                                    endpoint_type=environ.get("OS_INTERFACE", "public"))

    def _call(self, fn, *args, **kwargs):
        from cinderclient import exceptions
        try:
            return fn(*args, **kwargs)
        except (exceptions.ClientException, exceptions.CommandError) as e:  # Cinder's words
            raise ControlFailed(f"Cinder: {e}") from e

    def show(self, volume):
        from cinderclient import utils
        return self._call(utils.find_resource, self.cinder.volumes, volume).to_dict()

    def attachment_create(self, volume, connector, mode):
        att = self._call(self.cinder.attachments.create, volume, connector, mode=mode)
        info = att.get("connection_info")
        if isinstance(info, dict) and "data" not in info:
            # Cinder's attachment API flattens data into the top level
            info = {"driver_volume_type": info.get("driver_volume_type"),
                    "data": {k: v for k, v in info.items() if k != "driver_volume_type"}}
        return {**att, "connection_info": info}  # no info: the caller rolls back

    def attachment_complete(self, att_id):
        self._call(self.cinder.attachments.complete, att_id)

    def attachment_delete(self, att_id):
        self._call(self.cinder.attachments.delete, att_id)
