"""constant.py and settings.py: overrides, validation, derived directories."""
import os

import pytest

import constant
import layers
import settings
from settings import ConfigError, load_config


def test_seed_keys_are_all_there_with_their_meanings():
    seed_keys = {'datasets', 'dataset_name', 'models', 'model', 'activation_functions',
                 'activation_fn', 'learning_rate', 'batch_size', 'max_epochs', 'output_shape',
                 'pool_size', 'strides', 'decay_steps', 'decay_base', 'se_r', 'use_se', 'log_every'}
    assert seed_keys <= set(constant.config)
    assert constant.config['activation_functions'] == {'selu': layers.selu, 'relu': layers.relu}
    assert constant.config['models'] == ['custom_model', 'resnet50']


def test_every_key_has_a_rule_and_a_comment():
    assert set(settings.RULES) == set(constant.config)
    with open(constant.__file__) as f:
        source = f.read()
    for key in constant.config:
        line = next(line for line in source.splitlines() if line.strip().startswith(f"'{key}':"))
        assert '#' in line, f'{key} has no one-line comment'


def test_defaults_train_digits_with_the_custom_model():
    cfg = load_config([])
    assert (cfg['dataset_name'], cfg['model']) == ('digits', 'custom_model')


@pytest.mark.parametrize('arg, value', [
    ('model=resnet50', 'resnet50'), ('use_se=True', True), ('use_se=false', False),
    ('learning_rate=1e-3', 1e-3), ('batch_size=128', 128), ('pool_size=[3, 3]', [3, 3]),
    ('gpu_memory_fraction=0.5', 0.5), ('gpu_memory_fraction=None', None),
    ('data_dir=/tmp/x', '/tmp/x'),
])
def test_overrides_are_parsed_as_python_values(arg, value):
    key = arg.split('=')[0]
    assert load_config([arg])[key] == value


def test_overrides_leave_constant_config_alone():
    load_config(['model=resnet50'])
    assert constant.config['model'] == 'custom_model'


@pytest.mark.parametrize('args, message', [
    (['modle=resnet50'], "unknown key 'modle' (did you mean 'model'?)"),
    (['model'], "argument 'model' is not key=value"),
    (['model=resnet'], "model='resnet' is not valid; choose one of: custom_model, resnet50"),
    (['activation_fn=tanh'], 'choose one of: selu, relu'),
    (['dataset_name=svhn'], 'choose one of: digits, mnist, cifar_32'),
    (['models=[1]'], 'models lists the choices and cannot be overridden'),
    (['batch_size=0'], 'batch_size must be at least 1, got 0'),
    (['batch_size=2.5'], 'batch_size must be a whole number, got 2.5'),
    (['batch_size=True'], 'batch_size must be a whole number, got True'),
    (['max_epochs=ten'], "max_epochs must be a whole number, got 'ten'"),
    (['learning_rate=0'], 'learning_rate must be greater than 0'),
    (['learning_rate=fast'], "learning_rate must be a number, got 'fast'"),
    (['decay_base=1.5'], 'decay_base must be at least 0.0 and at most 1.0, got 1.5'),
    (['use_se=yes'], "use_se must be True or False, got 'yes'"),
    (['pool_size=2'], 'pool_size must be two whole numbers'),
    (['gpu_memory_fraction=0'], 'gpu_memory_fraction must be greater than 0'),
    (['output_shape=1000'], 'output_shape=1000 but digits has 10 classes; set output_shape=10'),
    (['use_se=True', 'se_r=65'], 'se_r=65 leaves an SE block of custom_model with fewer than one hidden unit'),
    (['use_se=True', 'model=resnet50', 'se_r=512'], 'choose se_r <= 256'),
])
def test_bad_keys_and_values_name_the_valid_choices(args, message):
    with pytest.raises(ConfigError) as error:
        load_config(args)
    assert message in str(error.value)
    assert '\n' not in str(error.value)


def test_se_r_is_free_when_se_is_off():
    assert load_config(['se_r=1000'])['se_r'] == 1000


def test_derived_directories_follow_the_final_config(tmp_path):
    cfg = load_config(['dataset_name=mnist', f'datasets_root={tmp_path}'])
    dirs = constant.derived_dirs(cfg)
    save = os.path.join(tmp_path, 'mnist', 'save_dir')
    assert dirs == {
        'DATA_DIR': os.path.join(tmp_path, 'mnist', 'data_dir'),
        'SAVE_DIR': save,
        'FILTERS_SAVE_DIR': os.path.join(save, 'filters'),
        'PLOT_TRAINING_SAVE_DIR': os.path.join(save, 'plot_training'),
        'RUNS_SAVE_DIR': os.path.join(save, 'runs'),
    }
    assert constant.derived_dirs(dict(cfg, data_dir='/data/mnist'))['DATA_DIR'] == '/data/mnist'


def test_run_name_says_model_se_and_activation():
    assert constant.run_name(load_config([])) == 'custom_model_relu'
    assert constant.run_name(load_config(['model=resnet50', 'use_se=True',
                                          'activation_fn=selu'])) == 'resnet50_se_selu'
