"""The names of a sweep's runs: what a configuration is called, with its
seed and without, so that two configurations never share a run's folder and
a sweep finds a main.py run of the same configuration."""
import hashlib
import re

import constant
from trainer.config import settings

# Keys that change how a run goes or where its files are, not its results: a
# finished run that differs only in these counts as done.
NOT_RESULT_KEYS = settings.keys_tagged(settings.HOW)
# Keys a run's name leaves out: those above, those already in its base name
# (resnet50_se_selu), those decided for the machine and those of the dataset,
# whose folder holds the run.
NOT_IN_NAME = NOT_RESULT_KEYS + sum((settings.keys_tagged(tag) for tag in (
    settings.NAME, settings.AUTO, settings.DATASET)), ())
def _name_part(value):
    text = '+'.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r'[^A-Za-z0-9.+-]', '', text)


def experiment_name(raw):
    """The run's base name (resnet50_se_selu), plus key-value for every key
    that shapes results and differs from constant.py, so that two
    configurations never share outputs: resnet50_se_relu_se_squeeze-max.
    A name too long for a file name keeps its start and ends in a digest
    of the whole, so that it stays distinct and the same on every rerun."""
    name = constant.run_name({**raw, 'run_name': None})
    for key, value in raw.items():
        irrelevant = key in NOT_IN_NAME or key in settings.MENU_KEYS or (
            settings.SE in settings.KEYS[key].tags and not raw['use_se'])
        if not irrelevant and value != constant.config[key]:
            name += f'_{key}-{_name_part(value)}'
    if len(name) > settings.RUN_NAME_MAX:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f'{name[:settings.RUN_NAME_MAX - len(digest) - 1]}-{digest}'
    return name


def configuration_name(cfg):
    """The run's name without its seed: what runs that repeat one
    configuration with other seeds share."""
    return experiment_name({**cfg, 'seed': constant.config['seed']})


def without_activation(cfg):
    """The run's name with its activation left out: resnet50_se_relu_se_r-8
    -> resnet50_se_se_r-8 (experiment_name puts the activation after the
    model and SE parts)."""
    base = constant.run_name({**cfg, 'run_name': None})
    return base[:-len(cfg['activation_fn']) - 1] + cfg['run_name'][len(base):]
