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
MENU_KEYS = ('datasets', 'models', 'activation_functions')


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
    'output_shape': _integer(2),
    'pool_size': _pool_size,
    'strides': _integer(1),
    'learning_rate': _number(0.0),
    'decay_steps': _integer(1),
    'decay_base': _number(0.0, 1.0),
    'batch_size': _integer(1),
    'max_epochs': _integer(1),
    'seed': _integer(0),
    'log_every': _integer(1),
    'eval_batch_size': _integer(1),
    'keep_checkpoints': _integer(1),
    'resume': _boolean,
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
    'device': _text,
    'gpu_memory_growth': _boolean,
    'gpu_memory_fraction': _optional(_number(0.0, 1.0)),
    'log_device_placement': _boolean,
    'data_format': _auto_or('NHWC', 'NCHW'),
    'mixed_precision': _auto_or(True, False),
    'xla': _auto_or(True, False),
}
AUTO_KEYS = ('data_format', 'mixed_precision', 'xla')

# Fewest channels an SE block sees in each model: r may not exceed it.
SE_CHANNELS = {'custom_model': 64, 'resnet50': 256}


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
    channels = SE_CHANNELS[cfg['model']]
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
