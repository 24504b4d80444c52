"""shareblock.conf: cinder.conf's shape, read with oslo.config.

[DEFAULT] enabled_backends, state_path, policy_file; [roles] maps local (or SSH)
user names to roles; one section per backend with the driver's options, the
same section that works pasted into cinder.conf.
"""
import os
import pwd

from oslo_config import cfg

from shareblock.driver import options

DEFAULT_FILE = "/etc/shareblock/shareblock.conf"

DEFAULT_OPTS = [
    cfg.ListOpt("enabled_backends", default=[], help="backend sections to load"),
    cfg.StrOpt("state_path", default="/var/lib/shareblock", help="state folder (0700)"),
    cfg.StrOpt("policy_file", default=None, help="oslo.policy rules overriding the defaults"),
    cfg.IntOpt("guard_interval", default=30, help="seconds between guard passes (loop)"),
]
ROLE_OPTS = [
    cfg.DictOpt("users", default={"root": "admin"},
                help="user:role[+role] pairs; root is admin unless configured otherwise"),
]


class BackendConf:
    """Cinder's Configuration interface (safe_get) over one backend section.
    The file is read once per process, so each value is looked up once: oslo.config's
    lookup runs on every call, and the driver asks on every operation."""

    def __init__(self, conf: cfg.ConfigOpts, group: str):
        self.conf, self.group = conf, group
        self._values: dict = {}

    def safe_get(self, name):
        if name not in self._values:
            try:
                self._values[name] = getattr(self.conf[self.group], name)
            except (cfg.NoSuchOptError, AttributeError, KeyError):
                self._values[name] = None
        return self._values[name]


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get("SHAREBLOCK_CONFIG") or DEFAULT_FILE


def load(path: str | None = None) -> cfg.ConfigOpts:
    path = config_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no configuration at {path} (--config FILE or "
                                f"SHAREBLOCK_CONFIG)")
    conf = cfg.ConfigOpts()
    conf.register_opts(DEFAULT_OPTS)
    conf.register_opts(ROLE_OPTS, group="roles")
    conf(args=[], default_config_files=[path], project="shareblock", validate_default_values=True)
    for backend in conf.enabled_backends:
        conf.register_opts(options.CINDER_NAMED_OPTS, group=backend)
        conf.register_opts(options.SHAREBLOCK_OPTS, group=backend)
        # a backend's state, and a local node's desired state, live under the
        # control plane's unless set
        conf.set_default("shareblock_state_path", conf.state_path, group=backend)
        conf.set_default("shareblock_node_state_path", os.path.join(conf.state_path, "node"),
                         group=backend)
    return conf


def current_user() -> str:
    """The caller: the local user, which over SSH is the SSH login user."""
    return pwd.getpwuid(os.geteuid()).pw_name


def roles_of(conf: cfg.ConfigOpts, user: str) -> list[str]:
    value = conf.roles.users.get(user, "")
    return [r for r in value.split("+") if r]
