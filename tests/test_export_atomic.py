"""An export takes the place of the earlier one in one step: a process killed
at any step of the replacement leaves a whole SavedModel under its name (or,
where the file system cannot exchange two folders, one the next export puts
back), and the next export removes whatever was left beside it
(foundation/safe_io.py atomic_folder, export.py)."""
import contextlib
import io
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import export
import main
from foundation import safe_io
from tests.test_main import PROJECT_DIR

v1 = tf.compat.v1
FILES = ('saved_model.pb', 'variables.index', 'variables.data')

# A child that replaces <parent>/best by a folder of FILES saying 'new', and
# ends (os._exit: no clean-up runs) at its step number `at` of the renames,
# exchanges and removals; a removal removes one file before it ends.
KILLED_AT_STEP = '''
import os, shutil, sys
sys.path.insert(0, {project!r})
from foundation import safe_io
target, at, exchange = sys.argv[1], int(sys.argv[2]), sys.argv[3] == 'exchange'
steps = []
def killing(real, removal=False):
    def step(path, *args, **kwargs):
        steps.append(path)
        if len(steps) == at:
            for here, _, names in (os.walk(path) if removal else []):
                if names:
                    os.remove(os.path.join(here, names[0]))
                    break
            os._exit(9)
        return real(path, *args, **kwargs)
    return step
os.replace = killing(os.replace)
shutil.rmtree = killing(shutil.rmtree, removal=True)
safe_io.exchange = killing(safe_io.exchange if exchange else lambda first, second: False)
with safe_io.atomic_folder(target) as partial:
    os.makedirs(partial)
    for name in {files!r}:
        with open(os.path.join(partial, name), 'w') as f:
            f.write('new')
print(len(steps))
'''


def folder_of(path, text):
    os.makedirs(path)
    for name in FILES:
        with open(os.path.join(path, name), 'w') as f:
            f.write(text)


def version(path):
    """'old' or 'new' for a whole folder of FILES of one version; else what is wrong."""
    if not os.path.isdir(path):
        return 'missing'
    texts = {}
    for name in os.listdir(path):
        with open(os.path.join(path, name)) as f:
            texts[name] = f.read()
    versions = set(texts.values())
    return versions.pop() if sorted(texts) == sorted(FILES) and len(versions) == 1 else f'broken: {texts}'


@pytest.mark.parametrize('how', ['exchange', 'two renames'])
def test_a_replacement_killed_at_any_step_leaves_a_whole_folder_and_the_next_one_cleans_up(tmp_path, how):
    """Kill at step 1, 2, ... until the replacement completes. With the
    system's exchange of two names, `best` is whole, old or new, at every
    instant; with two renames it may be missing right after the kill, and
    the next replacement's first step puts the old one back. Either way the
    next replacement leaves `best` alone in its folder."""
    at = 0
    while True:
        at += 1
        parent = tmp_path / str(at)
        folder_of(parent / 'best', 'old')
        folder_of(parent / 'newest', 'old')  # another export of the run: never touched
        child = subprocess.run([sys.executable, '-c', KILLED_AT_STEP.format(project=PROJECT_DIR, files=FILES),
                                str(parent / 'best'), str(at), how], capture_output=True, text=True, timeout=60)
        assert child.returncode in (0, 9), child.stderr
        found = version(parent / 'best')
        if how == 'exchange':
            assert found in ('old', 'new'), (at, found, os.listdir(parent))
        else:
            assert found in ('old', 'new', 'missing'), (at, found, os.listdir(parent))
        with safe_io.locked_folder(str(parent)):
            safe_io.settle_folders(str(parent))  # what the next export does first
        assert version(parent / 'best') == found.replace('missing', 'old'), at
        assert sorted(os.listdir(parent)) == ['best', 'newest'] and version(parent / 'newest') == 'old', at
        if child.returncode == 0:
            break
    assert at > 3  # each step (renames, an exchange, removals) was killed once


def test_what_an_export_of_an_earlier_version_left_is_put_right_by_any_later_export(tmp_path):
    """Killed between its two renames, an earlier version left no `best`,
    its folder set aside as best.earlier and the new one as best.partial;
    killed while removing, a half best.earlier beside `best`. An export of
    another checkpoint puts `best` back and removes the rest."""
    saved = tmp_path / 'saved_model'
    folder_of(saved / 'best.earlier', 'old')
    folder_of(saved / 'best.partial', 'new')
    folder_of(saved / 'model.ckpt-1.earlier', 'old')
    os.remove(saved / 'model.ckpt-1.earlier' / 'variables.index')
    folder_of(saved / 'model.ckpt-1', 'old')
    with safe_io.atomic_folder(str(saved / 'newest')) as partial:
        folder_of(partial, 'new')
    assert sorted(os.listdir(saved)) == ['best', 'model.ckpt-1', 'newest']
    assert [version(saved / n) for n in ('best', 'model.ckpt-1', 'newest')] == ['old', 'old', 'new']


def test_a_failing_exchange_leaves_the_earlier_folder_and_nothing_beside_it(tmp_path, monkeypatch):
    """A file system that refuses the exchange (read-only, say) fails the
    replacement: the earlier folder stays, the new one goes."""
    folder_of(tmp_path / 'best', 'old')

    def refused(first, second):
        raise OSError(30, os.strerror(30), first)
    monkeypatch.setattr(safe_io, 'exchange', refused)
    with pytest.raises(OSError), safe_io.atomic_folder(str(tmp_path / 'best')) as partial:
        folder_of(partial, 'new')
    assert os.listdir(tmp_path) == ['best'] and version(tmp_path / 'best') == 'old'


def test_exchange_swaps_two_folders_or_says_it_cannot(tmp_path):
    folder_of(tmp_path / 'a', 'old')
    folder_of(tmp_path / 'b', 'new')
    if not safe_io.exchange(str(tmp_path / 'a'), str(tmp_path / 'b')):
        pytest.skip('this system or file system exchanges no names')
    assert (version(tmp_path / 'a'), version(tmp_path / 'b')) == ('new', 'old')
    with pytest.raises(FileNotFoundError):
        safe_io.exchange(str(tmp_path / 'a'), str(tmp_path / 'missing'))


# --- export.py -------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A 2-epoch digits run, its best checkpoint exported."""
    root = tmp_path_factory.mktemp('export')
    args = [f'datasets_root={root}', 'max_epochs=2', 'log_every=100000']
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.main(args) == 0
        assert export.main(args) == 0
    return {'args': args, 'saved': root / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu' / 'saved_model'}


def loads(path):
    """The class names the SavedModel at `path` serves: it loads, signatures and all."""
    with tf.Graph().as_default(), v1.Session() as session:
        meta = v1.saved_model.load(session, ['serve'], str(path))
        names = meta.signature_def['class_names'].outputs['class_names'].name
        assert set(meta.signature_def) >= {'serving_default', 'serving_uint8'}
        return [n.decode() for n in session.run(names)]


KILLED_EXPORT = '''
import os, sys
sys.path.insert(0, {project!r})
import export
from foundation import safe_io
real_replace = os.replace
if {two_renames!r}:
    safe_io.exchange = lambda first, second: False
def replace(source, destination):
    if source.endswith('best.partial'):
        os._exit(9)  # the exchange done, the earlier export not yet removed; or between the two renames
    return real_replace(source, destination)
os.replace = replace
sys.exit(export.main({args!r}))
'''


@pytest.mark.parametrize('two_renames', [False, True])
def test_an_export_killed_midway_leaves_a_savedmodel_that_loads(exported, capsys, two_renames):
    saved, args = exported['saved'], exported['args']
    child = subprocess.run([sys.executable, '-c', KILLED_EXPORT.format(project=PROJECT_DIR, args=args,
                                                                       two_renames=two_renames)],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 9, child.stderr
    left = set(os.listdir(saved)) - {'newest'}  # the other case's export, if it ran first
    if two_renames:
        assert left == {'best.earlier', 'best.partial'}  # as an earlier version left it
    else:
        assert left == {'best', 'best.partial'}
        assert loads(saved / 'best') == [str(d) for d in range(10)]
    assert export.main(args + ['checkpoint=newest']) == 0  # settles every export of the run first
    assert sorted(os.listdir(saved)) == ['best', 'newest']
    assert loads(saved / 'best') == loads(saved / 'newest') == [str(d) for d in range(10)]
    assert export.main(args) == 0
    assert sorted(os.listdir(saved)) == ['best', 'newest'] and loads(saved / 'best')
    capsys.readouterr()
