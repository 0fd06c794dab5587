"""What a user can fix: every command reports these in one line, exit status 2."""


class UserError(Exception):
    """Input or configuration that cannot work, said in one line."""


class ConfigError(UserError, ValueError):
    """A key or value of the configuration that cannot work."""


class DataError(UserError, ValueError):
    """Input data that is missing, malformed or does not match its checksum."""


class ResumeError(UserError, ValueError):
    """A run that cannot be resumed as asked."""


class NotWritableError(UserError, OSError):
    """An output folder that cannot be written."""


class ClusterError(UserError, ValueError):
    """TF_CONFIG that cannot work."""
