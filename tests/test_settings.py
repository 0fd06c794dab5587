"""constant.py and settings.py: the key table, overrides, validation, derived directories."""
import ast
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import constant
import layers
from foundation import machine
from foundation.errors import ConfigError
from trainer.config import settings
from trainer.config.settings import load_config


def test_seed_keys_are_all_there_with_their_meanings():
    seed_keys = {'datasets', 'dataset_name', 'models', 'model', 'activation_functions',
                 'activation_fn', 'learning_rate', 'batch_size', 'max_epochs', 'output_shape',
                 'pool_size', 'strides', 'decay_steps', 'decay_base', 'se_r', 'use_se', 'log_every'}
    assert seed_keys <= set(constant.config)
    assert constant.config['activation_functions'] == {'selu': layers.selu, 'relu': layers.relu}
    assert constant.config['models'] == ['custom_model', 'resnet50']


def test_every_key_of_constant_config_is_in_the_key_table_exactly_once():
    with open(settings.__file__) as f:
        tree = ast.parse(f.read())
    table, = [node.value for node in tree.body if isinstance(node, ast.Assign)
              and [t.id for t in node.targets if isinstance(t, ast.Name)] == ['KEYS']]
    written = [key.value for key in table.keys]  # a dict literal keeps the last of a repeated key
    assert sorted(written) == sorted(set(written)) == sorted(constant.config)
    assert set(settings.KEYS) == set(constant.config)


def test_every_tag_of_the_table_is_a_known_one():
    known = {settings.MENU, settings.GRAPH, settings.NAME, settings.DATASET, settings.AUTO,
             settings.HOW, *settings.CONDITIONS}
    assert all(key.tags <= known for key in settings.KEYS.values())


@pytest.mark.parametrize('args, expected', [
    ([], ['dataset_name', 'model', 'activation_fn', 'use_se', 'output_shape', 'pool_size',
          'strides', 'optimizer', 'plateau_patience', 'ema_decay']),
    (['use_se=True'], ['dataset_name', 'model', 'activation_fn', 'use_se', 'se_r', 'se_squeeze',
                       'se_excitation', 'output_shape', 'pool_size', 'strides', 'optimizer',
                       'plateau_patience', 'ema_decay']),
    (['model=resnet50', 'activation_fn=selu'], ['dataset_name', 'model', 'activation_fn', 'use_se',
                                                'selu_residual_scale', 'output_shape', 'optimizer',
                                                'plateau_patience', 'ema_decay']),
    (['model=resnet50', 'use_se=True'], ['dataset_name', 'model', 'activation_fn', 'use_se', 'se_r',
                                         'se_squeeze', 'se_excitation', 'se_integration',
                                         'se_stages', 'output_shape', 'optimizer', 'plateau_patience',
                                         'ema_decay']),
    (['dataset_name=imagenet', 'output_shape=1000'], ['dataset_name', 'model', 'activation_fn', 'use_se',
                                                     'output_shape', 'pool_size', 'strides', 'optimizer',
                                                     'imagenet_classes', 'plateau_patience', 'ema_decay']),
])
def test_graph_signature_holds_the_keys_that_shape_that_network(args, expected):
    """What a checkpoint must match to restore: the network's and the
    optimiser's keys, the conditional ones only where they apply."""
    cfg = load_config(args)
    assert sorted(settings.graph_signature(cfg)) == sorted(expected)
    assert settings.graph_signature(cfg) == {k: cfg[k] for k in expected}


def test_the_saved_config_leaves_out_the_menus_only():
    cfg = load_config([])
    assert set(settings.saved_config(cfg)) == set(cfg) - {
        'datasets', 'models', 'activation_functions', 'experiment_grids'}


def test_a_config_is_checked_without_importing_tensorflow():
    """constant.py imports layers.py, whose TensorFlow loads at the first
    layer built: a mistyped key costs no TensorFlow import."""
    code = ('import sys; from trainer.config import settings; settings.checked_config(["model=resnet50"]); '
            'print("tensorflow" in sys.modules, "sklearn" in sys.modules)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.stdout.split() == ['False', 'False'], result.stderr


def test_every_key_has_a_comment_in_constant_py():
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
    (['batch_size=0'], 'batch_size must be at least 1 and at most 2147483647, got 0'),
    (['batch_size=2.5'], 'batch_size must be a whole number, got 2.5'),
    (['batch_size=True'], 'batch_size must be a whole number, got True'),
    (['max_epochs=ten'], "max_epochs must be a whole number, got 'ten'"),
    (['learning_rate=0'], 'learning_rate must be greater than 0'),
    (['learning_rate=fast'], "learning_rate must be a finite number, got 'fast'"),
    (['learning_rate=1e999'], 'learning_rate must be a finite number, got inf'),
    (['seed=4294967296'], 'seed must be at least 0 and at most 4294967295, got 4294967296'),
    (['malloc_mmap_threshold=33554433'], 'malloc_mmap_threshold must be at least 4096 and at most 33554432'),
    (['device=garbage'], "device='garbage' names no device; write /device:GPU:<n> or /device:CPU:0"),
    (['device=/device:GPU:0/extra'], 'names no device'),
    ([f"run_name={'a' * 201}"], 'run_name has 201 characters; at most 200 fit into the names of its files'),
    ([f"seed={'-' * 3000}1"], "seed must be a whole number, got '----------------"),
    (['lr_boundaries=[1, 2147483648]'], 'lr_boundaries must be a list of distinct increasing whole '
                                        'numbers from 1 to 2147483647'),
    (['pool_size=[2, 100000000000000000000]'], 'pool_size must be two whole numbers from 1 to 2147483647'),
    (['decay_base=1.5'], 'decay_base must be at least 0.0 and at most 1.0, got 1.5'),
    (['use_se=yes'], "use_se must be True or False, got 'yes'"),
    (['pool_size=2'], 'pool_size must be two whole numbers'),
    (['gpu_memory_fraction=0'], 'gpu_memory_fraction must be greater than 0'),
    (['output_shape=1000'], 'output_shape=1000 but digits has 10 classes; set output_shape=10'),
    (['use_se=True', 'se_r=65'], 'se_r=65 leaves an SE block of custom_model with fewer than one hidden unit'),
    (['use_se=True', 'model=resnet50', 'se_r=512'], 'choose se_r <= 256'),
    (['experiment_seeds=[1, 1]'], 'experiment_seeds must be a list of distinct whole numbers from 0 to 4294967295'),
])
def test_bad_keys_and_values_name_the_valid_choices(args, message):
    with pytest.raises(ConfigError) as error:
        load_config(args)
    assert message in str(error.value)
    assert '\n' not in str(error.value)


def test_a_value_of_any_length_is_quoted_short_in_its_line():
    with pytest.raises(ConfigError) as error:
        load_config([f"seed={'-' * 3000}1"])
    assert len(str(error.value)) < 120


# Keys whose values are floats (gpu_memory_fraction defaults to None).
FLOAT_KEYS = sorted({k for k, v in constant.config.items() if isinstance(v, float)}
                    | {'gpu_memory_fraction'})
# Keys whose values are whole numbers, and those holding lists or dicts of them.
INTEGER_KEYS = sorted({k for k, v in constant.config.items() if type(v) is int}
                      | {'train_eval_images', 'malloc_mmap_threshold'})
WHOLE_NUMBER_LISTS = {'lr_boundaries': '[1, {}]', 'pool_size': '[2, {}]',
                      'experiment_seeds': '[1, {}]', 'tfrecord_shards': "{{'train': {}}}"}


@pytest.mark.parametrize('key', FLOAT_KEYS)
def test_every_float_key_takes_a_whole_number_as_that_float(key):
    """learning_rate=1 was kept an int and failed in TensorFlow's Pow op."""
    accepted = 0
    for whole in (0, 1):
        try:
            value = load_config([f'{key}={whole}'])[key]
        except ConfigError:
            continue
        assert type(value) is float and value == whole
        accepted += 1
    assert accepted


def test_the_floats_are_floats_in_a_config_built_in_code_too():
    cfg = settings.validate(dict(constant.config, learning_rate=1, momentum=0, decay_base=1))
    assert [type(cfg[k]) for k in ('learning_rate', 'momentum', 'decay_base')] == [float] * 3


@pytest.mark.parametrize('key', INTEGER_KEYS + list(WHOLE_NUMBER_LISTS))
def test_every_whole_number_is_bounded_by_what_takes_it(key):
    """10^20 passed the rules, then overflowed in TensorFlow, numpy, ctypes."""
    text = WHOLE_NUMBER_LISTS.get(key, '{}').format(10**20)
    with pytest.raises(ConfigError, match=f'^{key} must .*(at most|to) [0-9]+'):
        load_config([f'{key}={text}'])


def test_the_bounds_themselves_work_where_the_values_go(graph, session):
    """The largest values the rules let through are taken by what uses them."""
    from foundation import malloc_tuning
    from foundation.data import loaders
    from foundation.networks import optimisation
    from Model import learning_rate_schedule
    cfg = load_config([f'seed={settings.SEED_MAX}', f'decay_steps={settings.INT32_MAX}',
                       f'eval_batch_size={settings.INT32_MAX}', f'keep_checkpoints={settings.INT32_MAX}',
                       f'malloc_mmap_threshold={settings.MMAP_THRESHOLD_MAX}'])
    assert len(loaders.load_digits(None, cfg['seed'], False).train) == 1437
    rate = learning_rate_schedule(optimisation.from_config(cfg), tf.compat.v1.train.get_or_create_global_step())
    batches = tf.data.Dataset.range(5).batch(cfg['eval_batch_size'])
    batch = tf.compat.v1.data.make_one_shot_iterator(batches).get_next()
    tf.compat.v1.train.Saver(max_to_keep=cfg['keep_checkpoints'])
    session.run(tf.compat.v1.global_variables_initializer())
    assert session.run(rate) == pytest.approx(1e-3) and len(session.run(batch)) == 5
    assert malloc_tuning.set_mmap_threshold(cfg['malloc_mmap_threshold'])
    malloc_tuning.set_mmap_threshold(constant.config['malloc_mmap_threshold'])


@pytest.mark.parametrize('device', ['/device:GPU:0', '/GPU:1', '/cpu:0', '/device:CPU:0'])
def test_device_takes_the_ways_tensorflow_names_one_device(device):
    assert load_config([f'device={device}'])['device'] == device


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


# --- device options: 'auto' decided for the machine ------------------------------------

# What 'auto' decides depends on the machine: these expect none with a GPU.
cpu_only = pytest.mark.skipif(bool(tf.config.list_physical_devices('GPU')),
                              reason='a GPU is visible')


def test_device_options_default_to_auto():
    assert {k: constant.config[k] for k in settings.keys_tagged(settings.AUTO)} == \
        {'data_format': 'auto', 'mixed_precision': 'auto', 'xla': 'auto'}


@cpu_only
def test_load_config_decides_auto_for_a_machine_without_gpu():
    cfg = load_config([])
    assert (cfg['data_format'], cfg['mixed_precision'], cfg['xla']) == ('NHWC', False, False)
    # even with the GPU device asked for: it falls back to the CPU
    assert cfg['device'] == '/device:GPU:0'


def test_gpu_found_is_false_for_the_cpu():
    assert machine.gpu_found('/device:CPU:0') is False
    assert machine.gpu_found('/cpu:0') is False


@cpu_only
def test_gpu_found_is_false_without_a_gpu():
    assert machine.gpu_found('/device:GPU:0') is False
    assert machine.gpu_found('/gpu:0') is False


AUTO = {'data_format': 'auto', 'mixed_precision': 'auto', 'xla': 'auto'}


@pytest.mark.parametrize('on_gpu, given, expected', [
    # GPU: float16 with tensor cores, which want NHWC; XLA
    (True, {}, ('NHWC', True, True)),
    # GPU in float32: cuDNN's NCHW
    (True, {'mixed_precision': False}, ('NCHW', False, True)),
    (True, {'mixed_precision': True}, ('NHWC', True, True)),
    (True, {'xla': False}, ('NHWC', True, False)),
    # CPU: float32, NHWC, no XLA
    (False, {}, ('NHWC', False, False)),
    (False, {'mixed_precision': True}, ('NHWC', True, False)),
    (False, {'xla': True}, ('NHWC', False, True)),
])
def test_resolve_auto(on_gpu, given, expected):
    cfg = {**constant.config, **AUTO, **given}
    resolved = machine.resolve_auto(cfg, on_gpu)
    assert (resolved['data_format'], resolved['mixed_precision'], resolved['xla']) == expected
    assert cfg == {**constant.config, **AUTO, **given}  # the input is left alone


@pytest.mark.parametrize('on_gpu', [True, False])
@pytest.mark.parametrize('explicit', [
    {'data_format': 'NCHW', 'mixed_precision': True, 'xla': False},
    {'data_format': 'NHWC', 'mixed_precision': False, 'xla': True},
    {'data_format': 'NCHW', 'mixed_precision': False, 'xla': False},
])
def test_resolve_auto_keeps_explicit_values(on_gpu, explicit):
    resolved = machine.resolve_auto(dict(constant.config, **explicit), on_gpu)
    assert {k: resolved[k] for k in explicit} == explicit


@pytest.mark.parametrize('args, expected', [
    (['data_format=NCHW'], ('NCHW', False, False)),
    (['mixed_precision=True', 'xla=True'], ('NHWC', True, True)),
    (['data_format=NCHW', 'mixed_precision=True', 'xla=false'], ('NCHW', True, False)),
])
@cpu_only
def test_load_config_keeps_explicit_device_options(args, expected, monkeypatch):
    monkeypatch.setattr(machine, 'cpu_runs_nchw', lambda: True)  # as with oneDNN's kernels
    cfg = load_config(args)
    assert (cfg['data_format'], cfg['mixed_precision'], cfg['xla']) == expected


@cpu_only
@pytest.mark.parametrize('nchw_kernels', [True, False])
def test_nchw_falls_back_to_nhwc_where_the_cpu_cannot_run_it(nchw_kernels, monkeypatch, capsys):
    """TensorFlow's plain CPU kernels (oneDNN off, as on CPUs without AVX-512)
    take NHWC only: a GPU path asked for on such a machine trains in NHWC."""
    monkeypatch.setattr(machine, 'cpu_runs_nchw', lambda: nchw_kernels)
    cfg = load_config(['data_format=NCHW'])
    assert cfg['data_format'] == ('NCHW' if nchw_kernels else 'NHWC')
    warning = capsys.readouterr().err
    assert ("data_format='NCHW' needs a GPU or a CPU with oneDNN's kernels" in warning) != nchw_kernels


@cpu_only
def test_the_nchw_probe_answers_what_a_conv_in_nchw_does_here():
    graph = tf.Graph()
    with graph.as_default(), tf.device('/CPU:0'):
        y = tf.nn.conv2d(tf.ones([1, 2, 5, 5]), tf.ones([3, 3, 2, 1]), 1, 'SAME', data_format='NCHW')
    with tf.compat.v1.Session(graph=graph) as session:
        try:
            session.run(y)
            runs = True
        except tf.errors.OpError:
            runs = False
    assert machine.cpu_runs_nchw() is runs


@pytest.mark.parametrize('args, message', [
    (['data_format=nchw'], "data_format='nchw' is not valid; choose one of: auto, NHWC, NCHW"),
    (['data_format=channels_first'], 'choose one of: auto, NHWC, NCHW'),
    (['mixed_precision=1'], 'mixed_precision=1 is not valid; choose one of: auto, True, False'),
    (['mixed_precision=fp16'],
     "mixed_precision='fp16' is not valid; choose one of: auto, True, False"),
    (['xla=yes'], "xla='yes' is not valid; choose one of: auto, True, False"),
    (['xla=0'], 'xla=0 is not valid; choose one of: auto, True, False'),
    (['xla=AUTO'], "xla='AUTO' is not valid"),
])
def test_bad_device_options_name_the_key_and_the_choices(args, message):
    test_bad_keys_and_values_name_the_valid_choices(args, message)


def test_validate_refuses_bad_device_options_given_as_values():
    """The same rules for a config built in code, not only for command-line text."""
    for key, value in (('data_format', 'nchw'), ('mixed_precision', 1), ('xla', 'yes'),
                       ('mixed_precision', None), ('data_format', True)):
        with pytest.raises(ConfigError, match=f'^{key}='):
            settings.validate(dict(constant.config, **{key: value}))
