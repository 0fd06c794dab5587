"""What the console says while a run goes: durations, and the progress
lines of a training epoch."""
import datetime
import math
import os
import time

PROGRESS_LINES = 4  # an epoch prints at least this many progress lines, whatever log_every


def process_seconds(stat_file='/proc/self/stat', uptime_file='/proc/uptime'):
    """Wall-clock seconds since the OS started this process (Linux's /proc:
    the start in clock ticks after boot, field 22 of stat, against the
    uptime), so that a run's total counts TensorFlow's import too; None
    where they cannot be read."""
    try:
        with open(stat_file) as f:  # the command name, field 2, may hold spaces: split after it
            start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
        with open(uptime_file) as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')


def clock(seconds):
    """Seconds as h:mm:ss."""
    return str(datetime.timedelta(seconds=round(seconds)))


def shown_path(path):
    """A path as the console shows it: relative to the working directory
    when it lies below it, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith('..') else relative


def log_interval(log_every, images):
    """Images between progress lines: log_every, or less where an epoch of
    `images` would print fewer than PROGRESS_LINES lines."""
    return max(1, min(log_every, math.ceil(images / PROGRESS_LINES)))


class ProgressLog:
    """The progress lines of a training epoch: the original fields (epoch,
    images done of the split, the batch's loss, seconds per batch), then the
    mean loss since the previous line and the time the epoch still needs
    (its time on the last line)."""

    def __init__(self, epoch, total, last, every, skip):
        self.epoch, self.total, self.last, self.every = epoch, total, last, every
        self.started = self.line_time = time.perf_counter()
        self.first = skip  # the images a resumed epoch had done before
        self.next_line = (skip // every + 1) * every
        self.loss_sum = self.images = self.batches = 0

    def step(self, seen, loss, batch):
        """Counts a batch that brought the epoch to `seen` images; prints a
        line every `every` images and after the last batch."""
        self.loss_sum += loss * batch
        self.images += batch
        self.batches += 1
        if seen < self.next_line and seen != self.last:
            return
        now = time.perf_counter()
        if seen >= self.last:
            when = f'epoch trained in {clock(now - self.started)}'
        else:
            rate = (seen - self.first) / max(now - self.started, 1e-9)
            when = f'ETA {clock((self.last - seen) / rate)}'
        print(f'epoch {self.epoch}, step {seen} / {self.total}, loss = {loss:.2f} '
              f'({(now - self.line_time) / self.batches:.3f} sec/batch), '
              f'mean loss {self.loss_sum / self.images:.3f}, {when}', flush=True)
        self.next_line = (seen // self.every + 1) * self.every
        self.line_time, self.loss_sum, self.images, self.batches = now, 0, 0, 0
