"""Find a connected volume's block device by its identity, with pyudev.

The identity is the volume's, not "whatever disk appeared last": an iSCSI LUN
carries LIO's unit serial (udev ID_SERIAL = 3 6001405 + the serial's hex), an
NVMe namespace the view's uuid (udev ID_WWN = uuid.<uuid>).
"""
import os
import time

import pyudev


class DeviceNotFound(RuntimeError):
    pass


def identity(info: dict) -> str:
    data = info["data"]
    if info["driver_volume_type"] == "nvmeof":
        return "uuid." + data["vol_uuid"]
    return data["shareblock_serial"].replace("-", "")[:25]


def matches(device: pyudev.Device, ident: str) -> bool:
    if ident.startswith("uuid."):
        return device.properties.get("ID_WWN") == ident or \
            device.attributes.get("uuid") == ident[5:].encode()
    return ident in device.properties.get("ID_SERIAL", "")


def wait_for_device(info: dict, hint: str | None = None, timeout: float = 60.0) -> str:
    """The block device of this volume; `hint` (os-brick's answer) wins if it matches."""
    ident = identity(info)
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context)
    monitor.filter_by("block")
    monitor.start()
    deadline = time.monotonic() + timeout
    while True:
        if hint and os.path.exists(hint):
            dev = pyudev.Devices.from_device_file(context, os.path.realpath(hint))
            if matches(dev, ident):
                return dev.device_node
        found = [d.device_node for d in context.list_devices(subsystem="block", DEVTYPE="disk")
                 if matches(d, ident)]
        if len(found) == 1 and not hint:
            return found[0]
        if time.monotonic() > deadline:
            raise DeviceNotFound(f"no block device with identity {ident} appeared within "
                                 f"{timeout:.0f} s")
        monitor.poll(timeout=0.5)
