"""What the console and the README tell a user: --help and mistakes of every
command, the key table, progress lines, a quiet start."""
import glob
import os
import re
import subprocess
import sys

import pytest

import constant
from foundation.errors import UserError
from trainer import console
from trainer.config import key_docs, settings
from trainer.runs import history

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every command a user runs: the top-level scripts that answer --help early.
COMMANDS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(PROJECT_DIR, '*.py'))
                  if 'command.answer_early(' in open(p, encoding='utf-8').read())


def run_command(script, *args, env=None):
    return subprocess.run([sys.executable, os.path.join(PROJECT_DIR, script), *args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=120, env=env)


def test_the_commands_are_found():
    assert {'main.py', 'experiments.py', 'ImageResizer.py', 'TFRecordsWriter.py'} <= set(COMMANDS)


@pytest.mark.parametrize('script', COMMANDS)
@pytest.mark.parametrize('flag', ['--help', '-h'])
def test_help_gives_usage_then_every_settable_key_with_default_and_meaning(script, flag):
    result = run_command(script, flag)
    assert result.returncode == 0 and result.stderr == ''
    usage = open(os.path.join(PROJECT_DIR, script), encoding='utf-8').read().split('"""')[1].strip()
    assert result.stdout.startswith(usage.splitlines()[0])
    listed = re.findall(r'^  (\w+)=', result.stdout, re.M)
    assert listed == [d.key for d in key_docs.key_docs() if not d.fixed]
    assert set(listed) == set(settings.settable_keys())
    for doc in key_docs.key_docs():
        if not doc.fixed:
            shown = re.search(rf'^  {doc.key}=(.*?)(?: {{2,}}|\n {{34}})(\S.*(?:\n {{34}}\S.*)*)',
                              result.stdout, re.M)
            assert shown.group(1) == doc.default
            assert ' '.join(shown.group(2).split()) == doc.meaning


@pytest.mark.parametrize('script', COMMANDS)
def test_a_wrong_key_is_one_line_naming_only_keys_a_user_can_set(script):
    result = run_command(script, 'modle=resnet50')
    assert result.returncode == 2 and result.stdout == ''
    line, = result.stderr.splitlines()
    assert line.startswith("error: unknown key 'modle' (did you mean 'model'?); valid keys: ")
    valid = line.split('valid keys: ')[1].split(', ')
    assert valid == settings.settable_keys()
    assert not set(valid) & set(settings.MENU_KEYS)
    assert 'main.py' not in line


def test_every_key_has_its_meaning_in_constant_py():
    docs = key_docs.key_docs()
    assert [d.key for d in docs] == list(constant.config)
    assert all(len(d.meaning) > 10 for d in docs), [d.key for d in docs if len(d.meaning) <= 10]


def test_a_meaning_may_go_on_over_comment_lines():
    source = ("config = {\n    # --- a section ---\n    'a': 1,  # first line\n        # second line\n"
              "    'b': [1,\n          2],  # of b\n\n    # --- next ---\n    'c': None,  # c\n}\n")
    docs = key_docs.key_docs(source)
    assert [(d.key, d.default, d.meaning) for d in docs] == \
        [('a', '1', 'first line second line'), ('b', 'see constant.py', 'of b'), ('c', 'None', 'c')]


def test_the_key_table_of_the_docs_is_the_one_constant_py_makes():
    """`python -m trainer.config.key_docs` makes it anew after a key changes."""
    with open(key_docs.KEY_TABLE_FILE, encoding='utf-8') as f:
        text = f.read()
    assert key_docs.with_key_table(text) == text


DOCUMENTS = ['README.md', 'CHANGELOG.md', *sorted(
    os.path.join('docs', name) for name in os.listdir(os.path.join(constant.PROJECT_DIR, 'docs')))]


@pytest.mark.parametrize('document', DOCUMENTS)
def test_the_tables_of_the_docs_are_not_split_by_blank_lines(document):
    """A blank line ends a markdown table: what follows renders as text."""
    with open(os.path.join(constant.PROJECT_DIR, document), encoding='utf-8') as f:
        lines = f.read().splitlines()
    for before, blank, after in zip(lines, lines[1:], lines[2:]):
        assert not (before.startswith('|') and not blank.strip() and after.startswith('|')), before


@pytest.mark.parametrize('document', DOCUMENTS)
def test_the_links_of_the_docs_lead_to_files_that_exist(document):
    with open(os.path.join(constant.PROJECT_DIR, document), encoding='utf-8') as f:
        text = f.read()
    folder = os.path.dirname(os.path.join(constant.PROJECT_DIR, document))
    targets = [t.split('#')[0] for t in re.findall(r'\]\(([^)\s]+)\)', text)
               if '://' not in t and not t.startswith('#')]
    assert [t for t in targets if not os.path.exists(os.path.join(folder, t))] == []


@pytest.mark.parametrize('images, log_every, expected', [
    (1437, 2500, 360), (1437, 300, 300), (45000, 2500, 2500), (3, 2500, 1)])
def test_an_epoch_prints_at_least_a_few_progress_lines(images, log_every, expected):
    assert console.log_interval(log_every, images) == expected


def test_progress_lines_say_the_mean_loss_since_the_last_and_the_time_left(capsys, monkeypatch):
    now = iter([0.0, 10.0, 20.0])  # the clock is read at the start and at each line
    monkeypatch.setattr(console.time, 'perf_counter', lambda: next(now))
    log = console.ProgressLog(epoch=3, total=400, last=400, every=200, skip=0)
    for seen, loss in ((100, 4.0), (200, 2.0), (300, 1.0), (400, 3.0)):
        log.step(seen, loss, 100)
    lines = capsys.readouterr().out.splitlines()
    # 200 images in 10 s: 200 more take 10 s; the last line says the epoch's time
    assert lines == ['epoch 3, step 200 / 400, loss = 2.00 (5.000 sec/batch), mean loss 3.000, ETA 0:00:10',
                     'epoch 3, step 400 / 400, loss = 3.00 (5.000 sec/batch), mean loss 2.000, '
                     'epoch trained in 0:00:20']


def test_history_csv_holds_the_test_result_on_the_rows_of_the_weights_tested():
    record = {'epochs': [{'epoch': e, 'valid_loss': 1.0 / e} for e in (1, 2, 3)],
              'best': {'epoch': 2, 'test_loss': 0.5, 'test_accuracy': 0.8},
              'test': {'epoch': 3, 'loss': 0.4, 'accuracy': 0.9}}
    rows = history.csv_rows(record)
    assert [(r['epoch'], r.get('test_loss'), r.get('test_accuracy')) for r in rows] == \
        [(1, None, None), (2, 0.5, 0.8), (3, 0.4, 0.9)]


@pytest.mark.parametrize('level', ['2', '3'])
def test_tensorflow_starts_quietly_at_the_log_levels_users_set(level):
    """TF 2.21 writes its start-up notices before its logging starts, past
    TF_CPP_MIN_LOG_LEVEL; only 0 asks for them. (Level 1 and unset: test_main.)"""
    code = ('from foundation import machine, tf_quiet; tf_quiet.import_tensorflow_quietly(); '
            'machine.gpu_found("/device:GPU:0")')
    result = subprocess.run([sys.executable, '-c', code], cwd=PROJECT_DIR, capture_output=True,
                            text=True, timeout=120, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': level})
    assert result.returncode == 0 and result.stderr == ''


def test_process_seconds_count_from_the_start_of_the_process():
    """The end-of-run total includes what came before the training loop
    (TensorFlow's import): a child that sleeps 1.5 s first says at least that."""
    child = subprocess.run(
        [sys.executable, '-c', 'import time; time.sleep(1.5)\n'
         'from trainer import console; print(console.process_seconds())'],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True, check=True)
    assert 1.5 <= float(child.stdout) < 60


def test_process_seconds_read_the_start_after_the_command_name(tmp_path):
    ticks = os.sysconf('SC_CLK_TCK')
    fields = ['S'] + ['0'] * 18 + [str(5 * ticks)] + ['0'] * 10  # field 22: started 5 s after boot
    stat, uptime = tmp_path / 'stat', tmp_path / 'uptime'
    stat.write_text('4242 (a b) c) ' + ' '.join(fields))  # a command name with ') ' in it
    uptime.write_text('20.00 31.00\n')
    assert console.process_seconds(str(stat), str(uptime)) == pytest.approx(15.0)
    assert console.process_seconds(str(tmp_path / 'none'), str(uptime)) is None


DOWNLOADED_BY_READER = 'init_weights='  # a file the reader fetches first: checked to exist
SCRIPT_COMMAND = re.compile(r'python ((?:main|experiments|evaluate|predict|export|instruments)\.py)((?: +[^\s`#|]+)*)')


def commands_in(text):
    """(script, [key=value, ...]) of every command line the text shows a user."""
    for script, rest in SCRIPT_COMMAND.findall(text):
        yield script, [arg for arg in rest.split() if '=' in arg and not arg.startswith('-')
                       and arg != 'key=value' and not arg.startswith(DOWNLOADED_BY_READER)]


@pytest.mark.parametrize('document', DOCUMENTS)
def test_every_command_the_docs_show_takes_its_keys(document):
    """What a reader copies from the README and docs is accepted as it stands:
    every key known, every value valid (the tutorial's commands among them)."""
    with open(os.path.join(constant.PROJECT_DIR, document), encoding='utf-8') as f:
        found = list(commands_in(f.read()))
    refused = []
    for script, args in found:
        try:
            settings.load_config(args)
        except UserError as error:
            refused.append(f'{script} {" ".join(args)}: {error}')
    assert refused == []
