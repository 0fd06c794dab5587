"""The per-epoch history of a run: history.json (what experiments.py and
later commands read) and the same rows as history.csv for spreadsheets. Both
are written atomically, as views of the record that the run's newest
checkpoint holds (trainer/runs/checkpoints.py)."""
import csv
import io
import json
import os

from foundation import safe_io
from trainer.runs import record_schema

COLUMNS = ('epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy',
           'learning_rate', 'train_running_loss', 'train_seconds', 'epoch_seconds',
           'train_images', 'train_steps', 'test_loss', 'test_accuracy')


JSON_FILE, CSV_FILE = 'history.json', 'history.csv'


def paths(run_dir):
    return os.path.join(run_dir, JSON_FILE), os.path.join(run_dir, CSV_FILE)


def load(run_dir):
    """The saved record {'epochs': [...], ...}, checked (record_schema); None
    where there is none, DataError naming the file and the field where
    history.json is not a sound record."""
    json_path, _ = paths(run_dir)
    if not os.path.isfile(json_path):
        return None
    return record_schema.read(json_path)


def save(run_dir, record):
    json_path, csv_path = paths(run_dir)
    safe_io.write_text(json_path, json.dumps(record, indent=1))
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=COLUMNS, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(csv_rows(record))
    safe_io.write_text(csv_path, rows.getvalue())


def csv_rows(record):
    """The epochs' rows, with the test figures on the rows of the weights
    tested: the final epoch's, and the best validation epoch's."""
    tested = {}
    if 'test' in record:
        tested[record['test']['epoch']] = (record['test']['loss'], record['test']['accuracy'])
    best = record.get('best', {})
    if 'test_loss' in best:
        tested[best['epoch']] = (best['test_loss'], best['test_accuracy'])
    return [{**row, **dict(zip(('test_loss', 'test_accuracy'), tested.get(row['epoch'], ())))}
            for row in record['epochs']]
