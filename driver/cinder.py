"""The Cinder adapter: `volume_driver = shareblock.driver.cinder.ShareBlockDriver`.

Only this module imports Cinder. It appends shareblock's options to the backend
section, hands Cinder's objects to the Cinder-free driver (which reads them by
attribute), and turns shareblock's errors into Cinder's exceptions.
"""
import functools

from cinder import exception, interface
from cinder.volume import driver as cinder_driver
from os_brick import utils as brick_utils

from shareblock.driver import options, volume_driver
from shareblock.initiator import nvme_config
from shareblock.targets import names


def _translated(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except exception.CinderException:
            raise
        except names.InvalidName as e:
            raise exception.InvalidInput(reason=str(e)) from e
        except volume_driver.VolumeInUse as e:
            raise exception.VolumeIsBusy(message=str(e)) from e
        except Exception as e:  # target, pool, SSH: the backend failed
            raise exception.VolumeBackendAPIException(data=str(e)) from e
    return wrapper


@interface.volumedriver
class ShareBlockDriver(cinder_driver.VolumeDriver):
    """Multi-attach over LIO iSCSI or nvmet NVMe/TCP, per-host ACLs and credentials."""

    VERSION = volume_driver.VERSION
    # Cinder calls a driver without an OpenStack third-party CI unsupported: shareblock
    # is tested by its own CI (`.ci/run`: real Cinder on real LIO and nvmet), reports to
    # no OpenStack CI, and has no ThirdPartySystems wiki page. A backend section
    # therefore sets `enable_unsupported_driver = True`.
    SUPPORTED = False
    CI_WIKI_NAME = None
    SUPPORTS_ACTIVE_ACTIVE = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.configuration:
            self.configuration.append_config_values(options.SHAREBLOCK_OPTS)
        self.core = volume_driver.ShareBlockDriver(self.configuration)

    @staticmethod
    def get_driver_options():
        return options.SHAREBLOCK_OPTS

    @_translated
    def do_setup(self, context):
        self.core.do_setup(context)

    @_translated
    def check_for_setup_error(self):
        self.core.check_for_setup_error()

    @_translated
    def create_volume(self, volume):
        return self.core.create_volume(volume)

    @_translated
    def delete_volume(self, volume):
        self.core.delete_volume(volume)

    @_translated
    def extend_volume(self, volume, new_size):
        self.core.extend_volume(volume, new_size)

    @_translated
    def create_cloned_volume(self, volume, src_vref):
        return self.core.create_cloned_volume(volume, src_vref)

    @_translated
    def create_export(self, context, volume, connector):
        return self.core.create_export(context, volume, connector)

    @_translated
    def ensure_export(self, context, volume):
        return self.core.ensure_export(context, volume)

    @_translated
    def remove_export(self, context, volume):
        self.core.remove_export(context, volume)

    @_translated
    def initialize_connection(self, volume, connector):
        return self.core.initialize_connection(volume, connector)

    @_translated
    def terminate_connection(self, volume, connector, **kwargs):
        return self.core.terminate_connection(volume, connector, **kwargs)

    def _connect_device(self, conn):
        """Cinder's own attach (image copies, backups) connects with os-brick, which
        passes no DH-HMAC-CHAP keys to nvme-cli: this node's keys for the subsystem
        go where nvme-cli reads them (0600), as shareblock's host side does."""
        if conn.get("driver_volume_type") == "nvmeof":
            nvme_config.nvme_keys(brick_utils.get_host_nqn(), conn["data"])
        return super()._connect_device(conn)

    def _detach_volume(self, context, attach_info, volume, properties, *args, **kwargs):
        try:
            return super()._detach_volume(context, attach_info, volume, properties,
                                          *args, **kwargs)
        finally:
            conn = (attach_info or {}).get("conn") or {}
            if conn.get("driver_volume_type") == "nvmeof":
                nvme_config.forget_nvme_keys(brick_utils.get_host_nqn(),
                                             conn["data"]["target_nqn"])

    @_translated
    def get_volume_stats(self, refresh=False):
        self._stats = self.core.get_volume_stats(refresh)
        return self._stats

    @_translated
    def retype(self, context, volume, new_type, diff, host):
        return self.core.retype(context, volume, new_type, diff, host)

    @_translated
    def create_snapshot(self, snapshot):
        return self.core.create_snapshot(snapshot)

    @_translated
    def delete_snapshot(self, snapshot):
        self.core.delete_snapshot(snapshot)

    @_translated
    def create_volume_from_snapshot(self, volume, snapshot):
        return self.core.create_volume_from_snapshot(volume, snapshot)

    @_translated
    def revert_to_snapshot(self, context, volume, snapshot):
        self.core.revert_to_snapshot(context, volume, snapshot)
