"""The driver contract: what shareblock's backend driver does, for its two callers.

Cinder's volume manager calls the Cinder-named methods through the adapter
(driver/cinder.py); the embedded control plane calls the same methods and the
shareblock-only ones below, and nothing else: never the driver's target or
pool. Volumes and attachments are Cinder's versioned objects or plain dicts
with Cinder's field names (`id`, `size`, `multiattach`, `volume_type`,
`volume_attachment`: `id`, `attach_mode`, `attach_status`, `connector`).
As Cinder's own `interface/volume_driver.py`, this writes the contract down;
`ShareBlockDriver` implements it.
"""
import abc


class VolumeDriverCore(abc.ABC):
    # --- Cinder's contract ------------------------------------------------------
    @abc.abstractmethod
    def do_setup(self, context=None) -> None:
        """Open the target (local or over SSH), the pool and the backend's key."""

    @abc.abstractmethod
    def check_for_setup_error(self) -> None:
        """The pool answers and the target can be read back."""

    @abc.abstractmethod
    def create_volume(self, volume):
        """Make the volume's storage in the pool. Idempotent."""

    @abc.abstractmethod
    def delete_volume(self, volume):
        """Unexport the volume and remove its storage. Idempotent."""

    @abc.abstractmethod
    def extend_volume(self, volume, new_size):
        """Grow the volume to new_size GiB."""

    @abc.abstractmethod
    def create_cloned_volume(self, volume, src_vref):
        """A new volume with the source's data."""

    @abc.abstractmethod
    def create_snapshot(self, snapshot):
        """The volume's data at one instant (`id`, `volume_id`), taken in use."""

    @abc.abstractmethod
    def delete_snapshot(self, snapshot):
        """Remove the snapshot. Idempotent."""

    @abc.abstractmethod
    def create_volume_from_snapshot(self, volume, snapshot):
        """A new volume with the snapshot's data, `volume.size` GiB (at least the
        snapshot's)."""

    @abc.abstractmethod
    def revert_to_snapshot(self, context, volume, snapshot):
        """The volume's data becomes the snapshot's; the volume has no attachment."""

    @abc.abstractmethod
    def create_export(self, context, volume, connector=None):
        """Export the volume (no host admitted yet); the model update Cinder stores."""

    @abc.abstractmethod
    def ensure_export(self, context, volume):
        """At the volume service's start: the volume's export and hosts as they were
        (from the storage node's desired state, else from the live attachments)."""

    @abc.abstractmethod
    def remove_export(self, context, volume):
        """End every host's access and remove the export."""

    @abc.abstractmethod
    def initialize_connection(self, volume, connector) -> dict:
        """Admit the connector's host with its own credentials, in the mode the
        host-access rule and the guard give it; os-brick's connection info."""

    @abc.abstractmethod
    def terminate_connection(self, volume, connector, **kwargs):
        """This attachment ends: revoke the host, or lower it to `ro`, as its other
        live attachments say. True while other attachments share the export."""

    @abc.abstractmethod
    def get_volume_stats(self, refresh=False) -> dict:
        """Capabilities (`multiattach`, `shared_reservations`, `storage_protocol`) and
        the pool's capacity."""

    @abc.abstractmethod
    def retype(self, context, volume, new_type, diff, host):
        """(True, model update) when the backend honours the new type in place,
        (False, None) when it cannot: Cinder then migrates or refuses."""

    # --- shareblock's own, for the embedded control plane -------------------------
    @abc.abstractmethod
    def host_id(self, connector: dict) -> str:
        """The connector's host identity on this transport (IQN or host NQN),
        validated; InvalidName when it has none."""

    @abc.abstractmethod
    def guard_mode(self, volume) -> str:
        """enforce, warn or off: the volume type's spec, else the backend's default."""

    @abc.abstractmethod
    def probe(self, volume_id: str):
        """What is written on the volume (fsprobe.Probe), read on the storage node."""

    @abc.abstractmethod
    def set_host_mode(self, volume_id: str, host: str, mode: str) -> None:
        """Change one admitted host's mode live (the guard's demotion)."""

    @abc.abstractmethod
    def exports(self, volume_id: str | None = None, hosts_only: bool = False) -> dict:
        """What the target holds (ActualExport per volume), read from configfs;
        `hosts_only`: the hosts' modes, sessions and counters alone (no device, no
        checks), the exporter's read at every scrape."""

    @abc.abstractmethod
    def reservations(self, volume_id: str) -> dict:
        """The persistent reservation the target's kernel holds on the volume
        (holder, type, registrations, APTPL), read from configfs. Raises the
        target's NotFound when the volume is not exported, ReservationsUnsupported
        when the transport keeps none to show."""

    @abc.abstractmethod
    def last_restore(self) -> dict | None:
        """The storage node's last boot-time restore (`at` epoch seconds, `exports`,
        `hosts`, `failed`), None when none ran."""

    @abc.abstractmethod
    def reshapes_export(self, volume, new_type) -> bool:
        """Whether retyping this attached volume to new_type would change how its
        hosts connect (nvmet's shared-reservations shape): allowed only detached."""

    @abc.abstractmethod
    def recorded_exports(self, volume_id: str | None = None) -> dict:
        """The storage node's desired state (Desired per volume; one volume's when
        named)."""

    @abc.abstractmethod
    def sync_exports(self, volumes, held: dict | None = None,
                     recorded: dict | None = None) -> dict:
        """Bring many volumes' exports to their live attachments in one batch."""
