"""The one table of configuration keys (KEYS: each key's check and tags), and
constant.config plus `key=value` overrides turned into a checked config.

Every rule here runs before any graph is built, and a broken rule stops with
one line that names the key, what was wrong and the valid choices. A rule
also bounds a value by what the code it reaches takes (TensorFlow's int32
attributes, scikit-learn's seeds, glibc, file names), so that a value it
passes never fails deeper, and returns the value a run uses: a float key
given as 1 gives 1.0. Nothing here imports TensorFlow until the config is
fitted to the machine.
"""
import ast
import collections
import difflib
import math
import numbers
import os
import re
import reprlib
import warnings

import constant
from foundation import machine, regular_files
from foundation.data import loaders
from foundation.errors import ConfigError
from foundation.networks import architecture, pretrained

# Tags of a key, in KEYS:
MENU = 'menu'        # lists the choices of another key: fixed, edited in constant.py only
GRAPH = 'graph'      # shapes the network or its optimiser: a checkpoint restores only into the same
NAME = 'name'        # part of every run's base name (resnet50_se_selu)
DATASET = 'dataset'  # given by the dataset, whose folder holds the run
AUTO = 'auto'        # may be 'auto': decided for the machine found
HOW = 'how'          # changes how a run goes or where its files go, not its results
# Conditions: a key so tagged matters only for ...
SE = 'se'            # ... a model with SE blocks (use_se)
CUSTOM = 'custom'    # ... the custom model
RESNET = 'resnet'    # ... ResNet50
SELU = 'selu'        # ... SELU
IMAGENET = 'imagenet'  # ... the imagenet dataset
CONDITIONS = {SE: lambda cfg: cfg['use_se'], CUSTOM: lambda cfg: cfg['model'] == 'custom_model',
              RESNET: lambda cfg: cfg['model'] == 'resnet50',
              SELU: lambda cfg: cfg['activation_fn'] == 'selu',
              IMAGENET: lambda cfg: cfg['dataset_name'] == 'imagenet'}

Key = collections.namedtuple('Key', 'rule tags')

INT32_MAX = 2**31 - 1  # TensorFlow's int32 attributes (strides, batch sizes) and C ints
SEED_MAX = 2**32 - 1   # numpy's and scikit-learn's random_state
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest M_MMAP_THRESHOLD on 64-bit machines
# Files are named after a run (<name>.previous, .<name>.XXXXXXXX.partial.pdf): with
# the longest of those additions a name stays under the 255 bytes of a file name.
RUN_NAME_MAX = 200
DEVICE = re.compile(r'/(device:)?(cpu|gpu):\d+', re.IGNORECASE)  # one device, as tf.device takes it
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _shown(value):
    """repr(value), cut short: a line quotes a value of any length."""
    return _REPR.repr(value)


# --- rules: (key, value, cfg) -> the value to use, or ConfigError ---------------

def _choice(menu_key):
    def check(key, value, cfg):
        choices = list(cfg[menu_key])
        if value not in choices:
            raise ConfigError(f"{key}={_shown(value)} is not valid; choose one of: {', '.join(choices)}")
        return value
    return check


def _is_whole(value, low, high):
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and low <= value <= high)


def _integer(low, high=INT32_MAX):
    def check(key, value, cfg):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{key} must be a whole number, got {_shown(value)}")
        _in_range(key, value, low, high)
        return int(value)
    return check


def _number(low, high=None, low_open=True):
    """A finite float (a whole number taken as one) from `low` (excluded
    if `low_open`) up to `high`."""
    def check(key, value, cfg):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {_shown(value)}")
        if low_open and value <= low:
            raise ConfigError(f"{key} must be greater than {low}, got {_shown(value)}")
        _in_range(key, value, low, high)
        return float(value)
    return check


def _in_range(key, value, low, high):
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ConfigError(f"{key} must be at least {low}{upper}, got {_shown(value)}")


def _boolean(key, value, cfg):
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be True or False, got {_shown(value)}")
    return value


def _auto_or(*choices):
    """'auto' (decided for the machine found, see machine.resolve_auto) or one of `choices`."""
    def check(key, value, cfg):
        if value != 'auto' and (isinstance(value, bool) != isinstance(choices[0], bool)
                                or value not in choices):
            raise ConfigError(f"{key}={_shown(value)} is not valid; choose one of: "
                              f"{', '.join(map(str, ('auto', *choices)))}")
        return value
    return check


def _one_of(*choices):
    def check(key, value, cfg):
        if isinstance(value, bool) or value not in choices:
            raise ConfigError(f"{key}={_shown(value)} is not valid; choose one of: {', '.join(choices)}")
        return value
    return check


def _open_unit(key, value, cfg):
    """A number strictly between 0 and 1, as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ConfigError(f"{key} must be a number between 0 and 1 (both excluded), like 0.999, got {_shown(value)}")
    return float(value)


def _fraction(key, value, cfg):
    """A rate in [0, 1), as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ConfigError(f"{key} must be a number from 0 up to (not including) 1, got {_shown(value)}")
    return float(value)


def _whole_numbers(low, high=INT32_MAX, increasing=False):
    """A non-empty list of distinct whole numbers in [low, high] (sorted if `increasing`)."""
    def check(key, value, cfg):
        ok = (isinstance(value, (list, tuple)) and value
              and all(_is_whole(v, low, high) for v in value)
              and len(set(value)) == len(value)
              and (not increasing or list(value) == sorted(value)))
        if not ok:
            order = "increasing " if increasing else ""
            raise ConfigError(f"{key} must be a list of distinct {order}whole numbers from {low} "
                              f"to {high}, got {_shown(value)}")
        return [int(v) for v in value]
    return check


FILE_NAME_CHARACTERS = set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-')


def _file_name(key, value, cfg):
    _text(key, value, cfg)
    if not set(value) <= FILE_NAME_CHARACTERS or value.startswith('.'):
        raise ConfigError(f"{key}={_shown(value)} may hold only letters, digits and . _ + - "
                          f"(it names files and folders)")
    if len(value) > RUN_NAME_MAX:
        raise ConfigError(f"{key} has {len(value)} characters; at most {RUN_NAME_MAX} fit into "
                          f"the names of its files")
    return value


def _device(key, value, cfg):
    _text(key, value, cfg)
    if not DEVICE.fullmatch(value):
        raise ConfigError(f"{key}={_shown(value)} names no device; write /device:GPU:<n> or "
                          f"/device:CPU:0")
    return value


def _grids(key, value, cfg):
    """{name: grid}, a grid being {key: [values]} or a list of such."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{key} must map grid names to grids, like "
                          f"{{'mine': {{'model': ['custom_model', 'resnet50']}}}}")
    for name, grid in value.items():
        parts = grid if isinstance(grid, (list, tuple)) else [grid]
        if not parts:
            raise ConfigError(f"{key}[{name!r}] is an empty list: it would run nothing")
        for part in parts:
            if not isinstance(part, dict) or not part or not all(
                    isinstance(v, (list, tuple)) and v for v in part.values()):
                raise ConfigError(f"{key}[{name!r}] must be {{key: [values]}} or a list of "
                                  f"such, none empty; got {part!r}")
            bad = sorted(k for k in part if k not in KEYS or k in MENU_KEYS)
            if bad:
                raise ConfigError(f"{key}[{name!r}] varies {', '.join(map(repr, bad))}, which "
                                  f"cannot be set per run; valid keys: {', '.join(settable_keys())}")
    return value


def _as_typed(text):
    """`text` with each byte of it that is no UTF-8 shown as \\xff, as the user typed it."""
    try:
        return os.fsencode(text).decode('utf-8', 'backslashreplace')
    except UnicodeEncodeError:  # a surrogate that stands for no byte (given from Python)
        return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def _text(key, value, cfg):
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty text, got {_shown(value)}")
    try:
        value.encode('utf-8')
    except UnicodeEncodeError:
        # Bytes of the command line that are no UTF-8 arrive as lone surrogates
        # (\xff as \udcff), which neither the run's files and console lines
        # (UTF-8) nor TensorFlow's file names can hold: a traceback later.
        raise ConfigError(f"{key}={_as_typed(value)} holds bytes that are not UTF-8, which the run's "
                          f"files and TensorFlow cannot take; rename it in UTF-8 or give another path") from None
    return value


def _folder(key, value, cfg):
    """A folder's path: one that names a file, a device or a FIFO is refused
    here, where reading files "in" it would say they are missing, or that it
    cannot be written."""
    _text(key, value, cfg)
    kind = regular_files.not_a_folder(value)
    if kind:
        raise ConfigError(f'{key}={value} is {kind}, not a folder: give a folder')
    return value


def _optional(check):
    def optional(key, value, cfg):
        return None if value is None else check(key, value, cfg)
    return optional


def _menu(key, value, cfg):
    if not value:
        raise ConfigError(f"{key} must list at least one choice")
    return value


def _pool_size(key, value, cfg):
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(_is_whole(v, 1, INT32_MAX) for v in value)):
        raise ConfigError(f"{key} must be two whole numbers from 1 to {INT32_MAX} like [2, 2], "
                          f"got {_shown(value)}")
    return [int(v) for v in value]


def _step_range(key, value, cfg):
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(_is_whole(v, 1, INT32_MAX) for v in value) or value[0] > value[1]):
        raise ConfigError(f"{key} must be [first, last], optimiser steps from 1 with first <= last, "
                          f"like [10, 15], got {_shown(value)}")
    return [int(v) for v in value]


def _shard_counts(key, value, cfg):
    if (not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and _is_whole(v, 1, INT32_MAX) for k, v in value.items())):
        raise ConfigError(f"{key} must map split names to shard counts from 1 to {INT32_MAX}, like "
                          f"{{'train': 8, 'valid': 2, 'test': 2}}, got {_shown(value)}")
    return value


def _existing_file(hint=''):
    def check(key, value, cfg):
        _text(key, value, cfg)
        try:
            found = regular_files.present(value)
        except regular_files.UnfitFile as error:  # /dev/zero, a FIFO: there, but no file
            raise ConfigError(f"{key}={value!r} {error.reason}{hint}") from None
        if not found:
            raise ConfigError(f"{key}={value!r}: no such file{hint}")
        return value
    return check


def _keras_weights(key, value, cfg):
    """Keras' ResNet50 weights file; its layers and shapes are checked now,
    before anything is built (pretrained.read_trunk reads no data for it)."""
    _existing_file(f"; download Keras' {pretrained.KERAS_FILE} (see the README)")(key, value, cfg)
    pretrained.read_trunk(value, values=False)
    return value


def _dataset_name(key, value, cfg):
    _choice('datasets')(key, value, cfg)
    if value not in loaders.DATASETS:
        raise ConfigError(f"{key}={_shown(value)} has no loader; choose one of: {', '.join(loaders.DATASETS)}")
    return value


# --- the table: every key of constant.config, once ----------------------------

KEYS = {
    'datasets': Key(_menu, {MENU}),
    'dataset_name': Key(_dataset_name, {GRAPH, DATASET}),
    'models': Key(_menu, {MENU}),
    'model': Key(_choice('models'), {GRAPH, NAME}),
    'activation_functions': Key(_menu, {MENU}),
    'activation_fn': Key(_choice('activation_functions'), {GRAPH, NAME}),
    'use_se': Key(_boolean, {GRAPH, NAME}),
    'se_r': Key(_integer(1), {GRAPH, SE}),
    'se_squeeze': Key(_one_of('avg', 'max'), {GRAPH, SE}),
    'se_excitation': Key(_one_of('sigmoid', 'tanh', 'relu'), {GRAPH, SE}),
    'se_integration': Key(_one_of('standard', 'pre', 'post', 'identity'), {GRAPH, SE, RESNET}),
    'se_stages': Key(_whole_numbers(2, 5), {GRAPH, SE, RESNET}),
    'selu_residual_scale': Key(_number(0.0, 1.0), {GRAPH, RESNET, SELU}),
    'dropout': Key(_fraction, set()),
    'output_shape': Key(_integer(2), {GRAPH, DATASET}),
    'pool_size': Key(_pool_size, {GRAPH, CUSTOM}),
    'strides': Key(_integer(1), {GRAPH, CUSTOM}),
    'init_weights': Key(_optional(_keras_weights), {RESNET}),  # the start, not the graph
    'optimizer': Key(_one_of('adam', 'adamw', 'momentum', 'nesterov'), {GRAPH}),  # Adam's slots are not momentum's
    'momentum': Key(_fraction, set()),
    'learning_rate': Key(_number(0.0), set()),
    'lr_schedule': Key(_one_of('exponential', 'piecewise', 'cosine'), set()),
    'decay_steps': Key(_integer(1), set()),
    'decay_base': Key(_number(0.0, 1.0), set()),
    'lr_boundaries': Key(_whole_numbers(1, increasing=True), set()),
    'lr_factor': Key(_number(0.0, 1.0), set()),
    # Training recipes: those that change results when on are part of the run's name (constant.NAME_PARTS).
    'warmup_epochs': Key(_number(0.0, low_open=False), {NAME}),
    'plateau_patience': Key(_optional(_integer(1)), {NAME, GRAPH}),  # the rate's scale is a variable
    'plateau_factor': Key(_number(0.0, 1.0), set()),
    'early_stopping_patience': Key(_optional(_integer(1)), {NAME}),
    'min_delta': Key(_number(0.0, low_open=False), set()),
    'weight_decay': Key(_number(0.0, low_open=False), set()),
    'clip_grad_norm': Key(_optional(_number(0.0)), {NAME}),
    'ema_decay': Key(_optional(_open_unit), {NAME, GRAPH}),  # its shadow weights are variables
    'label_smoothing': Key(_fraction, set()),
    'batch_size': Key(_integer(1), set()),
    'augment': Key(_boolean, set()),
    'mixup_alpha': Key(_optional(_number(0.0)), {NAME}),
    'cutmix_alpha': Key(_optional(_number(0.0)), {NAME}),
    'max_epochs': Key(_integer(1), {HOW}),
    # Quick runs: part of the run's name (constant.run_name), never mixed with full runs.
    'train_images': Key(_optional(_integer(1)), {NAME}),
    'max_steps': Key(_optional(_integer(1)), {NAME}),
    'overfit_batches': Key(_optional(_integer(1)), {NAME}),
    'seed': Key(_integer(0, SEED_MAX), set()),
    'deterministic': Key(_boolean, {HOW}),  # the same results, bit for bit
    'log_every': Key(_integer(1), {HOW}),
    'eval_batch_size': Key(_integer(1), {HOW}),
    'profile_steps': Key(_optional(_step_range), {HOW}),
    'keep_checkpoints': Key(_integer(1), {HOW}),
    'keep_earlier_runs': Key(_integer(0), {HOW}),
    'resume': Key(_boolean, {HOW}),
    'run_name': Key(_optional(_file_name), {HOW}),
    'datasets_root': Key(_folder, {HOW}),
    'data_dir': Key(_optional(_folder), {HOW}),
    'download': Key(_boolean, {HOW}),
    'excitation_split': Key(_one_of('train', 'valid', 'test'), {HOW}),
    'cam_images': Key(_integer(1), {HOW}),
    'shuffle_buffer': Key(_integer(1), set()),
    'skip_bad_records': Key(_boolean, set()),
    'train_eval_images': Key(_optional(_integer(1)), set()),
    'resize_batch_size': Key(_integer(1), {HOW}),
    'tfrecord_shards': Key(_optional(_shard_counts), {HOW}),
    'malloc_mmap_threshold': Key(_optional(_integer(4096, MMAP_THRESHOLD_MAX)), {HOW}),
    'one_pass': Key(_boolean, {HOW}),
    'imagenet_dir': Key(_optional(_folder), {HOW}),
    'imagenet_metadata_file': Key(_optional(_existing_file()), {HOW}),
    'imagenet_bbox_file': Key(_optional(_existing_file()), {HOW}),
    'imagenet_classes': Key(_one_of('official', 'present'), {GRAPH, IMAGENET}),  # what each output means
    'experiment_grids': Key(_grids, {MENU}),
    'experiment_grid': Key(_choice('experiment_grids'), {HOW}),
    'experiment_seeds': Key(_optional(_whole_numbers(0, SEED_MAX)), {HOW}),
    'max_runs': Key(_optional(_integer(1)), {HOW}),
    'workers': Key(_integer(1, 1024), {HOW}),
    'worker_index': Key(_optional(_integer(0)), {HOW}),
    'num_workers': Key(_optional(_integer(1)), {HOW}),
    'checkpoint': Key(_text, {HOW}),  # 'best', 'newest' or a path: trained_run.find checks it
    'eval_split': Key(_one_of('train', 'valid', 'test'), {HOW}),
    'top_k': Key(_integer(1), {HOW}),
    'misclassified_images': Key(_integer(0, 400), {HOW}),  # a grid of 20 x 20 at most
    'device': Key(_device, {HOW}),
    'num_gpus': Key(_integer(1), set()),
    'peer_wait_seconds': Key(_number(0.0, low_open=False), {HOW}),
    'gpu_memory_growth': Key(_boolean, {HOW}),
    'gpu_memory_fraction': Key(_optional(_number(0.0, 1.0)), {HOW}),
    'log_device_placement': Key(_boolean, {HOW}),
    'data_format': Key(_auto_or('NHWC', 'NCHW'), {AUTO}),
    # not GRAPH: the weights are float32 in both precisions (weights.restore)
    'mixed_precision': Key(_auto_or(True, False), {AUTO}),
    'xla': Key(_auto_or(True, False), {AUTO}),
}


def keys_tagged(*tags):
    """The keys that carry every one of `tags`, in table order."""
    return tuple(k for k, key in KEYS.items() if set(tags) <= key.tags)


MENU_KEYS = keys_tagged(MENU)


def settable_keys():
    """The keys a user can set on the command line, sorted."""
    return sorted(set(KEYS) - set(MENU_KEYS))


def applies(key, cfg):
    """Whether `key` matters for cfg's network (see the condition tags)."""
    return all(CONDITIONS[tag](cfg) for tag in KEYS[key].tags & set(CONDITIONS))


def graph_signature(cfg):
    """The keys that shape cfg's network and its optimiser, with their values:
    a checkpoint restores only into the same."""
    return {k: cfg[k] for k in keys_tagged(GRAPH) if applies(k, cfg)}


def saved_config(cfg):
    """What a run records of its config: every key but the menus."""
    return {k: v for k, v in cfg.items() if k not in MENU_KEYS}


# --- reading and checking a config ------------------------------------------------

def parse_value(text):
    """A Python literal (1e-3, True, [2, 2], None), else the text itself."""
    lowered = text.strip().lower()
    if lowered in ('true', 'false'):
        return lowered == 'true'
    if lowered == 'none':
        return None
    try:
        # A path such as model.ckpt-2.index is text; Python's parser would
        # warn on its way to saying so ('invalid decimal literal').
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', SyntaxWarning)
            return ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):  # deep nesting: -----1
        return text


def parse_overrides(args, known_keys):
    """['key=value', ...] -> {key: value}; refuses unknown and fixed keys,
    naming only the keys a user can set."""
    overrides = {}
    settable = sorted(set(known_keys) - set(MENU_KEYS))
    for arg in args:
        key, sep, text = arg.partition('=')
        if not sep or not key:
            raise ConfigError(f"argument {arg!r} is not key=value (example: model=resnet50); "
                              f"--help lists the keys")
        if key in MENU_KEYS:
            raise ConfigError(f"{key} lists the choices and cannot be overridden; edit constant.py to change it")
        if key not in settable:
            close = difflib.get_close_matches(key, settable, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key!r}{hint}; valid keys: {', '.join(settable)}")
        overrides[key] = parse_value(text)
    return overrides


def validate(cfg, checked=()):
    """Checks every key (but those of `checked`, whose values were checked
    before) and the combinations; returns cfg or raises ConfigError."""
    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(KEYS))}")
    missing = sorted(set(KEYS) - set(cfg))
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(missing)} in constant.config")
    for key, entry in KEYS.items():
        if key not in checked:
            cfg[key] = entry.rule(key, cfg[key], cfg)
    _check_output_shape(cfg)
    _check_quick_run(cfg)
    _check_recipe(cfg)
    _check_workers(cfg)
    if cfg['init_weights'] and not applies('init_weights', cfg):
        raise ConfigError(f"init_weights holds ResNet-50's weights and {cfg['model']} is another "
                          f"network; set model=resnet50, or init_weights=None")
    if cfg['use_se']:
        for key in keys_tagged(SE):
            if not applies(key, cfg) and cfg[key] != constant.config[key]:
                raise ConfigError(f"{key}={cfg[key]!r} applies to resnet50's residual blocks and "
                                  f"{cfg['model']} has none; set model=resnet50, or "
                                  f"{key}={constant.config[key]!r}")
        channels = min(architecture.se_block_channels(cfg['model'], architecture.squeeze_excite_of(cfg)))
        if cfg['se_r'] > channels:
            raise ConfigError(f"se_r={cfg['se_r']} leaves an SE block of {cfg['model']} with fewer "
                              f"than one hidden unit ({channels} channels); choose se_r <= {channels}")
    return cfg


def _check_output_shape(cfg):
    """output_shape against the dataset's classes; with imagenet_classes=
    'present' the records tell (input_source.open_dataset checks them)."""
    name, classes = cfg['dataset_name'], loaders.DATASETS[cfg['dataset_name']].num_classes
    present = name == 'imagenet' and cfg['imagenet_classes'] == 'present'
    if cfg['output_shape'] != classes and not present:
        other = ", or imagenet_classes='present'" if name == 'imagenet' else ''
        raise ConfigError(f"output_shape={cfg['output_shape']} but {name} has {classes} classes; "
                          f"set output_shape={classes}{other}")


def _check_quick_run(cfg):
    """train_images, max_steps and overfit_batches against each other and the
    keys they touch (the training split's size is checked when it is opened:
    input_source.training_part)."""
    images, overfit, classes = cfg['train_images'], cfg['overfit_batches'], cfg['output_shape']
    if images is not None and images < classes:
        raise ConfigError(f"train_images={images} is fewer than the {classes} classes of "
                          f"{cfg['dataset_name']}: a stratified sample needs an image of each; choose "
                          f"train_images >= {classes}")
    if images is not None and cfg['batch_size'] > images:
        raise ConfigError(f"batch_size={cfg['batch_size']} is more than train_images={images}; choose "
                          f"batch_size <= {images}")
    if overfit is None:
        return
    if images is not None:
        raise ConfigError(f"overfit_batches={overfit} trains on the first {overfit} batch(es) of the "
                          f"training split, which train_images would sample; leave train_images out")
    if cfg['max_steps'] is not None:
        raise ConfigError(f"overfit_batches={overfit} trains max_epochs x {overfit} steps; leave "
                          f"max_steps out and set max_epochs")
    if cfg['label_smoothing']:
        raise ConfigError(f"label_smoothing={cfg['label_smoothing']} keeps the loss of every image above "
                          f"zero, which the overfit check looks for; set label_smoothing=0 with "
                          f"overfit_batches")


def _check_recipe(cfg):
    """The training recipe's keys against the run's length and each other."""
    if cfg['warmup_epochs'] > cfg['max_epochs']:
        raise ConfigError(f"warmup_epochs={cfg['warmup_epochs']:g} is beyond max_epochs={cfg['max_epochs']}: the "
                          f"rate would never reach the schedule's; choose warmup_epochs <= {cfg['max_epochs']}")
    mixing = [k for k in ('mixup_alpha', 'cutmix_alpha') if cfg[k] is not None]
    if mixing and cfg['overfit_batches'] is not None:
        raise ConfigError(f"{mixing[0]}={cfg[mixing[0]]:g} mixes the batches the overfit check wants to fit "
                          f"as they are; leave {' and '.join(mixing)} out with overfit_batches")


def _check_workers(cfg):
    """A sweep's fixed share (worker_index of num_workers) against workers=N."""
    index, count = cfg['worker_index'], cfg['num_workers']
    if (index is None) != (count is None):
        raise ConfigError(f"worker_index={index} and num_workers={count} go together: give both, or neither")
    if index is not None and index >= count:
        raise ConfigError(f"worker_index={index} is not one of num_workers={count}'s shares; "
                          f"choose 0 to {count - 1}")
    if index is not None and cfg['workers'] > 1:
        raise ConfigError(f"workers={cfg['workers']} starts workers that share every run, and "
                          f"worker_index={index} is one worker's fixed share; leave one of them out")


def checked_config(args=(), base=None, checked=()):
    """constant.config (or `base`) with the `key=value` args applied and
    validated (the keys of `checked` as they are), its 'auto' options left
    undecided: no TensorFlow needed."""
    cfg = dict(constant.config if base is None else base)
    cfg.update(parse_overrides(args, set(cfg)))
    return validate(cfg, checked)


def load_config(args=(), base=None):
    """checked_config, fitted to this machine (machine.fit_to_machine)."""
    return machine.fit_to_machine(checked_config(args, base))
