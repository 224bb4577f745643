"""One exception hierarchy, so callers (the CLI) can tell a user's mistake from a bug."""


class RaydistillError(Exception):
    """Base of every error raydistill raises on purpose."""


class ConfigError(RaydistillError):
    """The experiment config is invalid; the message names the key path."""


class DataError(RaydistillError):
    """A data source is missing or malformed; the message names the file and the problem."""


class CheckpointError(RaydistillError):
    """A model or run directory is missing or cannot be loaded."""


class PoolExhaustedError(RaydistillError):
    """Active learning asked for more examples than the unlabelled pool holds."""


class ResourceError(RaydistillError):
    """A stage asks for more CPUs/GPUs than the cluster has (the preflight check)."""


class ClusterError(RaydistillError):
    """Ray could not be started or attached to (address, authentication)."""


class TeacherError(RaydistillError):
    """The teacher does not beat the majority class: nothing distilled from it can be trusted."""


class SweepInterrupted(RaydistillError):
    """Tune returned before every trial finished (Ctrl-C, or the driver was told to stop)."""
