"""A fresh start never costs a trained run: the new run trains in a staging
folder and takes the run's place only with its first checkpoint, the earlier
run then set aside; folders without a checkpoint never count among the
earlier runs kept; a process killed at any step leaves what the next command
finishes (trainer/runs/folder.py)."""
import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys

import pytest

import ImageResizer
import main
import TFRecordsWriter
from tests.fixtures import write_cifar_batches
from tests.test_main import PROJECT_DIR, read_until, start_main
from tests.test_runs import touch_checkpoint
from trainer.config import settings
from trainer.runs import checkpoints, folder
from trainer.training import interruption, passes

RUN = 'custom_model_relu'
QUIET = 'log_every=100000'


def digests(root):
    """{path: sha1} of every file under `root` but the run locks (whose
    holder text comes and goes)."""
    found = {}
    for here, _, names in os.walk(root):
        for name in names:
            if not name.endswith('.lock'):
                with open(os.path.join(here, name), 'rb') as f:
                    found[os.path.relpath(os.path.join(here, name), root)] = hashlib.sha1(f.read()).hexdigest()
    return found


def runs_dir(root, dataset='digits'):
    return root / dataset / 'save_dir' / 'runs'


def earlier_runs(root, dataset='digits'):
    return sorted(p for p in runs_dir(root, dataset).iterdir() if folder.EARLIER in p.name)


def leftovers(root, dataset='digits'):
    """What a fresh start or a removal left beside the runs."""
    return sorted(p.name for p in runs_dir(root, dataset).iterdir()
                  if p.name.endswith(('.fresh', '.removing')))


def epochs_of(directory):
    return [c.epochs for c in checkpoints.found(str(directory))]


# --- the defect as seen: a bad shard, fresh start after fresh start -------------------------

@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    """cifar_128 TFRecords (two training shards) that ImageResizer and
    TFRecordsWriter made of small CIFAR-10 batches."""
    root = tmp_path_factory.mktemp('cifar')
    write_cifar_batches(root / 'cifar_32' / 'data_dir', n_per_batch=4)
    shards = "tfrecord_shards={'train': 2, 'valid': 1, 'test': 1}"
    with contextlib.redirect_stdout(io.StringIO()):
        assert ImageResizer.main([f'datasets_root={root}', shards]) == 0
        assert TFRecordsWriter.main([f'datasets_root={root}', shards]) == 0
    return root / 'cifar_128' / 'data_dir'


def test_fresh_starts_that_fail_on_an_empty_shard_leave_the_trained_run_whole(cifar, tmp_path, capsys):
    """Six fresh starts (one more than keep_earlier_runs) on a 0-byte shard
    each exit 2 with one line; the trained run stays, file for file, and
    nothing is left beside it. With the shard mended, the next fresh start
    sets it aside, the only earlier run."""
    data_dir = tmp_path / 'cifar_128' / 'data_dir'
    shutil.copytree(cifar, data_dir)
    args = [f'datasets_root={tmp_path}', 'dataset_name=cifar_128', 'max_epochs=1', 'batch_size=6',
            'train_eval_images=6', QUIET]
    assert main.main(args) == 0
    runs = runs_dir(tmp_path, 'cifar_128')
    trained = digests(runs)
    assert epochs_of(runs / RUN) == [1]
    shard = data_dir / 'train-00001-of-00002.tfrecords'
    shard.write_bytes(b'')
    capsys.readouterr()
    for _ in range(6):
        assert main.main(args) == 2
        assert digests(runs) == trained
        assert not earlier_runs(tmp_path, 'cifar_128') and not leftovers(tmp_path, 'cifar_128')
        out, err = capsys.readouterr()
        assert err.count('\n') == 1 and f'{shard} holds 0 records' in err, err
        assert f'The fresh start of {RUN} committed no epoch' in out

    shutil.copy(cifar / shard.name, shard)
    assert main.main(args) == 0
    [earlier] = earlier_runs(tmp_path, 'cifar_128')
    assert epochs_of(earlier) == [1] and (earlier / 'plot.pdf').is_file()
    assert {k.split(os.sep, 1)[1]: v for k, v in trained.items() if k.startswith(RUN + os.sep)} == \
        {k: v for k, v in digests(earlier).items() if k not in ('plot.pdf',) and not k.startswith('filters')}
    assert epochs_of(runs / RUN) == [1]


# --- fresh starts of a digits run --------------------------------------------------------------

@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
    """A datasets_root holding a 2-epoch digits run, to copy."""
    root = tmp_path_factory.mktemp('digits')
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.main([f'datasets_root={root}', 'max_epochs=2', QUIET]) == 0
    return root


@pytest.fixture
def trained(digits_run, tmp_path):
    """A copy of the 2-epoch run in tmp_path/datasets and its files' digests."""
    root = tmp_path / 'datasets'
    shutil.copytree(digits_run, root)
    return root, digests(runs_dir(root) / RUN)


def test_a_fresh_start_sets_the_earlier_run_aside_once_its_first_epoch_is_committed(trained, capsys):
    root, before = trained
    plot = root / 'digits' / 'save_dir' / 'plot_training' / f'{RUN}.pdf'
    old_plot = plot.read_bytes()
    assert main.main([f'datasets_root={root}', 'max_epochs=1', QUIET]) == 0
    [earlier] = earlier_runs(root)
    assert {k: v for k, v in digests(earlier).items() if k != 'plot.pdf' and not k.startswith('filters')} == before
    assert (earlier / 'plot.pdf').read_bytes() == old_plot and (earlier / 'filters').is_dir()
    assert epochs_of(runs_dir(root) / RUN) == [1] and not leftovers(root)
    assert any(p.name.startswith('events.out.tfevents') for p in (runs_dir(root) / RUN).iterdir())
    out = capsys.readouterr().out
    assert out.index('epoch 1, step') < out.index(f'The earlier run {RUN} is kept in')  # once epoch 1 is trained


def test_a_fresh_start_that_diverges_in_its_first_epoch_leaves_the_run_as_it_was(trained, capsys):
    root, before = trained
    assert main.main([f'datasets_root={root}', 'max_epochs=1', 'learning_rate=1e30', QUIET]) == 1
    assert 'no epoch completed, so no checkpoint' in capsys.readouterr().err
    assert digests(runs_dir(root) / RUN) == before
    assert not earlier_runs(root) and not leftovers(root)


def test_a_fresh_start_interrupted_in_its_first_epoch_keeps_its_checkpoint_in_the_runs_place(
        trained, capsys, monkeypatch):
    """Ctrl-C in epoch 1: the step reached is checkpointed, which commits the
    new run (resume=True continues it); the earlier run is set aside."""
    root, before = trained

    def interrupted(*args, **kwargs):
        raise interruption.Interrupted(signal.SIGINT, 100)
    monkeypatch.setattr(passes, 'train_epoch', interrupted)
    assert main.main([f'datasets_root={root}', 'max_epochs=1', QUIET]) == 130
    place = runs_dir(root) / RUN
    assert f'saved {place}/model.ckpt-0-100img;' in capsys.readouterr().err
    assert [(c.epochs, c.images) for c in checkpoints.found(str(place))] == [(0, 100)]
    [earlier] = earlier_runs(root)
    assert epochs_of(earlier) == [1, 2] and not leftovers(root)


# --- killed at any step -------------------------------------------------------------------------

def test_a_fresh_start_killed_in_its_first_epoch_leaves_the_run_to_the_next_command(trained, capsys):
    """kill -9 mid-epoch: the run is untouched; the next command removes
    the staging folder and resumes the run that was there."""
    root, before = trained
    process = start_main(root.parent, 'batch_size=1', 'log_every=100', 'max_epochs=1')
    try:
        read_until(process, r'^epoch 1, step 300 / 1437')
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert digests(runs_dir(root) / RUN) == before
    assert leftovers(root) == [f'.{RUN}.fresh']
    assert main.main([f'datasets_root={root}', 'max_epochs=3', 'resume=True', QUIET]) == 0
    out = capsys.readouterr().out
    assert f'The fresh start of {RUN} committed no epoch' in out and '2 epoch(s) done' in out
    assert epochs_of(runs_dir(root) / RUN)[-1] == 3 and not earlier_runs(root) and not leftovers(root)


KILL_AT_PLACING = '''
import os, sys
sys.path.insert(0, {project!r})
import main
real_replace = os.replace
def replace(source, destination):
    if source.endswith('.fresh'):
        os._exit(9)  # killed after the earlier run was set aside, before the new one took its place
    return real_replace(source, destination)
os.replace = replace
sys.exit(main.main({args!r}))
'''


def test_a_fresh_start_killed_between_its_renames_is_put_in_place_by_the_next_command(trained, capsys):
    root, before = trained
    args = [f'datasets_root={root}', 'max_epochs=1', QUIET]
    child = subprocess.run([sys.executable, '-c', KILL_AT_PLACING.format(project=PROJECT_DIR, args=args)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 9, child.stderr
    assert not (runs_dir(root) / RUN).exists() and leftovers(root) == [f'.{RUN}.fresh']
    assert main.main([f'datasets_root={root}', 'max_epochs=2', 'resume=True', QUIET]) == 0
    assert f'Resuming from {runs_dir(root) / RUN}/model.ckpt-1: 1 epoch(s) done' in capsys.readouterr().out
    [earlier] = earlier_runs(root)
    assert epochs_of(earlier) == [1, 2] and epochs_of(runs_dir(root) / RUN) == [1, 2]
    assert not leftovers(root)


class Killed(BaseException):
    """The process ends here: no handler runs (as os._exit, in this process)."""


def killing(monkeypatch, at):
    """Makes the `at`-th of os.replace and shutil.rmtree calls end the
    process: a rename does not happen, a removal removes one file and ends;
    returns the list of calls made."""
    calls = []
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def step(kind, path):
        calls.append((kind, path))
        return len(calls) == at

    def replace(source, destination):
        if step('replace', source):
            raise Killed
        return real_replace(source, destination)

    def rmtree(path, *args, **kwargs):
        if step('rmtree', path):
            for here, _, names in os.walk(path):
                if names:
                    os.remove(os.path.join(here, names[0]))
                    break
            raise Killed
        return real_rmtree(path, *args, **kwargs)
    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(shutil, 'rmtree', rmtree)
    return calls


def trained_folder(directory, epochs, text):
    """A folder holding a (stand-in) checkpoint of `epochs` and a history saying `text`."""
    directory.mkdir(parents=True)
    touch_checkpoint(directory, f'model.ckpt-{epochs}')
    (directory / 'history.json').write_text(text)


def lay_out(root):
    """A run in place, an older earlier run, three earlier folders that hold
    no checkpoint (what fresh starts of earlier versions left), a removal
    killed midway, and a fresh start's staging folder with its first
    checkpoint: what put_in_place then finishes. Returns the located Run."""
    cfg = settings.load_config([f'datasets_root={root}', 'keep_earlier_runs=2'])
    run = folder.locate(cfg)
    runs = runs_dir(root)
    trained_folder(runs / f'{RUN}.earlier-20200101-000000', 5, 'older')
    for n in range(3):
        (runs / f'{RUN}.earlier-2021010{n}-000000').mkdir()
        (runs / f'{RUN}.earlier-2021010{n}-000000' / 'events.out.tfevents.1.host').write_text('x')
    (runs / f'{RUN}.earlier-20200101-000000.removing').mkdir()
    trained_folder(runs / RUN, 2, 'in place')
    trained_folder(runs / f'.{RUN}.fresh', 1, 'new')
    plot = root / 'digits' / 'save_dir' / 'plot_training' / f'{RUN}.pdf'
    plot.parent.mkdir(parents=True)
    plot.write_text('plot of the run in place')
    return run


def histories(root):
    """{history: (folder name kind, plot beside it)} of every folder of the
    runs that holds a checkpoint; the kind is 'place', 'earlier' or the name."""
    found = {}
    for path in runs_dir(root).iterdir():
        if path.is_dir() and folder.holds_checkpoint(str(path)):
            kind = 'place' if path.name == RUN else 'earlier' if path.name.startswith(RUN + '.earlier-') \
                else path.name
            found[(path / 'history.json').read_text()] = kind
    return found


def test_a_kill_at_any_step_of_putting_a_fresh_start_in_place_loses_no_run(tmp_path, monkeypatch):
    """Kill at the 1st, 2nd, ... rename or removal of put_in_place: then
    the next holder of the run's lock finds every trained run whole, the
    new run in place, and nothing half-done under a run's name."""
    at = 0
    while True:
        at += 1
        root = tmp_path / str(at)
        run = lay_out(root)
        staged = folder.Run(run.cfg, run.name, run.dirs, str(runs_dir(root) / f'.{RUN}.fresh'))
        calls = killing(monkeypatch, at)
        try:
            folder.put_in_place(staged)
            killed = False
        except Killed:
            killed = True
        monkeypatch.undo()
        with contextlib.redirect_stdout(io.StringIO()), folder.Lock(run):  # the next command
            assert histories(root) == {'new': 'place', 'in place': 'earlier', 'older': 'earlier'}, calls
            # the folders without a checkpoint and the removals begun are gone
            assert len(earlier_runs(root)) == 2 and not leftovers(root), calls
            [in_place] = [p for p in earlier_runs(root) if (p / 'history.json').read_text() == 'in place']
            assert (in_place / 'plot.pdf').read_text() == 'plot of the run in place', calls
        if not killed:
            break
    assert at > 5  # renames and removals, each a step killed once


def test_earlier_folders_without_a_checkpoint_never_count_among_those_kept(tmp_path, capsys):
    cfg = settings.load_config([f'datasets_root={tmp_path}', 'keep_earlier_runs=1'])
    run = folder.locate(cfg)
    runs = runs_dir(tmp_path)
    for n in range(6):  # what six failed fresh starts of an earlier version left
        (runs / f'{RUN}.earlier-2021010{n}-000000').mkdir(parents=True)
        (runs / f'{RUN}.earlier-2021010{n}-000000' / 'events.out.tfevents.1.host').write_text('x')
    trained_folder(runs / RUN, 3, 'trained')
    folder.set_aside(run)
    [kept] = earlier_runs(tmp_path)
    assert (kept / 'history.json').read_text() == 'trained'
    assert 'Removed the oldest' not in capsys.readouterr().out

    (runs / RUN).mkdir()
    (runs / RUN / 'events.out.tfevents.2.host').write_text('x')  # no checkpoint: nothing to keep
    folder.set_aside(run)
    assert earlier_runs(tmp_path) == [kept] and not (runs / RUN).exists()
    assert f'{runs / RUN}: it held no checkpoint' in capsys.readouterr().out
