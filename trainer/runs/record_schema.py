"""The one schema of a run's record (history.json in the run's folder, and
the `.history.json` beside each checkpoint), checked whenever a record is
read back: every command after training, resume and a sweep trust what it
says (which checkpoint is best, how to normalise an input, what the classes
are called), so a record damaged or edited by hand is one line naming the
file and the field, never a traceback, another folder's weights or a silent
wrong answer.

    {'epochs': [{'epoch': 1, 'train_loss': 0.52, ...}, ...],     the one field always there
     'config': {...}, 'device': 'CPU (2 cores)', 'diverged': '...',
     'best': {'epoch': 3, 'valid_loss': ..., 'valid_accuracy': ..., 'checkpoint': 'best/model.ckpt-3',
              'test_loss': ..., 'test_accuracy': ...},
     'test': {'epoch': 3, 'loss': ..., 'accuracy': ...},
     'trained_by': ['process 4242 on node7, worker 1 of 2 from epoch 1', ...],
     'data': {'dataset_name': 'digits', 'image_shape': [8, 8, 1], 'pixel_max': 16,
              'mean': [...], 'std': [...], 'resize': 'bicubic', 'classes': ['0', ...]},
     'activation_statistics': {'layers': [[name, kind], ...], 'images': 180,
                               'epochs': [{'epoch': 0, 'inference': {'mean': [...], 'variance': [...]}}]}}

Fields other than these are left as they are (a callback may add its own).
"""
import json
import math
import os
import re

from foundation import bounded_json
from foundation.data import loaders
from foundation.errors import ConfigError, DataError
from trainer.config import settings

EPOCHS, CONFIG, BEST, TEST, DATA = 'epochs', 'config', 'best', 'test', 'data'
ACTIVATION_STATISTICS = 'activation_statistics'
TRAINED_BY = 'trained_by'  # who trained the run from which epoch, one entry per start or resume
STATISTICS_MODES = ('inference', 'training')  # batch norm's modes, each measured where a network has it
RESIZE_METHODS = ('bicubic', 'central_view')  # how an image of another size becomes one of the data's
READ_BACK_KEYS = ('seed', 'output_shape')  # of a record's config: the splits of the digits, the outputs
UNREADABLE_REMEDY = 'retrain the run, or restore the file from a copy'
SHOWN_CHARACTERS = 60  # of a wrong value, in the message
MISSING = object()


class WrongField(Exception):
    """A field of the record that fails: its name and what is wrong with it."""

    def __init__(self, field, problem):
        super().__init__(field, problem)
        self.field, self.problem = field, problem


def read(path):
    """The checked record of the file at `path`; DataError naming the file
    (and the field) where it is unreadable, too large or too deeply nested
    (bounded_json), or not a sound record."""
    return check(bounded_json.load(path, UNREADABLE_REMEDY), path)


def check(record, path):
    """`record` once every field holds what it must and the fields agree;
    DataError '<path>: field <name>: <what is wrong>; <what to do>' for the
    first that does not."""
    try:
        check_fields(record)
    except WrongField as wrong:
        raise DataError(f'{path}: field {wrong.field}: {wrong.problem}; {remedy(wrong.field)}') from None
    return record


def remedy(field):
    """What to do about a wrong field: one the commands do without can go;
    the epochs and the config (which checks the network and chose the
    digits' splits) only with the run."""
    top = re.split(r'[.\[]', field)[0]
    deletable = top in OPTIONAL_FIELDS and top != CONFIG
    return f'retrain the run, or delete the field {top}' if deletable else UNREADABLE_REMEDY


# --- what a value may be -----------------------------------------------------------

def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value):
    return is_number(value) and math.isfinite(value)


def is_whole(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def is_object(value):
    return isinstance(value, dict)


def is_text(value):
    return isinstance(value, str)


def is_list_of(fits, length=None):
    return lambda value: (isinstance(value, list) and bool(value) and all(map(fits, value))
                          and (length is None or len(value) == length))


def is_path_inside(value):
    """A relative path that stays inside the folder it is relative to."""
    if not isinstance(value, str) or not value or '\0' in value or os.path.isabs(value):
        return False
    return '..' not in re.split(r'[/\\]', value) and os.path.normpath(value) != '.'


def shown(value):
    text = json.dumps(value)
    return text if len(text) <= SHOWN_CHARACTERS else text[:SHOWN_CHARACTERS - 3] + '...'


def expect(field, value, fits, expected):
    """WrongField unless `value` (MISSING: absent) fits."""
    if value is MISSING:
        raise WrongField(field, f'missing, expected {expected}')
    if not fits(value):
        raise WrongField(field, f'{shown(value)} is not {expected}')


def expect_object(field, value, keys, expected):
    """An object holding `keys`: checked, with `keys`' values (MISSING where absent)."""
    expect(field, value, is_object, expected)
    return [value.get(key, MISSING) for key in keys]


# --- the fields ----------------------------------------------------------------------

def check_fields(record):
    (epochs,) = expect_object('(the record)', record, [EPOCHS], 'a JSON object of epochs, config, best, ...')
    expect(EPOCHS, epochs, lambda v: isinstance(v, list), 'a list of epochs')
    for index, row in enumerate(epochs):
        check_epoch_row(row, f'{EPOCHS}[{index}]')
    for key, check_field in OPTIONAL_FIELDS.items():
        if key in record:
            check_field(record[key], key)
    check_agreement(record)


def check_epoch_row(row, field):
    (epoch,) = expect_object(field, row, ['epoch'], "an object of an epoch's figures")
    expect(f'{field}.epoch', epoch, lambda v: is_whole(v, 1), 'a whole number >= 1')
    for key, value in row.items():
        expect(f'{field}.{key}', value, is_number, 'a number')


def check_config(config, field):
    """An object; the keys the commands read back from it (the digits'
    splits, the network's outputs) as the key table takes them."""
    expect(field, config, is_object, "an object of the run's config keys")
    for key in READ_BACK_KEYS:
        if key in config:
            try:
                settings.KEYS[key].rule(key, config[key], config)
            except ConfigError as error:
                raise WrongField(f'{field}.{key}', str(error)) from None


def check_best(best, field):
    epoch, checkpoint = expect_object(field, best, ['epoch', 'checkpoint'],
                                      "an object of the best validation epoch's figures and checkpoint")
    expect(f'{field}.epoch', epoch, lambda v: is_whole(v, 1), 'a whole number >= 1')
    for key in ('valid_loss', 'valid_accuracy'):
        expect(f'{field}.{key}', best.get(key, MISSING), is_number, 'a number')
    for key in ('test_loss', 'test_accuracy'):  # once the run has ended
        if key in best:
            expect(f'{field}.{key}', best[key], is_number, 'a number')
    expect(f'{field}.checkpoint', checkpoint, is_path_inside,
           "a checkpoint's path inside the run's folder (best/model.ckpt-<epoch>)")


def check_test(test, field):
    epoch, loss, accuracy = expect_object(field, test, ['epoch', 'loss', 'accuracy'],
                                          "an object of the final weights' test figures")
    expect(f'{field}.epoch', epoch, is_whole, 'a whole number >= 0')
    expect(f'{field}.loss', loss, is_number, 'a number')
    expect(f'{field}.accuracy', accuracy, is_number, 'a number')


def check_data(data, field):
    """The data description (trainer/after_training/data_summary.py): what
    it takes from the dataset's table must be the table's, its statistics
    those of pixels of the data's levels."""
    name, shape, pixel_max, mean, std, resize, classes = expect_object(
        field, data, ['dataset_name', 'image_shape', 'pixel_max', 'mean', 'std', 'resize', 'classes'],
        'an object describing the data (dataset_name, image_shape, pixel_max, mean, std, ...)')
    expect(f'{field}.dataset_name', name, lambda v: is_text(v) and v in loaders.DATASETS,
           f"one of {', '.join(loaders.DATASETS)}")
    info = loaders.DATASETS[name]
    expect(f'{field}.image_shape', shape, lambda v: is_list_of(is_whole, 3)(v) and v == list(info.image_shape),
           f'{list(info.image_shape)}, the shape of the images of {name}')
    expect(f'{field}.pixel_max', pixel_max, lambda v: is_number(v) and v == info.pixel_max,
           f'{info.pixel_max}, the brightest level of the pixels of {name}')
    channels = info.image_shape[-1]
    expect(f'{field}.mean', mean, is_list_of(lambda v: is_finite(v) and 0 <= v <= pixel_max, channels),
           f'one number in 0..{pixel_max} per channel ({channels})')
    expect(f'{field}.std', std, is_list_of(lambda v: is_finite(v) and 0 < v <= pixel_max, channels),
           f'one number above 0 and at most {pixel_max} per channel ({channels})')
    expect(f'{field}.resize', resize, lambda v: v in RESIZE_METHODS, ' or '.join(RESIZE_METHODS))
    expect(f'{field}.classes', classes, is_list_of(is_text), 'a list of class names')


def check_activation_statistics(statistics, field):
    """Of the shape trainer/study/self_normalisation.py writes: a mean and
    a variance per layer for each mode, the same modes at every epoch."""
    layers, images, epochs = expect_object(field, statistics, ['layers', 'images', 'epochs'],
                                           'an object of layers, images and epochs')
    expect(f'{field}.layers', layers, is_list_of(is_list_of(is_text, 2)), 'a list of [name, kind] pairs')
    expect(f'{field}.images', images, lambda v: is_whole(v, 1), 'a whole number >= 1')
    expect(f'{field}.epochs', epochs, is_list_of(is_object), "a list of each epoch's figures")
    modes = [key for key in epochs[0] if key != 'epoch']
    for index, entry in enumerate(epochs):
        check_statistics_entry(entry, f'{field}.epochs[{index}]', modes, len(layers))


def check_statistics_entry(entry, field, modes, layers):
    expect(f'{field}.epoch', entry.get('epoch', MISSING), is_whole, 'a whole number >= 0')
    found = [key for key in entry if key != 'epoch']
    if not found or set(found) != set(modes) or not set(found) <= set(STATISTICS_MODES):
        raise WrongField(field, f"holds the modes {shown(found)}, expected those of the first epoch, "
                                f"each {' or '.join(STATISTICS_MODES)}")
    for mode in modes:
        mean, variance = expect_object(f'{field}.{mode}', entry[mode], ['mean', 'variance'],
                                       'an object of mean and variance')
        for stat, values in (('mean', mean), ('variance', variance)):
            expect(f'{field}.{mode}.{stat}', values, is_list_of(is_number, layers),
                   f'one number per layer ({layers})')


def check_cost(cost, field):
    """What the network costs (trainer/training/training_graph.network_cost)."""
    for key in ('parameters', 'multiply_adds', 'train_images'):
        value = expect_object(field, cost, [key], "an object of the network's parameters, "
                              "multiply-adds per image and training images")[0]
        expect(f'{field}.{key}', value, lambda v: is_whole(v, 0), 'a whole number >= 0')


def check_text(value, field):
    expect(field, value, is_text, 'a text')


def check_trained_by(value, field):
    """Who trained the run, one text per start or resume (folder.note_trainer)."""
    expect(field, value, is_list_of(is_text), 'a list of texts naming who trained the run')


def check_agreement(record):
    """The data's description is of the dataset the config trained on, with
    a class name for each output of the network."""
    data, config = record.get(DATA), record.get(CONFIG)
    if data is None or config is None:
        return
    if 'dataset_name' in config and config['dataset_name'] != data['dataset_name']:
        raise WrongField(f'{DATA}.dataset_name', f"{shown(data['dataset_name'])} is not the dataset the run "
                                                 f"trained on ({CONFIG}.dataset_name: {shown(config['dataset_name'])})")
    outputs = config.get('output_shape')
    if outputs is not None and len(data['classes']) != outputs:
        raise WrongField(f'{DATA}.classes', f"{len(data['classes'])} class names for the {outputs} outputs of "
                                            f"the network ({CONFIG}.output_shape)")


OPTIONAL_FIELDS = {CONFIG: check_config, 'device': check_text, 'tensorflow': check_text, 'diverged': check_text,
                   BEST: check_best, TEST: check_test, DATA: check_data,
                   ACTIVATION_STATISTICS: check_activation_statistics, 'cost': check_cost,
                   TRAINED_BY: check_trained_by}
