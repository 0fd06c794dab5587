"""Ctrl-C (SIGINT) and SIGTERM ask a run to stop at the next step boundary,
so that main.py can save a checkpoint of the current state and exit cleanly.
A second signal stops at once, as the signal normally would."""
import contextlib
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A stop was requested by `signum`; `images`: how far into its training
    pass the epoch got (None: the pass was complete)."""

    def __init__(self, signum, images=None):
        super().__init__(f'stopped by {signal.Signals(signum).name}')
        self.signum, self.images = signum, images


class StopRequests:
    """Records the first SIGINT/SIGTERM; `check()` raises Interrupted after it."""

    def __init__(self):
        self.signum = None

    def _handle(self, signum, frame):
        if self.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signum = signum

    def check(self, images=None):
        if self.signum is not None:
            raise Interrupted(self.signum, images)


@contextlib.contextmanager
def stop_requests():
    """Installs the handlers for the block (main thread only); yields StopRequests."""
    requests = StopRequests()
    previous = {s: signal.signal(s, requests._handle) for s in SIGNALS}
    try:
        yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
