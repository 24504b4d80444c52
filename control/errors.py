"""What the control plane refuses, by what went wrong."""


class ControlError(RuntimeError):
    pass


class NotFound(ControlError):
    pass


class InvalidInput(ControlError, ValueError):
    pass


class Conflict(ControlError):
    """The request does not fit the volume's or attachment's state."""


class InUse(Conflict):
    """A volume that is not multiattach already has its one attachment."""


class Fenced(Conflict):
    """The host's node is fenced at the target."""
