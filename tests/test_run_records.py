"""A run's record (history.json, each checkpoint's .history.json) is read
within bounds (foundation/bounded_json.py) and checked against one schema
(trainer/runs/record_schema.py) wherever it is read: a record damaged or
edited by hand is one line naming the file and the field, exit status 2, in
every command; where history.json fails and a checkpoint's own record is
sound, that one stands. The hostile records are a trained digits run's,
edited here."""
import json
import os
import random
import resource
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import evaluate
import export
import instruments
import main
import predict
from foundation import bounded_json
from foundation.data import record_metadata
from foundation.errors import DataError
from tests.trained_runs import train_digits
from trainer.after_training import data_summary
from trainer.runs import checkpoints, history, record_schema, records
from trainer.study import self_normalisation

RUN = ('digits', 'save_dir', 'runs', 'custom_model_relu')
MEMORY_GROWTH_KB = 500_000  # what refusing a record may add to the process's peak


@pytest.fixture(scope='module')
def trained_root(tmp_path_factory):
    """The datasets_root of a digits run of two epochs, trained in this process."""
    root = tmp_path_factory.mktemp('trained')
    train_digits(root, 'max_epochs=2')
    return root


@pytest.fixture
def run(trained_root, tmp_path):
    """A copy of the trained run to edit: (its folder, the commands' key=value arguments)."""
    root = tmp_path / 'root'
    shutil.copytree(trained_root, root)
    return root.joinpath(*RUN), [f'datasets_root={root}', 'log_every=100000']


@pytest.fixture
def digit_png(tmp_path):
    path = tmp_path / 'digit.png'
    Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8)).save(path)
    return str(path)


def record_files(run_dir, which):
    """history.json ('history'), every checkpoint's record ('checkpoints'), or both ('all')."""
    found = sorted(run_dir.glob('model.ckpt-*.history.json'))
    assert found
    return {'history': [run_dir / 'history.json'], 'checkpoints': found,
            'all': [run_dir / 'history.json', *found]}[which]


def edit_records(run_dir, edit, which='all'):
    """Applies `edit` to each record (a str it returns is the file's new text)."""
    for path in record_files(run_dir, which):
        record = json.loads(path.read_text())
        text = edit(record)
        path.write_text(text if isinstance(text, str) else json.dumps(record))


def set_field(dotted, value):
    def edit(record):
        *outer, last = dotted.split('.')
        holder = record
        for key in outer:
            holder = holder[key]
        holder[last] = value
    return edit


def nested(depth):
    return '{"epochs": ' + '[' * depth + ']' * depth + '}'


def copy_as_other_run(run_dir):
    shutil.copytree(run_dir, run_dir.parent / 'other_run')


def command(name, args, png):
    """The exit status of a command after training, in this process."""
    if name == 'predict':
        return predict.main([*args, png])
    if name == 'resume':
        return main.main([*args, 'resume=True', 'max_epochs=3'])
    return {'evaluate': evaluate.main, 'export': export.main, 'instruments': instruments.main}[name](args)


# case: (edit of every record, set-up of the folder, command, what the line says after the file's name)
CASES = {
    'best_checkpoint_a_number': (set_field('best.checkpoint', 7), None, 'evaluate',
                                 "field best.checkpoint: 7 is not a checkpoint's path inside the run's folder"),
    'best_a_text': (set_field('best', 'best/model.ckpt-2'), None, 'evaluate',
                    'field best: "best/model.ckpt-2" is not an object'),
    'config_a_text': (set_field('config', 'custom'), None, 'evaluate',
                      'field config: "custom" is not an object'),
    'fewer_classes_than_outputs': (set_field('data.classes', ['0', '1', '2']), None, 'predict',
                                   'field data.classes: 3 class names for the 10 outputs of the network'),
    'data_a_list': (set_field('data', [1, 2]), None, 'export', 'field data: [1, 2] is not an object'),
    'mean_a_text': (set_field('data.mean', 'abc'), None, 'predict', 'field data.mean: "abc" is not one number'),
    'statistics_of_another_shape': (set_field('activation_statistics', {'layers': [['conv1', 'relu']],
                                                                        'images': 3}),
                                    None, 'instruments', 'field activation_statistics.epochs: missing'),
    'nested_deep_evaluate': (lambda record: nested(100_000), None, 'evaluate',
                             'is not readable (arrays and objects nested 100001 deep'),
    'nested_deep_resume': (lambda record: nested(100_000), None, 'resume',
                           'is not readable (arrays and objects nested 100001 deep'),
    'huge_image_shape': (set_field('data.image_shape', [60000, 60000, 1]), None, 'predict',
                         'field data.image_shape: [60000, 60000, 1] is not [8, 8, 1]'),
    'std_zero': (set_field('data.std', [0.0]), None, 'predict', 'field data.std: [0.0] is not one number above 0'),
    'best_in_another_run': (set_field('best.checkpoint', '../other_run/best/model.ckpt-2'), copy_as_other_run,
                            'evaluate', 'field best.checkpoint: "../other_run/best/model.ckpt-2" is not'),
}


@pytest.mark.parametrize('case', CASES)
def test_a_record_edited_by_hand_is_one_line_naming_the_file_and_the_field(run, digit_png, capsys, case):
    edit, set_up, name, said = CASES[case]
    run_dir, args = run
    edit_records(run_dir, edit)
    if set_up:
        set_up(run_dir)
    capsys.readouterr()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert command(name, args, digit_png) == 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < MEMORY_GROWTH_KB
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir / 'history.json'}") and err.count('\n') == 1, err
    assert said in err and 'retrain the run' in err


def test_history_json_edited_alone_gives_way_to_the_checkpoints_own_record(run, capsys):
    run_dir, args = run
    best = json.loads((run_dir / 'history.json').read_text())['best']
    copy_as_other_run(run_dir)
    edit_records(run_dir, set_field('best.checkpoint', '../other_run/best/model.ckpt-2'), 'history')
    capsys.readouterr()
    assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    assert f"(epoch {best['epoch']}) of custom_model_relu: " in out
    assert str(run_dir / best['checkpoint']) in out and 'other_run' not in out


def test_a_checkpoints_unsound_record_is_none_and_the_run_does_without_it(run, capsys):
    run_dir, args = run
    edit_records(run_dir, set_field('data.std', [-1.0]), 'checkpoints')
    assert all(c.record() is None for c in checkpoints.found(str(run_dir)))
    assert records.saved_record(str(run_dir)) == history.load(str(run_dir))
    assert evaluate.main([*args, 'checkpoint=newest']) == 0


def test_the_field_a_message_names_can_be_deleted_and_the_command_goes_on(run, digit_png, capsys):
    run_dir, args = run
    edit_records(run_dir, set_field('data.std', [0.0]))
    assert predict.main([*args, digit_png]) == 2
    assert 'or delete the field data' in capsys.readouterr().err
    edit_records(run_dir, lambda record: record.pop('data'))
    assert predict.main([*args, digit_png]) == 0
    assert capsys.readouterr().out.startswith(f'{digit_png}: 0 (')


# --- the depth of JSON text, without recursion ------------------------------------------

def depth_of(value):
    """The nesting of a parsed JSON value, recursively: the reference."""
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def random_value(rng, depth):
    kind = rng.choice(['list', 'dict', 'text', 'number'] if depth < 8 else ['text', 'number'])
    if kind == 'list':
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 'dict':
        return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return random_text(rng) if kind == 'text' else rng.uniform(-1, 1)


def random_text(rng):
    return ''.join(rng.choice('ab[]{}"\\\n é') for _ in range(rng.randrange(6)))


def test_the_nesting_depth_is_the_parsers_for_any_json_with_brackets_and_escapes_in_strings():
    rng = random.Random(3)
    for _ in range(300):
        value = random_value(rng, 0)
        for text in (json.dumps(value), json.dumps(value, indent=1, ensure_ascii=False)):
            assert bounded_json.nesting_depth(text) == depth_of(value), text


@pytest.mark.parametrize('text, depth', [
    ('7', 0), ('[]', 1), ('{"a": [1, {"b": []}]}', 4), ('"[[[{{{"', 0),
    (r'["\"[[", "\\"]', 1),  # an escaped quote stays inside its string; an escaped backslash ends none
    ('["unterminated [[[', 1), ('[' * 100_000 + ']' * 100_000, 100_000),
])
def test_the_nesting_depth_counts_brackets_outside_strings(text, depth):
    assert bounded_json.nesting_depth(text) == depth


def test_a_json_file_out_of_bounds_is_one_error_naming_it_before_the_parser_sees_it(tmp_path):
    path = tmp_path / 'x.json'
    cases = [('[' * 65 + ']' * 65, 'arrays and objects nested 65 deep, more than the 64'),
             (' ' * 201, 'holds 201 bytes, more than such a file may hold (200 at most)'),
             ('{"a": ', 'Expecting value'), (b'"\xff"', "can't decode byte 0xff")]
    for text, said in cases:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(DataError) as error:
            bounded_json.load(str(path), 'do this', max_bytes=200)
        assert str(error.value).startswith(f'{path} is not readable (') and said in str(error.value)
        assert str(error.value).endswith('; do this')
    path.write_text('[' * 64 + ']' * 64)
    assert depth_of(bounded_json.load(str(path), 'do this')) == 64


def test_a_record_that_is_no_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / 'model.ckpt-1.history.json'
    os.mkfifo(fifo)  # open() would wait for a writer
    with pytest.raises(DataError, match='not a regular file'):
        bounded_json.load(str(fifo), 'do this')
    with pytest.raises(DataError, match='No such file or directory'):
        bounded_json.load(str(tmp_path / 'missing.json'), 'do this')


def test_dataset_json_is_read_within_the_same_bounds(tmp_path):
    (tmp_path / record_metadata.METADATA).write_text('{"description": ' + '[' * 1000 + ']' * 1000 + '}')
    with pytest.raises(DataError, match=r'dataset.json is not readable \(arrays and objects nested 1001 deep.*'
                                        r'; run python TFRecordsWriter.py again$'):
        record_metadata.read_metadata(str(tmp_path))


# --- the schema -------------------------------------------------------------------------

@pytest.fixture(scope='module')
def sound(trained_root):
    """The trained run's history.json as a record."""
    return json.loads(trained_root.joinpath(*RUN, 'history.json').read_text())


def test_every_record_a_run_writes_is_sound(trained_root, sound):
    run_dir = trained_root.joinpath(*RUN)
    assert record_schema.read(str(run_dir / 'history.json')) == sound
    assert [c.record() is not None for c in checkpoints.found(str(run_dir))] == [True, True]
    assert {'config', 'device', 'data', 'activation_statistics', 'best', 'test'} <= set(sound)


def test_the_schemas_names_are_those_the_writers_use():
    assert set(data_summary.RESIZING.values()) | {'bicubic'} <= set(record_schema.RESIZE_METHODS)
    assert (data_summary.KEY, self_normalisation.KEY) == (record_schema.DATA, record_schema.ACTIVATION_STATISTICS)


def edited(record, edit):
    copy = json.loads(json.dumps(record))
    edit(copy)
    return copy


SCHEMA_CASES = [  # (edit of a sound record, the start of what the line says)
    (lambda r: r.pop('epochs'), 'field epochs: missing, expected a list of epochs; retrain the run, or restore'),
    (set_field('epochs', {}), 'field epochs: {} is not a list of epochs'),
    (lambda r: r['epochs'][1].update(epoch=True), 'field epochs[1].epoch: true is not a whole number >= 1'),
    (lambda r: r['epochs'][0].update(train_loss='0.5'), 'field epochs[0].train_loss: "0.5" is not a number'),
    (lambda r: r['best'].pop('valid_loss'), 'field best.valid_loss: missing, expected a number'),
    (set_field('best.checkpoint', '/etc/passwd'), 'field best.checkpoint: "/etc/passwd" is not'),
    (set_field('best.checkpoint', 'best/../../x'), 'field best.checkpoint: "best/../../x" is not'),
    (set_field('best.checkpoint', '.'), 'field best.checkpoint: "." is not'),
    (lambda r: r['test'].pop('accuracy'), 'field test.accuracy: missing, expected a number'),
    (set_field('config.seed', '42'), "field config.seed: seed must be a whole number, got '42'; retrain the run, "
                                     "or restore the file from a copy"),
    (set_field('config.output_shape', 0), 'field config.output_shape: output_shape must be at least 2'),
    (set_field('device', 3), 'field device: 3 is not a text'),
    (set_field('data.dataset_name', 'svhn'), 'field data.dataset_name: "svhn" is not one of digits, mnist'),
    (set_field('data.dataset_name', 'mnist'), 'field data.image_shape: [8, 8, 1] is not [28, 28, 1]'),
    (set_field('data.image_shape', [8, 8, True]), 'field data.image_shape: [8, 8, true] is not [8, 8, 1]'),
    (set_field('data.pixel_max', 255), 'field data.pixel_max: 255 is not 16, the brightest level'),
    (set_field('data.mean', [1.0, 2.0, 3.0]), 'field data.mean: [1.0, 2.0, 3.0] is not one number in 0..16 per '
                                               'channel (1)'),
    (set_field('data.mean', [float('nan')]), 'field data.mean: [NaN] is not'),
    (set_field('data.std', [-1.0]), 'field data.std: [-1.0] is not one number above 0'),
    (set_field('data.resize', 'nearest'), 'field data.resize: "nearest" is not bicubic or central_view'),
    (set_field('data.classes', list(range(10))), 'field data.classes: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] is not a list'),
    (set_field('config.dataset_name', 'mnist'), 'field data.dataset_name: "digits" is not the dataset the run '
                                                 'trained on (config.dataset_name: "mnist")'),
    (set_field('activation_statistics.layers', [['conv1']]), 'field activation_statistics.layers: [["conv1"]] is'),
    (set_field('activation_statistics.epochs', []), 'field activation_statistics.epochs: [] is not a list'),
    (lambda r: r['activation_statistics']['epochs'][1].update(training=r['activation_statistics']['epochs'][1]
                                                              ['inference']),
     'field activation_statistics.epochs[1]: holds the modes ["inference", "training"], expected those of the '
     'first epoch'),
    (lambda r: r['activation_statistics']['epochs'][0]['inference']['mean'].pop(),
     'field activation_statistics.epochs[0].inference.mean: ['),
    (set_field('trained_by', 'process 1 on vm'), 'field trained_by: "process 1 on vm" is not a list of texts'),
    (set_field('trained_by', [7]), 'field trained_by: [7] is not a list of texts'),
]


@pytest.mark.parametrize('index', range(len(SCHEMA_CASES)))
def test_a_field_that_does_not_fit_the_schema_is_named_with_what_to_do(sound, index):
    edit, said = SCHEMA_CASES[index]
    with pytest.raises(DataError) as error:
        record_schema.check(edited(sound, edit), 'run/history.json')
    assert str(error.value).startswith(f'run/history.json: {said}'), str(error.value)
    top = said.split()[1].rstrip(':').split('.')[0].split('[')[0]
    if top not in ('epochs', 'config'):  # which go only with the run
        assert str(error.value).endswith(f'; retrain the run, or delete the field {top}')


@pytest.mark.parametrize('edit', [
    lambda r: r['epochs'][0].update(valid_loss=float('nan')),  # a figure of a diverging run
    lambda r: r.update(diverged='loss became nan', note_of_a_callback={'any': ['thing']}),
    lambda r: [r.pop(key) for key in ('config', 'device', 'best', 'test', 'data', 'activation_statistics')],
    lambda r: r['best'].update(checkpoint='best/./model.ckpt-2'),
])
def test_records_of_every_kind_a_run_may_leave_are_sound(sound, edit):
    record = edited(sound, edit)
    assert record_schema.check(record, 'history.json') is record


def test_a_record_that_is_no_object_is_named_as_a_whole():
    with pytest.raises(DataError, match=r'^h.json: field \(the record\): \[\] is not a JSON object'):
        record_schema.check([], 'h.json')
