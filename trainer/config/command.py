"""What every command (main.py, experiments.py, ImageResizer.py, ...) shares:
`--help`, a config from constant.py and `key=value` arguments, and one line
with exit status 2 for whatever a user can fix."""
import os
import signal
import sys

from foundation import safe_io, tf_quiet
from foundation.errors import StoppedAtOnce, UserError
from trainer.config import key_docs, settings

RECORDS_DEFAULTS = ('dataset_name=cifar_128',)  # ImageResizer and TFRecordsWriter: 128 px CIFAR unless told


def program():
    """The command as the user typed it: 'python main.py'."""
    return f'python {os.path.basename(sys.argv[0])}'


def answer_early(module_name, usage, defaults=(), args=None):
    """Called at the top of a command's script, before its heavy imports:
    when it runs as the program (module_name '__main__'), answers `--help`
    and a wrong key or value at once, then imports TensorFlow quietly.
    `args`: the command's key=value arguments, where it takes others too
    (default: all of sys.argv[1:])."""
    if module_name != '__main__':
        return
    argv = sys.argv[1:] if args is None else args
    if {'--help', '-h'} & set(argv):
        print(key_docs.help_text(usage))
        sys.exit(0)
    try:
        settings.checked_config([*defaults, *argv])
    except UserError as error:
        sys.exit(report(error))
    tf_quiet.import_tensorflow_quietly()


def report(error):
    """Says what the user can fix in one line; returns the exit status 2."""
    print(f'error: {error}', file=sys.stderr, flush=True)
    return 2


def run(task, *args):
    """task(*args)'s exit status, or 2 with one line for a UserError or a
    full disk wherever it shows, or 128 + the signal with one line where
    Ctrl-C (KeyboardInterrupt) or interruption.stop_at_once's signal stopped
    it, as main.py answers one."""
    try:
        return task(*args)
    except UserError as error:
        return report(error)
    except OSError as error:  # a full disk the task did not tell in its own words
        full = safe_io.out_of_space(error, os.path.dirname(error.filename or '') or os.getcwd(),
                                    'free space there, then run the same command again')
        if full is None:
            raise
        return report(full)
    except KeyboardInterrupt:  # a command that installs no handler of its own
        return interrupted(signal.SIGINT)
    except StoppedAtOnce as stopped:
        return interrupted(stopped.signum)


def interrupted(signum):
    """Says that a signal stopped the command; returns the exit status 128 + signum."""
    print(f'Interrupted (stopped by {signal.Signals(signum).name}): {program()} stopped before it '
          f'finished', file=sys.stderr, flush=True)
    return 128 + signum
