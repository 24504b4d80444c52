"""The hardware lab: a kernel with configfs, LIO and nvmet, real or emulated.

`shareblock-lab run -- CMD` runs CMD where real targets exist: directly when the
running kernel has LIO and nvmet, otherwise inside Debian's 6.12 kernel booted
by virtme-ng under QEMU emulation with the host's root shared into the guest.
"""
