"""What a user can fix: every command reports these in one line, exit status 2;
and a signal that stopped a command at once."""
import signal


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


class OutOfSpace(UserError):
    """A disk filled up while a command wrote to it."""


class ClusterError(UserError, ValueError):
    """TF_CONFIG that cannot work."""


class StoppedAtOnce(BaseException):
    """Raised where the main thread is at SIGINT/SIGTERM under stop_at_once.
    A BaseException, as KeyboardInterrupt is: no `except Exception` holds it."""

    def __init__(self, signum):
        super().__init__(f'stopped by {signal.Signals(signum).name}')
        self.signum = signum
