"""The notebook API (trainer/api/): a run and a sweep in a child process,
their records returned, console lines streamed, keys checked first, a failed
run one message, an interrupted cell a saved checkpoint, figures inline; and
docs/notebook.ipynb executed cell by cell, headless."""
import csv
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import types

import matplotlib.image
import pytest

from foundation.errors import ConfigError
from tests.test_experiments import PROJECT_DIR
from trainer import api
from trainer.api import commands
from trainer.config import settings

QUICK = dict(dataset_name='digits', max_epochs=2, log_every=100000)
NOTEBOOK = pathlib.Path(PROJECT_DIR, 'docs', 'notebook.ipynb')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(run, what it printed) of api.train on digits."""
    root = tmp_path_factory.mktemp('api')
    printed = io.StringIO()
    stdout, sys.stdout = sys.stdout, printed
    try:
        run = api.train(datasets_root=str(root), **QUICK)
    finally:
        sys.stdout = stdout
    return run, printed.getvalue()


def test_train_returns_the_runs_record_and_files_and_streams_its_console(trained):
    run, printed = trained
    assert run.name == 'custom_model_relu'
    assert run.record == json.loads(pathlib.Path(run.directory, 'history.json').read_text())
    assert [row['epoch'] for row in run.history] == [1, 2] and run.best['epoch'] in (1, 2)
    assert run.test['epoch'] == 2 and 0 < run.best['test_accuracy'] <= 1
    assert run.config['max_epochs'] == 2 and run.record['trained_by'][0].endswith('from epoch 1')
    assert {'directory', 'history', 'plot', 'filters', 'evaluation', 'class_activation_maps'} <= set(run.files)
    assert all(os.path.exists(path) for path in run.files.values())
    assert printed.splitlines() == run.console  # every line, as it came
    assert any(line.startswith('Run custom_model_relu done: 2 epoch(s)') for line in run.console)


def test_show_draws_the_runs_figures_as_pngs(trained):
    run, _ = trained
    pictures = api.show(run)
    assert [p.caption.split(': ')[1] for p in pictures] == [
        'training progress', 'first-layer filters', 'test confusion matrix', 'misclassified test images']
    assert pictures[1].png == pathlib.Path(run.files['filters']).read_bytes()
    image = matplotlib.image.imread(io.BytesIO(pictures[0].png), format='png')
    # the PDF's 8 x 7.5 inch figure at 80 dpi (a constant learning rate is a line of text, not a panel)
    assert image.shape[:2] == (600, 640)
    assert pictures[0]._repr_png_() == pictures[0].png


def test_show_displays_in_a_running_notebook_only(trained, monkeypatch):
    run, _ = trained
    shown = []
    display = types.ModuleType('IPython.display')
    display.Image = lambda data, format: ('image', data)
    display.Markdown = lambda text: ('markdown', text)
    display.display = lambda *items: shown.extend(items)
    ipython = types.ModuleType('IPython')
    ipython.display, ipython.get_ipython = display, lambda: None
    monkeypatch.setitem(sys.modules, 'IPython', ipython)
    monkeypatch.setitem(sys.modules, 'IPython.display', display)
    api.show(run)
    assert shown == []  # a script: nothing displayed
    monkeypatch.setattr(ipython, 'get_ipython', lambda: object())
    pictures = api.show(run)
    assert shown[1::2] == [('image', p.png) for p in pictures]
    assert shown[0::2] == [('markdown', f'**{p.caption}**') for p in pictures]


@pytest.mark.parametrize('value', ['digits', "it's \"quoted\"", 1e-3, 7, True, None, [3, 3], (2, 2), {'a': [1]},
                                   pathlib.Path('/tmp/x y')])
def test_keyword_values_reach_the_command_as_the_same_values(value):
    (arg,) = commands.arguments({'v': value})
    parsed = settings.parse_value(arg.partition('=')[2])
    assert parsed == (str(value) if isinstance(value, pathlib.Path) else value)


def test_a_wrong_key_or_value_raises_before_any_child_starts(monkeypatch, tmp_path):
    monkeypatch.setattr(commands.subprocess, 'Popen', lambda *a, **k: pytest.fail('a child started'))
    with pytest.raises(ConfigError, match="unknown key 'modle' \\(did you mean 'model'\\?\\)"):
        api.train(modle='resnet50')
    with pytest.raises(ConfigError, match='max_epochs'):
        api.train(max_epochs=-1)
    with pytest.raises(ConfigError, match="run_name is chosen for each run by experiments.py"):
        api.sweep('se', run_name='mine', datasets_root=str(tmp_path))


def test_a_run_that_fails_raises_its_one_line_with_what_to_provide(tmp_path):
    with pytest.raises(api.RunFailed) as failed:
        api.train(echo=False, datasets_root=str(tmp_path), dataset_name='mnist', download=False)
    assert failed.value.exit_status == 2
    message = str(failed.value)
    assert message.startswith('missing data files') and 'train-images-idx3-ubyte.gz' in message
    assert 'Traceback' not in message and failed.value.result.history == []


INTERRUPTED = '''
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as a kernel does, though started in the background
sys.path.insert(0, {project!r})
from trainer import api
from trainer.api import commands
try:
    api.train(datasets_root={root!r}, dataset_name='digits', max_epochs=500, log_every=100000)
except KeyboardInterrupt:
    print('KeyboardInterrupt reached the notebook', flush=True)
'''


def test_an_interrupted_cell_saves_the_runs_checkpoint_and_resume_continues_it(tmp_path):
    script = INTERRUPTED.format(project=PROJECT_DIR, root=str(tmp_path))
    notebook = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    for line in notebook.stdout:  # the kernel's interrupt reaches the notebook's process, not the child's
        lines.append(line)
        if line.startswith('Train error: epoch 3 '):
            notebook.send_signal(signal.SIGINT)
            break
    lines += notebook.stdout.readlines()
    assert notebook.wait(timeout=120) == 0, ''.join(lines)
    said = ''.join(lines)
    assert 'KeyboardInterrupt reached the notebook' in said and 'resume=True continues it' in said
    assert 'exit status 130' in said
    run = commands.run_of(settings.checked_config([f'datasets_root={tmp_path}']), 'custom_model_relu')
    done = len(run.history)
    assert 3 <= done < 500
    resumed = api.train(echo=False, datasets_root=str(tmp_path), dataset_name='digits', max_epochs=done + 1,
                        resume=True, log_every=100000)
    assert [row['epoch'] for row in resumed.history] == list(range(1, done + 2))
    assert resumed.record['trained_by'][-1].endswith(f'from epoch {done + 1}')


NOTEBOOK_RUNNER = '''
import functools, json, os, sys
path, root = sys.argv[1], sys.argv[2]
os.chdir(os.path.dirname(path))  # where Jupyter starts a notebook's kernel
cells = [cell for cell in json.load(open(path))['cells'] if cell['cell_type'] == 'code']
namespace, shown = {}, []
for index, cell in enumerate(cells):
    exec(compile(''.join(cell['source']), f'cell {index}', 'exec'), namespace)
    if index == 0:  # the notebook's runs go into the test's folder, and what show() draws is kept
        api = namespace['api']
        api.train = functools.partial(api.train, datasets_root=root)
        api.sweep = functools.partial(api.sweep, datasets_root=root)
        show = api.show
        api.show = lambda result: shown.append([p.caption for p in show(result)])
run, study = namespace['run'], namespace['study']
print(json.dumps({'tensorflow': 'tensorflow' in sys.modules, 'run': run.directory, 'best': run.best,
                  'table': study.table, 'sweep': study.directory, 'shown': shown}))
'''


def test_the_example_notebook_runs_headless_cell_by_cell(tmp_path):
    done = subprocess.run([sys.executable, '-c', NOTEBOOK_RUNNER, str(NOTEBOOK), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out['tensorflow'] is False  # the notebook's process never imported TensorFlow
    assert out['run'] == str(tmp_path / 'digits' / 'save_dir' / 'runs' / 'custom_model_se_relu')
    assert out['best'] == json.loads(pathlib.Path(out['run'], 'history.json').read_text())['best']
    with open(os.path.join(out['sweep'], 'results.csv'), newline='') as table:
        assert out['table'] == list(csv.DictReader(table))
    assert sorted(row['run'] for row in out['table']) == [
        f'custom_model_{arm}relu_seed-{seed}' for arm in ('', 'se_') for seed in (1, 2, 3)]
    assert [len(captions) for captions in out['shown']] == [4, 1]
    assert 'Run custom_model_se_relu done' in done.stdout  # the console, streamed into the cell's output
