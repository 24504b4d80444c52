"""A volume's persistent reservation, as the target's kernel holds it.

Hosts make and end reservations themselves (SCSI-3 PR through LIO); shareblock
keeps none of it: this reads the kernel's view through the driver, never a copy.
"""
from shareblock.control.errors import InvalidInput
from shareblock.targets.base import NotFound as NotExported
from shareblock.targets.base import ReservationsUnsupported


class Reservations:
    def reservations(self, ref: str) -> dict:
        """Holder, type and registered initiators of the volume's reservation; a
        volume no host reaches (not exported) holds none."""
        self.authorize("volume:get")
        row = self._volume_row(ref)
        view = {"volume_id": row["id"], "exported": True, "holder": None, "type": None,
                "type_name": None, "registrations": [], "aptpl": False, "generation": None}
        if not row["backend"]:
            return {**view, "exported": False}
        try:
            return {**view, **self.driver(row["backend"]).reservations(row["id"])}
        except NotExported:
            return {**view, "exported": False}
        except ReservationsUnsupported as e:
            raise InvalidInput(str(e)) from e
