"""Programming the kernel: LIO and nvmet exports with per-host access."""
