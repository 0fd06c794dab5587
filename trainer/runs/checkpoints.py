"""A run's checkpoints, found by listing its folder: the folder is the one
source of truth, wherever it lies (moved, copied, mounted elsewhere), however
the process that wrote it ended.

Every checkpoint `model.ckpt-<epochs>` (or `model.ckpt-<epochs>-<images>img`,
written when a run is stopped mid-epoch) carries the run's record as it stood
(`.history.json`: epochs, best epoch, config), written just before the
checkpoint's own files: a checkpoint is complete once its index is there, and
its record then says exactly which epochs it holds. history.json and .csv
are views of that record, rewritten from it when a run resumes. TensorFlow's
`checkpoint` state file is written too, with paths relative to the folder,
for TensorFlow's own tools.
"""
import dataclasses
import glob
import json
import os
import re
import shutil

from foundation import safe_io
from foundation.errors import DataError
from trainer.runs import record_schema

NAME = 'model.ckpt'
RECORD = '.history.json'  # beside a checkpoint's .index: the run's record it holds
PATTERN = re.compile(rf'^{re.escape(NAME)}-(\d+)(?:-(\d+)img)?\.index$')


@dataclasses.dataclass(frozen=True, order=True)
class Checkpoint:
    """A complete checkpoint: epochs done and images into the next epoch
    (its place in the run), and its path prefix."""
    epochs: int
    images: int
    prefix: str

    @property
    def name(self):
        return os.path.basename(self.prefix)

    def record(self):
        """The run's record saved with it, checked (record_schema); None for a
        checkpoint of a version that wrote none, or whose record is
        unreadable or unsound: the run's other records then stand for it."""
        try:
            return record_schema.read(self.prefix + RECORD)
        except DataError:
            return None


def prefix_for(directory, epochs, images=0):
    suffix = f'-{images}img' if images else ''
    return os.path.join(directory, f'{NAME}-{epochs}{suffix}')


def found(directory):
    """The complete checkpoints in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    checkpoints = []
    for entry in os.listdir(directory):
        match = PATTERN.match(entry)
        if match:
            prefix = os.path.join(directory, entry[:-len('.index')])
            if glob.glob(glob.escape(prefix) + '.data-*'):
                checkpoints.append(Checkpoint(int(match[1]), int(match[2] or 0), prefix))
    return sorted(checkpoints)


def files_of(prefix):
    """Every file of the checkpoint `prefix` (index, data, meta graph, record)."""
    escaped = glob.escape(prefix)
    return glob.glob(escaped + '.index') + glob.glob(escaped + '.data-*') + \
        glob.glob(escaped + '.meta') + glob.glob(escaped + RECORD)


def save(session, saver, directory, epochs, images, record):
    """Writes the record, then the checkpoint of (epochs, images); returns it."""
    prefix = prefix_for(directory, epochs, images)
    safe_io.write_text(prefix + RECORD, json.dumps(record, indent=1))
    saver.save(session, prefix, write_state=False)
    return Checkpoint(epochs, images, prefix)


def write_state(directory, checkpoints):
    """TensorFlow's `checkpoint` file for `checkpoints` (newest last), with
    paths relative to the folder, as get_checkpoint_state reads them."""
    lines = [f'model_checkpoint_path: "{checkpoints[-1].name}"'] if checkpoints else []
    lines += [f'all_model_checkpoint_paths: "{c.name}"' for c in checkpoints]
    safe_io.write_text(os.path.join(directory, 'checkpoint'), '\n'.join(lines) + '\n')


def retain(directory, kept):
    """Removes every checkpoint of `directory` but those `kept`, and what a
    killed process left half-written (temporary folders, records without a
    checkpoint); rewrites the state file; returns `kept`."""
    keep = {c.prefix for c in kept}
    for checkpoint in found(directory):
        if checkpoint.prefix not in keep:
            for path in files_of(checkpoint.prefix):
                os.remove(path)
    remove_leftovers(directory, kept)
    write_state(directory, kept)
    return kept


def remove_leftovers(directory, kept):
    """Removes the files of checkpoints that were never completed."""
    complete = {c.prefix for c in kept}
    for path in glob.glob(os.path.join(glob.escape(directory), f'{NAME}-*')):
        prefix = re.sub(r'(\.index|\.data-\d+-of-\d+|\.meta|' + re.escape(RECORD) + r'|_temp.*)$', '', path)
        if prefix not in complete:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
