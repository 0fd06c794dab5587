"""Trained runs for the tests of what comes after training, and the files a
command must leave as they were.

API
    train_digits(root, *extra) -> [key=value, ...]   a one-epoch digits run trained
        in this process as main.py trains, quietly; the arguments that name it
    file_tree(root) -> {path: (digest, mtime) | 'folder'}   every file and folder
        under `root`, hidden ones (temporaries) included
"""
import contextlib
import hashlib
import io
import os

import main
from trainer.config import settings


def train_digits(root, *extra):
    args = [f'datasets_root={root}', 'max_epochs=1', 'log_every=100000', *extra]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.train(settings.load_config(args)) == 0
    return args


def file_tree(root):
    found = {}
    for here, folders, names in os.walk(root):
        for name in folders:
            found[os.path.relpath(os.path.join(here, name), root)] = 'folder'
        for name in names:
            path = os.path.join(here, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, root)] = (hashlib.sha1(f.read()).hexdigest(),
                                                      os.stat(path).st_mtime_ns)
    return found
