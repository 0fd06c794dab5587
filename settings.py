"""Turns constant.config plus `key=value` overrides into a checked config.

Every rule here runs before any graph is built, and a broken rule stops with
one line that names the key, what was wrong and the valid choices.
"""
import ast
import difflib
import numbers

import constant
import loaders


class ConfigError(ValueError):
    """A key or value of the configuration that cannot work."""


# Keys that list the choices of another key: fixed, not overridable.
MENU_KEYS = ('datasets', 'models', 'activation_functions', 'experiment_grids')


def _choice(menu_key):
    def check(key, value, cfg):
        choices = list(cfg[menu_key])
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return check


def _integer(low, high=None):
    def check(key, value, cfg):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        _in_range(key, value, low, high)
    return check


def _number(low, high=None, low_open=True):
    def check(key, value, cfg):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if low_open and value <= low:
            raise ConfigError(f"{key} must be greater than {low}, got {value!r}")
        _in_range(key, value, low, high)
    return check


def _in_range(key, value, low, high):
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise ConfigError(f"{key} must be at least {low}{upper}, got {value!r}")


def _boolean(key, value, cfg):
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be True or False, got {value!r}")


def _auto_or(*choices):
    """'auto' (decided for the machine found, see resolve_auto) or one of `choices`."""
    def check(key, value, cfg):
        if value != 'auto' and (isinstance(value, bool) != isinstance(choices[0], bool)
                                or value not in choices):
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: "
                              f"{', '.join(map(str, ('auto', *choices)))}")
    return check


def _one_of(*choices):
    def check(key, value, cfg):
        if isinstance(value, bool) or value not in choices:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")
    return check


def _fraction(key, value, cfg):
    """A rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ConfigError(f"{key} must be a number from 0 up to (not including) 1, got {value!r}")


def _whole_numbers(low, high=None, increasing=False):
    """A non-empty list of distinct whole numbers in [low, high] (sorted if `increasing`)."""
    def check(key, value, cfg):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        ok = (isinstance(value, (list, tuple)) and value
              and all(isinstance(v, int) and not isinstance(v, bool) and v >= low
                      and (high is None or v <= high) for v in value)
              and len(set(value)) == len(value)
              and (not increasing or list(value) == sorted(value)))
        if not ok:
            order = "increasing " if increasing else ""
            raise ConfigError(f"{key} must be a list of distinct {order}whole numbers {bound}, "
                              f"got {value!r}")
    return check


def _file_name(key, value, cfg):
    _text(key, value, cfg)
    if not set(value) <= FILE_NAME_CHARACTERS or value.startswith('.'):
        raise ConfigError(f"{key}={value!r} may hold only letters, digits and . _ + - "
                          f"(it names files and folders)")


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
            bad = sorted(k for k in part if k not in RULES or k in MENU_KEYS)
            if bad:
                raise ConfigError(f"{key}[{name!r}] varies {', '.join(map(repr, bad))}, which "
                                  f"cannot be set per run; valid keys: "
                                  f"{', '.join(sorted(set(RULES) - set(MENU_KEYS)))}")


def _text(key, value, cfg):
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty text, got {value!r}")


def _optional(check):
    def optional(key, value, cfg):
        if value is not None:
            check(key, value, cfg)
    return optional


def _menu(key, value, cfg):
    if not value:
        raise ConfigError(f"{key} must list at least one choice")


def _pool_size(key, value, cfg):
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise ConfigError(f"{key} must be two whole numbers >= 1 like [2, 2], got {value!r}")


def _shard_counts(key, value, cfg):
    if (not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in value.items())):
        raise ConfigError(f"{key} must map split names to shard counts >= 1, like "
                          f"{{'train': 8, 'valid': 2, 'test': 2}}, got {value!r}")


def _dataset_name(key, value, cfg):
    _choice('datasets')(key, value, cfg)
    if value not in loaders.DATASETS:
        raise ConfigError(f"{key}={value!r} has no loader; choose one of: {', '.join(loaders.DATASETS)}")


RULES = {
    'datasets': _menu,
    'dataset_name': _dataset_name,
    'models': _menu,
    'model': _choice('models'),
    'activation_functions': _menu,
    'activation_fn': _choice('activation_functions'),
    'use_se': _boolean,
    'se_r': _integer(1),
    'se_squeeze': _one_of('avg', 'max'),
    'se_excitation': _one_of('sigmoid', 'tanh', 'relu'),
    'se_integration': _one_of('standard', 'pre', 'post', 'identity'),
    'se_stages': _whole_numbers(2, 5),
    'selu_residual_scale': _number(0.0, 1.0),
    'dropout': _fraction,
    'output_shape': _integer(2),
    'pool_size': _pool_size,
    'strides': _integer(1),
    'optimizer': _one_of('adam', 'momentum'),
    'momentum': _fraction,
    'learning_rate': _number(0.0),
    'lr_schedule': _one_of('exponential', 'piecewise', 'cosine'),
    'decay_steps': _integer(1),
    'decay_base': _number(0.0, 1.0),
    'lr_boundaries': _whole_numbers(1, increasing=True),
    'lr_factor': _number(0.0, 1.0),
    'weight_decay': _number(0.0, low_open=False),
    'label_smoothing': _fraction,
    'batch_size': _integer(1),
    'max_epochs': _integer(1),
    'seed': _integer(0),
    'log_every': _integer(1),
    'eval_batch_size': _integer(1),
    'keep_checkpoints': _integer(1),
    'resume': _boolean,
    'run_name': _optional(_file_name),
    'datasets_root': _text,
    'data_dir': _optional(_text),
    'download': _boolean,
    'shuffle_buffer': _integer(1),
    'augment': _boolean,
    'skip_bad_records': _boolean,
    'train_eval_images': _optional(_integer(1)),
    'resize_batch_size': _integer(1),
    'tfrecord_shards': _optional(_shard_counts),
    'malloc_mmap_threshold': _optional(_integer(4096)),
    'one_pass': _boolean,
    'imagenet_dir': _optional(_text),
    'experiment_grids': _grids,
    'experiment_grid': _choice('experiment_grids'),
    'experiment_seeds': _optional(_whole_numbers(0)),
    'device': _text,
    'num_gpus': _integer(1),
    'gpu_memory_growth': _boolean,
    'gpu_memory_fraction': _optional(_number(0.0, 1.0)),
    'log_device_placement': _boolean,
    'data_format': _auto_or('NHWC', 'NCHW'),
    'mixed_precision': _auto_or(True, False),
    'xla': _auto_or(True, False),
}
AUTO_KEYS = ('data_format', 'mixed_precision', 'xla')

FILE_NAME_CHARACTERS = set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-')
RESNET_ONLY_SE_KEYS = ('se_integration', 'se_stages')  # the custom model has no residual stages


def se_channels(cfg):
    """The fewest channels any SE block of the configured model sees:
    se_r may not exceed it (a block needs one hidden unit)."""
    if cfg['model'] == 'custom_model':
        return 64
    stages = cfg['se_stages']
    if cfg['se_integration'] == 'pre':  # SE on the block's input: 64 maps at stage 2's first
        return 64 if 2 in stages else 256 * 2 ** (min(stages) - 3)
    return 256 * 2 ** (min(stages) - 2)  # on the block's 4m output maps


def parse_value(text):
    """A Python literal (1e-3, True, [2, 2], None), else the text itself."""
    lowered = text.strip().lower()
    if lowered in ('true', 'false'):
        return lowered == 'true'
    if lowered == 'none':
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(args, known_keys):
    """['key=value', ...] -> {key: value}; refuses unknown and fixed keys."""
    overrides = {}
    for arg in args:
        key, sep, text = arg.partition('=')
        if not sep or not key:
            raise ConfigError(f"argument {arg!r} is not key=value (example: python main.py model=resnet50)")
        if key not in known_keys:
            close = difflib.get_close_matches(key, known_keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key!r}{hint}; valid keys: {', '.join(sorted(known_keys))}")
        if key in MENU_KEYS:
            raise ConfigError(f"{key} lists the choices and cannot be overridden; edit constant.py to change it")
        overrides[key] = parse_value(text)
    return overrides


def validate(cfg):
    """Checks every key and the combinations; returns cfg or raises ConfigError."""
    unknown = sorted(set(cfg) - set(RULES))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(RULES))}")
    missing = sorted(set(RULES) - set(cfg))
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(missing)} in constant.config")
    for key, rule in RULES.items():
        rule(key, cfg[key], cfg)
    classes = loaders.DATASETS[cfg['dataset_name']].num_classes
    if cfg['output_shape'] != classes:
        raise ConfigError(f"output_shape={cfg['output_shape']} but {cfg['dataset_name']} has "
                          f"{classes} classes; set output_shape={classes}")
    if cfg['use_se'] and cfg['model'] != 'resnet50':
        for key in RESNET_ONLY_SE_KEYS:
            if cfg[key] != constant.config[key]:
                raise ConfigError(f"{key}={cfg[key]!r} applies to resnet50's residual blocks and "
                                  f"{cfg['model']} has none; set model=resnet50, or "
                                  f"{key}={constant.config[key]!r}")
    channels = se_channels(cfg)
    if cfg['use_se'] and cfg['se_r'] > channels:
        raise ConfigError(f"se_r={cfg['se_r']} leaves an SE block of {cfg['model']} with fewer than "
                          f"one hidden unit ({channels} channels); choose se_r <= {channels}")
    return cfg


def gpu_found(device):
    """Whether `device` names a GPU and TensorFlow sees one on this machine."""
    import tensorflow as tf
    return 'GPU' in device.upper() and bool(tf.config.list_physical_devices('GPU'))


def resolve_auto(cfg, on_gpu):
    """The 'auto' device options made concrete for the machine.

    On a GPU: float16 compute with loss scaling (tensor cores), XLA, and NCHW
    in float32 (cuDNN's fast layout) but NHWC in float16 (what tensor cores
    want). On the CPU: float32, NHWC, no XLA: XLA and NCHW were slower there
    (bench/throughput.py).
    """
    cfg = dict(cfg)
    if cfg['mixed_precision'] == 'auto':
        cfg['mixed_precision'] = on_gpu
    if cfg['xla'] == 'auto':
        cfg['xla'] = on_gpu
    if cfg['data_format'] == 'auto':
        cfg['data_format'] = 'NCHW' if on_gpu and not cfg['mixed_precision'] else 'NHWC'
    return cfg


def load_config(args=(), base=None):
    """constant.config (or `base`) with the `key=value` args applied, validated,
    and its 'auto' options decided for this machine."""
    cfg = dict(constant.config if base is None else base)
    cfg.update(parse_overrides(args, set(cfg)))
    validate(cfg)
    if any(cfg[key] == 'auto' for key in AUTO_KEYS):
        cfg = resolve_auto(cfg, gpu_found(cfg['device']))
    return cfg
