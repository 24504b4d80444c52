"""The control plane's Python API: what the CLI and the tests call.

Semantics are the seed's (Cinder's multi-attach): the volume's `multiattach`
flag comes from its type (`multiattach="<is> True"`, exactly); scheduling needs
a backend reporting the capability; retype that changes the flag needs an
`available` volume and passes policy; a volume that is not multiattach holds at
most one attachment; for multiattach volumes the in-use check is skipped.

One class, put together from the modules named for what they hold:
volume_types, volumes, snapshots, scheduling, attachments, runtime_guard, reconcile,
reservations, fencing, and records (the SQL). Backends are reached only through the driver's public
methods (driver/interface.py).
"""
from shareblock.control import config as config_mod
from shareblock.control import db as db_mod
from shareblock.control.attachments import Attachments
from shareblock.control.errors import Conflict, ControlError, InvalidInput, NotFound
from shareblock.control.fencing import Fencing
from shareblock.control.locks import VolumeLocks
from shareblock.control.policy import Policy, PolicyNotAuthorized
from shareblock.control.reconcile import Reconcile
from shareblock.control.reservations import Reservations
from shareblock.control.records import Records
from shareblock.control.runtime_guard import RuntimeGuard
from shareblock.control.scheduling import Scheduling, is_multiattach, no_room
from shareblock.control.snapshots import Snapshots
from shareblock.control.volume_types import VolumeTypes
from shareblock.control.volumes import Volumes
from shareblock.driver.volume_driver import ShareBlockDriver

__all__ = ["ControlPlane", "ControlError", "NotFound", "InvalidInput", "Conflict",
           "PolicyNotAuthorized", "is_multiattach", "no_room"]


class ControlPlane(VolumeTypes, Volumes, Snapshots, Attachments, RuntimeGuard, Reconcile,
                   Reservations, Fencing, Scheduling, Records):
    def __init__(self, conf, user: str | None = None, drivers: dict | None = None,
                 database: db_mod.Database | None = None):
        self.conf = conf
        self.user = user or config_mod.current_user()
        self.roles = config_mod.roles_of(conf, self.user)
        self.policy = Policy(conf.policy_file)
        self.db = database or db_mod.Database(f"{conf.state_path}/shareblock.sqlite")
        self.locks = VolumeLocks(f"{conf.state_path}/locks")
        self._drivers = drivers
        self._ready: dict[str, object] = {}

    def authorize(self, rule: str) -> None:
        self.policy.check(rule, self.user, self.roles)

    def drivers(self) -> dict:
        if self._drivers is None:
            self._drivers = {name: ShareBlockDriver(config_mod.BackendConf(self.conf, name))
                             for name in self.conf.enabled_backends}
        return self._drivers

    def driver(self, backend: str):
        drv = self.drivers().get(backend)
        if drv is None:
            raise ControlError(f"backend {backend!r} is not enabled")
        if backend not in self._ready:
            drv.do_setup(None)
            self._ready[backend] = drv
        return drv
