"""bfloat16 on the CPU: which ops the rewrite leaves in float32, no loss
scale where the range does not need it, 'auto' per CPU class, and
profile_steps' trace of a run's steps."""
import collections
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

import constant
import main
from foundation import machine
from foundation.errors import ConfigError
from foundation.networks import optimisation
from Model import Model
from trainer.config import settings
from trainer.training import profiling, training_graph

v1 = tf.compat.v1


def rewritten_dtypes(cfg):
    """{(op type, dtype)} of the graph a session runs for one training step of
    cfg's network on 4 images of 8x8 (after grappler's rewrites), and its loss-scale variables."""
    with tf.Graph().as_default() as graph:
        v1.set_random_seed(0)
        model = Model.from_config(cfg, (8, 8, 1))
        with v1.Session(config=training_graph.session_config(machine.decide(cfg))) as session:
            session.run(v1.global_variables_initializer())
            rng = np.random.default_rng(0)
            feed = {model.X: rng.uniform(0, 1, (4, 8, 8, 1)).astype(np.float32),
                    model.Yoh: np.eye(10, dtype=np.float32)[[0, 3, 7, 9]], model.is_training: True}
            metadata = v1.RunMetadata()
            session.run(model.train_op, feed, options=v1.RunOptions(output_partition_graphs=True),
                        run_metadata=metadata)
    kinds = collections.Counter()
    for partition in metadata.partition_graphs:
        for node in partition.node:
            if 'T' in node.attr and node.attr['T'].type:
                kinds[(node.op, tf.dtypes.as_dtype(node.attr['T'].type).name)] += 1
    scales = [v.op.name for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES) if 'loss_scale' in v.op.name]
    return kinds, scales


def cpu_cfg(**overrides):
    return {**constant.config, 'model': 'custom_model', 'dataset_name': 'digits', 'use_se': True,
            'xla': False, 'data_format': 'NHWC', 'device': '/cpu:0', **overrides}


@pytest.mark.skipif(not machine.cpu_native_bfloat16(), reason='the CPU has no native bfloat16')
def test_bfloat16_session_runs_products_in_bfloat16_and_reductions_and_gates_in_float32():
    kinds, scales = rewritten_dtypes(cpu_cfg(mixed_precision=True))
    dtypes = collections.defaultdict(set)
    for op, dtype in kinds:
        dtypes[op].add(dtype)
    products = {op for op in dtypes if 'Conv2D' in op or 'MatMul' in op}
    assert products and all(dtypes[op] == {'bfloat16'} for op in products), dict(dtypes)
    # the SE squeeze's mean, the gate's sigmoid and its gradient, the sums of the gradients
    for op in ('Mean', 'Sigmoid', 'SigmoidGrad', 'Sum'):
        assert dtypes[op] == {'float32'}, (op, dict(dtypes))
    assert scales == []  # bfloat16 has float32's range: no loss scale


def test_float32_session_has_no_bfloat16_op():
    kinds, scales = rewritten_dtypes(cpu_cfg(mixed_precision=False))
    assert not [k for k in kinds if k[1] == 'bfloat16'] and scales == []


def test_keep_in_float32_moves_the_ops_between_lists_and_keeps_the_users():
    environ = {machine.LIST_VARIABLES[0]: 'Exp2,Mean'}
    machine.keep_in_float32(environ)
    machine.keep_in_float32(environ)  # once is enough: nothing doubled
    deny = environ[machine.LIST_VARIABLES[0]].split(',')
    assert deny[:2] == ['Exp2', 'Mean'] and sorted(deny) == sorted({'Exp2', *machine.FLOAT32_OPS})
    assert environ[machine.LIST_VARIABLES[1]].split(',') == list(machine.FLOAT32_OPS)


def test_loss_scaling_only_for_float16_on_a_gpu():
    cfg = cpu_cfg(mixed_precision=True)
    assert optimisation.from_config(cfg, on_gpu=True).loss_scaling
    assert not optimisation.from_config(cfg, on_gpu=False).loss_scaling
    assert not optimisation.from_config(cpu_cfg(mixed_precision=False), on_gpu=True).loss_scaling


FLAGS = {'amx': 'flags\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n',
         'avx512_bf16': 'flags\t: fpu avx512f avx512_bf16\n',
         'none': 'flags\t: fpu avx2 avx512f\n'}


@pytest.mark.parametrize('flags, expected', [('amx', 'amx'), ('avx512_bf16', 'avx512_bf16'), ('none', None)])
def test_cpu_bfloat16_class_from_the_flags(tmp_path, flags, expected):
    path = tmp_path / 'cpuinfo'
    path.write_text(FLAGS[flags])
    assert machine.cpu_bfloat16_class(str(path)) == expected


@pytest.mark.parametrize('cpu_class', ['amx', 'avx512_bf16'])
def test_auto_follows_the_table_of_the_cpu_class(cpu_class):
    table = machine.CPU_BFLOAT16_AUTO[cpu_class]
    for (model, use_se), in_bfloat16 in table.items():
        cfg = {**constant.config, 'model': model, 'use_se': use_se, 'mixed_precision': 'auto'}
        assert machine.resolve_auto(cfg, False, cpu_class)['mixed_precision'] is in_bfloat16
    # without native bfloat16 never, on a GPU always (float16)
    assert machine.resolve_auto({**constant.config, 'model': 'resnet50'}, False, None)['mixed_precision'] is False
    assert machine.resolve_auto({**constant.config, 'model': 'custom_model'}, True, None)['mixed_precision'] is True


def test_every_cpu_class_table_names_every_network():
    networks = {(m, se) for m in ('custom_model', 'resnet50') for se in (False, True)}
    assert set(machine.CPU_BFLOAT16_AUTO) == set(machine.CPU_BFLOAT16_CLASSES)
    for table in machine.CPU_BFLOAT16_AUTO.values():
        assert set(table) == networks


# --- profile_steps ---------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.calls = []

    def start(self, logdir):
        self.calls.append(('start', logdir))

    def stop(self):
        self.calls.append(('stop',))


def test_step_trace_starts_before_the_first_step_and_stops_after_the_last(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(tf.profiler.experimental, 'start', recorder.start)
    monkeypatch.setattr(tf.profiler.experimental, 'stop', recorder.stop)
    trace = profiling.StepTrace(3, 5, '/runs/x', done=0)
    for step in range(1, 9):
        trace.before_step()
        recorder.calls.append(step)
        trace.after_step()
    trace.stop()
    assert recorder.calls == [1, 2, ('start', '/runs/x'), 3, 4, 5, ('stop',), 6, 7, 8]


def test_step_trace_of_a_resumed_run_counts_the_steps_before(monkeypatch, capsys):
    recorder = Recorder()
    monkeypatch.setattr(tf.profiler.experimental, 'start', recorder.start)
    monkeypatch.setattr(tf.profiler.experimental, 'stop', recorder.stop)
    cfg = {'profile_steps': [3, 5]}
    assert profiling.step_trace(cfg, '/runs/x', done=5) is None
    assert 'were trained before this resume' in capsys.readouterr().out
    trace = profiling.step_trace(cfg, '/runs/x', done=4)  # resumed inside the range: the rest traced
    trace.before_step()
    trace.after_step()
    assert recorder.calls == [('start', '/runs/x'), ('stop',)]


@pytest.mark.parametrize('value', [[5, 3], [0, 2], [1], 'x', [1.5, 2]])
def test_profile_steps_refuses_what_is_not_a_step_range(value):
    with pytest.raises(ConfigError, match='profile_steps must be'):
        settings.load_config([f'profile_steps={value!r}'])


def test_profile_steps_writes_a_trace_of_the_run_that_tensorboard_reads(tmp_path, capsys):
    assert main.main([f'datasets_root={tmp_path}', 'max_epochs=1', 'profile_steps=[2,4]', 'log_every=100000']) == 0
    out = capsys.readouterr().out
    run_dir = os.path.join(tmp_path, 'digits', 'save_dir', 'runs', 'custom_model_relu')
    traces = glob.glob(os.path.join(run_dir, 'plugins', 'profile', '*', '*.xplane.pb'))
    assert len(traces) == 1 and 'Profile of steps 2 to 4 written to' in out
    with open(traces[0], 'rb') as f:
        content = f.read()
    assert b'Conv2D' in content and b'MatMul' in content  # the network's ops, traced
