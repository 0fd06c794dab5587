"""Ctrl-C (SIGINT) and SIGTERM ask a run to stop at the next step boundary,
so that main.py can save a checkpoint of the current state and exit cleanly;
the commands after training (stop_at_once) stop where they are, their files
written all or none. A second signal stops at once, as the signal normally
would, even while the main thread waits inside TensorFlow: Python runs a
signal's handler only once TensorFlow's call returns, which a call waiting
on a peer that never answers never does, so a watcher thread hears the
signals too (signal.set_wakeup_fd) and ends the process itself."""
import contextlib
import os
import signal
import socket
import threading
import time

from foundation.errors import StoppedAtOnce  # raised here at once, answered by command.run

SIGNALS = (signal.SIGINT, signal.SIGTERM)
HEARD_WITHIN_SECONDS = 2.0  # a signal the main thread's handler has not run for by then: it is inside a C call
WATCH_POLL_SECONDS = 0.05


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
        self.heard = 0  # signals whose handler ran (in the main thread)

    def _handle(self, signum, frame):
        self.heard += 1
        if self.signum is not None:  # asked twice: stop now
            die_by(signum)
        self.signum = signum

    def check(self, images=None):
        if self.signum is not None:
            raise Interrupted(self.signum, images)


class AtOnce(StopRequests):
    """The first SIGINT/SIGTERM raises StoppedAtOnce where the main thread is."""

    def _handle(self, signum, frame):
        super()._handle(signum, frame)
        raise StoppedAtOnce(signum)


def die_by(signum):
    """Ends the process by `signum`'s default action (main thread only)."""
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


@contextlib.contextmanager
def stop_requests(requests=None):
    """Installs the handlers of `requests` (default: a StopRequests) for the
    block (main thread only), and the watcher of the signals that the main
    thread cannot hear (watch); yields the requests."""
    requests = StopRequests() if requests is None else requests
    previous = {s: signal.signal(s, requests._handle) for s in SIGNALS}
    try:
        with watch(requests):
            yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stop_at_once(task):
    """task() with SIGINT and SIGTERM raising StoppedAtOnce in it (command.run
    tells it in one line), which lets its cleanups (safe_io.all_or_none)
    leave nothing half-written, rather than end it with a traceback or none."""
    with stop_requests(AtOnce()):
        return task()


@contextlib.contextmanager
def watch(requests):
    """For the block, a thread hears every signal as it arrives (the wakeup
    fd); one that `requests`' handler has not run for within
    HEARD_WITHIN_SECONDS finds the main thread inside a call that does not
    return. The first such is told (a second stops at once); at a second,
    the thread ends the process with one line, exit status 128 + signal."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    thread = threading.Thread(target=watch_signals, args=(reader, requests), daemon=True,
                              name='signal-watch')
    thread.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        writer.close()  # the thread reads the end of its stream and returns
        thread.join(timeout=1)
        reader.close()


def watch_signals(reader, requests):
    received = 0
    told = False
    while True:
        try:
            data = reader.recv(64)
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum not in SIGNALS:
                continue
            received += 1
            if heard_within(requests, received, HEARD_WITHIN_SECONDS):
                continue
            name = signal.Signals(signum).name
            if received >= 2:
                say(f'Stopped at once by a second {name}, inside a TensorFlow call that had not returned')
                os._exit(128 + signum)
            if not told:
                say(f'{name} heard; TensorFlow has not returned yet: it stops when it does, or at once at a '
                    f'second Ctrl-C or SIGTERM')
                told = True


def say(line):
    """`line` on stderr by os.write (the main thread may hold sys.stderr's
    lock); a closed stderr must not keep the watcher from stopping the process."""
    with contextlib.suppress(OSError):
        os.write(2, (line + '\n').encode())


def heard_within(requests, count, seconds):
    """Whether `requests`' handler has run for `count` signals within `seconds`."""
    deadline = time.monotonic() + seconds
    while requests.heard < count:
        if time.monotonic() >= deadline:
            return False
        time.sleep(WATCH_POLL_SECONDS)
    return True
