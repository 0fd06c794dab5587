"""The instruments of the study (trainer/study/, instruments.py): SE
excitations per class and the self-normalisation of every layer, checked
against numpy's statistics of the same gate and layer tensors, fetched by
their names."""
import contextlib
import csv
import io
import json
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

import instruments
import main
from foundation.data import loaders
from foundation.networks import architecture
from Model import network
from trainer.config import settings
from trainer.runs import checkpoints
from trainer.study import cam, excitation, probes, self_normalisation
from trainer.training import callbacks, training_graph

v1 = tf.compat.v1
RUN = 'custom_model_se_selu'
CUSTOM_LAYERS = [('conv1', 'selu'), ('pool1', 'max pool'), ('conv2', 'selu'), ('pool2', 'max pool'),
                 ('conv3', 'selu'), ('pool3', 'max pool'), ('head/fc1', 'selu'), ('head/fc2', 'selu')]


def config(root, *args):
    return settings.load_config([f'datasets_root={root}', 'use_se=True', 'activation_fn=selu',
                                 'log_every=100000', *args])


def quietly(task, *args):
    """task(*args)'s result, and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = task(*args)
    return result, out.getvalue()


def pages(path):
    """Pages of a PDF matplotlib wrote."""
    data = open(path, 'rb').read()
    return data.count(b'/Type /Page') - data.count(b'/Type /Pages')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 2-epoch SE SELU run of the custom model on digits, in this process."""
    root = tmp_path_factory.mktemp('instruments')
    status, printed = quietly(main.train, config(root, 'max_epochs=2'))
    assert status == 0
    return root, root / 'digits' / 'save_dir' / 'runs' / RUN, printed


@pytest.fixture(scope='module')
def restored(trained):
    """The run's graph and session, its newest (final) checkpoint restored,
    and the digits dataset."""
    root, run_dir, _ = trained
    cfg = config(root)
    data = loaders.load_digits(None, cfg['seed'], False)
    built = training_graph.build_graph(cfg, data)
    with built.graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session:
        built.saver.restore(session, checkpoints.found(str(run_dir))[-1].prefix)
        yield built, session, data


def normalised(data, split):
    part = getattr(data, split)
    return (part.images.astype(np.float32) - data.mean) / data.std, part.labels


# --- what a training run writes ---------------------------------------------------------

def test_a_run_records_every_layer_at_initialisation_and_after_each_epoch(trained):
    root, run_dir, printed = trained
    record = json.loads((run_dir / 'history.json').read_text())
    statistics = record[self_normalisation.KEY]
    assert [tuple(layer) for layer in statistics['layers']] == CUSTOM_LAYERS
    assert statistics['images'] == 180  # digits' whole validation split, under 256
    assert [e['epoch'] for e in statistics['epochs']] == [0, 1, 2]
    assert all(set(e) == {'epoch', 'inference'} for e in statistics['epochs'])  # no batch norm
    with open(run_dir / self_normalisation.CSV_NAME) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(CUSTOM_LAYERS)
    last = [r for r in rows if r['epoch'] == '2']
    assert [float(r['variance']) for r in last] == pytest.approx(
        statistics['epochs'][-1]['inference']['variance'])
    assert pages(run_dir / self_normalisation.FIGURE_NAME) == 2
    assert f'runs/{RUN}/activation_statistics.pdf' in printed
    first, final = (statistics['epochs'][i]['inference'] for i in (0, -1))
    assert (f"| pool1 (max pool) | {first['mean'][1]:+.3f} | {first['variance'][1]:.3f} | "
            f"{final['mean'][1]:+.3f} | {final['variance'][1]:.3f} |") in printed


def test_the_table_of_a_network_with_stages_gives_each_part_its_mean_and_range():
    layers = [['conv1', 'selu'], ['pool1', 'max pool'], ['stage2/block1/conv1', 'selu'],
              ['stage2/block1', 'selu'], ['stage3/block1', 'selu'], ['head/fc1', 'selu']]
    rng = np.random.default_rng(2)
    moments = {mode: {'mean': rng.normal(size=6).tolist(), 'variance': rng.uniform(size=6).tolist()}
               for mode in ('inference', 'training')}
    lines = self_normalisation.table_markdown({'layers': layers, 'images': 8,
                                               'epochs': [{'epoch': 0, **moments}]})
    cells = [line.strip('| ').split(' | ') for line in lines]
    assert [row[0] for row in cells[2:]] == ['stem (2)', 'stage2 (2)', 'stage3 (1)', 'head (1)']
    stage2 = moments['training']['variance'][2:4]
    assert cells[3][4] == f'{np.mean(stage2):.2f} [{np.min(stage2):.2f}, {np.max(stage2):.2f}]'
    assert cells[0][4] == 'variance (training), epoch 0'


def test_a_run_with_se_writes_its_excitations_and_their_table(trained):
    root, run_dir, printed = trained
    numbers, table, figure = excitation.paths(str(run_dir), 'valid')
    measured = excitation.load(numbers)
    assert measured.blocks == ['se'] and measured.epoch == 2 and measured.split == 'valid'
    assert measured.counts.sum() == 180 and measured.means[0].shape == (10, 64)
    with open(table) as f:
        (row,) = list(csv.DictReader(f))
    assert float(row['class-specificity']) == pytest.approx(measured.specificity()[0], rel=1e-5)
    assert pages(figure) == 2
    assert '| se | SE | 64 |' in printed


def test_the_excitations_are_measured_with_the_final_weights():
    """The excitations are labelled with the last epoch: they are measured
    after training, before the one step that brings the best epoch's weights."""
    excitations = next(c for c in main.chief_callbacks().callbacks if type(c).__name__ == 'FinalExcitations')
    assert type(excitations).after_train is not callbacks.Callback.after_train
    assert type(excitations).with_best_weights is callbacks.Callback.with_best_weights


def test_the_excitations_are_numpys_per_class_statistics_of_the_gate(trained, restored):
    """The run's excitation_valid.npz, against numpy's per-class means and
    standard deviations of the gate tensor fed the validation images."""
    _, run_dir, _ = trained
    built, session, data = restored
    images, labels = normalised(data, 'valid')
    gates = session.run('custom_model/se/fc2/sigmoid:0', {built.model.X: images}).astype(np.float64)
    saved = excitation.load(excitation.paths(str(run_dir), 'valid')[0])
    for k in range(10):
        np.testing.assert_allclose(saved.means[0][k], gates[labels == k].mean(axis=0), atol=1e-6)
        np.testing.assert_allclose(saved.sds[0][k], gates[labels == k].std(axis=0), atol=1e-5)
    np.testing.assert_array_equal(saved.counts, np.bincount(labels, minlength=10))
    class_means = np.array([gates[labels == k].mean(axis=0) for k in range(10)])
    assert saved.specificity()[0] == pytest.approx(np.mean(np.var(class_means, axis=0)), rel=1e-5)
    # eta squared: the variance of each image's class mean over the gate's variance
    eta = np.var(class_means[labels], axis=0) / np.var(gates, axis=0)
    assert saved.explained()[0] == pytest.approx(np.mean(eta), rel=1e-4)


def test_the_recorded_layer_statistics_are_numpys_moments_of_the_layer_outputs(trained, restored):
    _, run_dir, _ = trained
    built, session, data = restored
    images, _ = normalised(data, 'valid')
    np.testing.assert_allclose(self_normalisation.fixed_batch(session, built.model, built.source),
                               images, atol=1e-6)  # the first 256 validation images: all 180
    names = [f'custom_model/{name}:0' if kind == 'max pool' else f'custom_model/{name}/selu:0'
             for name, kind in CUSTOM_LAYERS]
    outputs = session.run(names, {built.model.X: images})
    record = json.loads((run_dir / 'history.json').read_text())
    final = record[self_normalisation.KEY]['epochs'][-1]['inference']
    np.testing.assert_allclose(final['mean'], [o.mean(dtype=np.float64) for o in outputs],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final['variance'], [o.var(dtype=np.float64) for o in outputs],
                               rtol=1e-4)
    # measured in chunks of 50 (four of 45): the same figures
    chunked = self_normalisation.Recorder(built.model, 50).measure(session, images)['inference']
    np.testing.assert_allclose(chunked['variance'], final['variance'], rtol=1e-5)


def test_moments_of_chunks_combine_into_those_of_the_whole():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 5)) for n in (7, 30, 1)]
    mean, variance = self_normalisation.combined(
        np.array([c.mean(axis=0) for c in chunks]), np.array([c.var(axis=0) for c in chunks]),
        [len(c) for c in chunks])
    whole = np.concatenate(chunks)
    np.testing.assert_allclose(mean, whole.mean(axis=0))
    np.testing.assert_allclose(variance, whole.var(axis=0))


def test_a_resumed_run_keeps_its_earlier_epochs_and_adds_the_new_ones(trained, tmp_path):
    root, run_dir, _ = trained
    shutil.copytree(root / 'digits', tmp_path / 'digits')
    status, _ = quietly(main.train, config(tmp_path, 'max_epochs=3', 'resume=True'))
    assert status == 0
    before = json.loads((run_dir / 'history.json').read_text())[self_normalisation.KEY]
    after = json.loads((tmp_path / 'digits' / 'save_dir' / 'runs' / RUN / 'history.json')
                       .read_text())[self_normalisation.KEY]
    assert [e['epoch'] for e in after['epochs']] == [0, 1, 2, 3]
    assert after['epochs'][:3] == before['epochs']


# --- ResNet50: its blocks, and batch norm's two modes -------------------------------------------

@pytest.fixture(scope='module')
def se_resnet():
    """SE-ResNet50 under SELU as Model builds its network, without the
    training copy and the optimiser (a sixth of the time), and what the
    instruments read of a Model."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        cfg = settings.load_config(['model=resnet50', 'use_se=True', 'activation_fn=selu'])
        model = types.SimpleNamespace(X=v1.placeholder(tf.float32, [None, 8, 8, 1]),
                                      architecture=architecture.from_config(cfg),
                                      is_training=v1.placeholder_with_default(False, []),
                                      ops_prefix='resnet50/', variables_prefix='resnet50/')
        with v1.variable_scope('resnet50'):
            network(model.X, model.is_training, model.architecture)
        recorder = self_normalisation.Recorder(model, chunk_images=4)
        fast = v1.ConfigProto(allow_soft_placement=True)
        fast.graph_options.rewrite_options.disable_meta_optimizer = True  # seconds per run on ResNet50
        with v1.Session(config=fast) as session:
            session.run(v1.global_variables_initializer())
            yield model, recorder, session


def test_resnet50s_probes_are_its_activations_pools_and_se_gates_in_order(se_resnet):
    model, recorder, _ = se_resnet
    blocks = [f'stage{s}/block{b}' for s, n in ((2, 3), (3, 4), (4, 6), (5, 3)) for b in range(1, n + 1)]
    expected = ['conv1', 'pool1'] + [f'{block}{part}' for block in blocks
                                     for part in ('/conv1', '/conv2', '')] + ['head/fc1', 'head/fc2']
    assert [name for name, _ in recorder.layers] == expected
    assert [p.name for p in probes.se_gates(model)] == blocks
    assert excitation.paper_blocks(blocks) == ['stage2/block3', 'stage3/block4', 'stage4/block6',
                                               'stage5/block1', 'stage5/block2', 'stage5/block3']
    assert [excitation.paper_name(b) for b in blocks[:2]] == ['SE_2_1', 'SE_2_2']


def test_batch_norm_networks_are_measured_in_both_modes_chunk_by_chunk(se_resnet):
    """Training mode normalises each chunk by its own statistics: numpy
    gets the same from the layers fed chunk by chunk."""
    model, recorder, session = se_resnet
    images = np.random.default_rng(1).normal(size=(8, 8, 8, 1)).astype(np.float32)
    measured = recorder.measure(session, images)
    assert set(measured) == {'inference', 'training'}
    tensors = [p.tensor for p in probes.layer_outputs(model)]
    for mode in ('inference', 'training'):
        outputs = [session.run(tensors, {model.X: chunk, model.is_training: mode == 'training'})
                   for chunk in (images[:4], images[4:])]
        whole = [np.concatenate([o[i] for o in outputs]).astype(np.float64) for i in range(len(tensors))]
        np.testing.assert_allclose(measured[mode]['mean'], [w.mean() for w in whole],
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(measured[mode]['variance'], [w.var() for w in whole],
                                   rtol=1e-3, atol=1e-6)
    # batch norm with its initial moving averages (0, 1) is not the batch's normalisation
    assert measured['training']['variance'] != pytest.approx(measured['inference']['variance'])


def test_channels_are_sampled_evenly_in_network_order():
    assert list(excitation.sampled_channels(10)) == list(range(10))
    chosen = excitation.sampled_channels(2048)
    assert len(chosen) == 64 and chosen[0] == 0 and chosen[-1] == 2047
    assert np.all(np.diff(chosen) > 0) and np.ptp(np.diff(chosen)) <= 1


# --- on demand: instruments.py ----------------------------------------------------------------

def test_instruments_writes_the_excitations_of_any_split_and_checkpoint(trained, capsys):
    root, run_dir, _ = trained
    assert instruments.main([f'datasets_root={root}', 'use_se=True', 'activation_fn=selu',
                             'excitation_split=test', 'checkpoint=best']) == 0
    printed = capsys.readouterr().out
    measured = excitation.load(excitation.paths(str(run_dir), 'test')[0])
    record = json.loads((run_dir / 'history.json').read_text())
    assert measured.split == 'test' and measured.counts.sum() == 180
    assert measured.epoch == record['best']['epoch']
    assert 'SE excitations on the test split' in printed
    assert 'Self-normalisation per layer (epochs 0-2)' in printed


@pytest.mark.parametrize('args, said', [
    (['use_se=False'], 'no trained run custom_model_selu of digits in '),
    (['use_se=True', 'se_r=8'], 'of another network (se_r: 16 in the checkpoint, 8 now)'),
    (['use_se=True', 'checkpoint=/nowhere/model.ckpt-3'],
     "no checkpoint /nowhere/model.ckpt-3: checkpoint takes 'best', 'newest' or"),
])
def test_instruments_says_in_one_line_what_run_is_missing_or_differs(trained, capsys, args, said):
    root, _, _ = trained
    assert instruments.main([f'datasets_root={root}', 'activation_fn=selu', *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and said in err and err.count('\n') == 1


def test_a_run_ends_with_the_class_activation_maps_of_its_best_epoch(trained):
    root, run_dir, printed = trained
    record = json.loads((run_dir / 'history.json').read_text())
    measured = cam.load(run_dir / cam.NUMBERS_NAME)
    data = loaders.load_digits(None, config(root)['seed'], False)
    assert measured.epoch == record['best']['epoch']
    assert measured.indices.tolist() == list(range(8))  # cam_images: the first validation images
    assert measured.true.tolist() == data.valid.labels[:8].tolist()
    assert measured.maps.shape[0] == 8 and 0 <= measured.maps.min() and measured.maps.max() <= 1
    assert (run_dir / 'class_activation_maps.pdf').is_file()
    assert 'class_activation_maps.pdf' in printed
