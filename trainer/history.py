"""The per-epoch history of a run: history.json (read back on resume) and the
same rows as history.csv for spreadsheets. Both are written atomically."""
import csv
import io
import json
import os

from trainer import safe_io

COLUMNS = ('epoch', 'train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy',
           'learning_rate', 'train_running_loss', 'train_seconds', 'epoch_seconds')


def paths(run_dir):
    return os.path.join(run_dir, 'history.json'), os.path.join(run_dir, 'history.csv')


def load(run_dir):
    """The saved record {'epochs': [...], ...}, or an empty one."""
    json_path, _ = paths(run_dir)
    if not os.path.isfile(json_path):
        return {'epochs': []}
    with open(json_path, encoding='utf-8') as f:
        return json.load(f)


def save(run_dir, record):
    json_path, csv_path = paths(run_dir)
    safe_io.write_text(json_path, json.dumps(record, indent=1))
    rows = io.StringIO()
    writer = csv.DictWriter(rows, fieldnames=COLUMNS, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(record['epochs'])
    safe_io.write_text(csv_path, rows.getvalue())
