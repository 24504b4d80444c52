"""Block devices on this node: loop devices, and what is written on a device."""
