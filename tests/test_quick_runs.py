"""Quick runs: train_images (a stratified sample of the training split),
max_steps (a step budget over epochs and resumes) and overfit_batches (can
the network fit a few batches?), on digits and on TFRecords written in the
real format at run time."""
import dataclasses
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

import constant
import experiments
import main
import TFRecordsReader
import TFRecordsWriter
from foundation.data import loaders, subsets
from foundation.errors import ClusterError, ConfigError, DataError
from foundation.networks import optimisation
from Model import learning_rate_schedule
from tests import fixtures
from trainer.config import settings
from trainer.runs import records
from trainer.sweeps import names
from trainer.training import cluster, input_source, quick_runs

v1 = tf.compat.v1
DIGITS_TRAIN = 1437  # scikit-learn's digits: 1437 / 180 / 180


def load(*args):
    return settings.load_config(list(args))


def labels_of(split):
    return np.asarray(split.labels)


# --- the sample ------------------------------------------------------------------------

def test_class_shares_keep_each_share_and_add_up_exactly():
    counts = [145, 143, 150, 7, 1, 91]
    for total in (6, 50, 311, 537):
        shares = subsets.class_shares(counts, total)
        assert shares.sum() == total
        exact = np.array(counts) * total / sum(counts)
        assert np.all(np.abs(shares - exact) < 1) and np.all(shares <= counts)


def test_the_digits_sample_is_stratified_seeded_and_leaves_valid_and_test_alone():
    full = loaders.load_digits(None, 42, False)
    sample = input_source.open_dataset(load('train_images=500'), None)
    counts = np.bincount(labels_of(full.train), minlength=10)
    assert len(sample.train) == 500
    np.testing.assert_array_equal(np.bincount(labels_of(sample.train), minlength=10),
                                  subsets.class_shares(counts, 500))
    # its images are of the training split, each once
    rows = {image.tobytes(): label for image, label in zip(full.train.images, full.train.labels)}
    assert len({image.tobytes() for image in sample.train.images}) == 500
    assert all(rows[image.tobytes()] == label for image, label in zip(sample.train.images, sample.train.labels))
    for split in ('valid', 'test'):
        np.testing.assert_array_equal(getattr(sample, split).images, getattr(full, split).images)
        np.testing.assert_array_equal(getattr(sample, split).labels, getattr(full, split).labels)
    # normalised by its own statistics
    np.testing.assert_allclose(sample.mean, sample.train.images.mean(axis=(0, 1, 2)), rtol=1e-5)
    again = input_source.open_dataset(load('train_images=500'), None)
    np.testing.assert_array_equal(again.train.images, sample.train.images)
    # another seed: other splits of the digits, and another draw from the same labels
    other = subsets.stratified_sample(labels_of(full.train), 500, 43)
    assert not np.array_equal(other, subsets.stratified_sample(labels_of(full.train), 500, 42))


@pytest.mark.parametrize('args, message', [
    (['train_images=1.5'], '^train_images must be a whole number'),
    (['train_images=9'], '^train_images=9 is fewer than the 10 classes'),
    (['train_images=0'], '^train_images must be at least 1'),
    (['train_images=20', 'batch_size=50'], '^batch_size=50 is more than train_images=20'),
    (['max_steps=2.0'], '^max_steps must be a whole number'),
    (['max_steps=0'], '^max_steps must be at least 1'),
    (['overfit_batches=0'], '^overfit_batches must be at least 1'),
    (["overfit_batches='2'"], '^overfit_batches must be a whole number'),
    (['overfit_batches=2', 'train_images=100'], '^overfit_batches=2 .* leave train_images out'),
    (['overfit_batches=2', 'max_steps=10'], '^overfit_batches=2 .* leave max_steps out'),
    (['overfit_batches=2', 'label_smoothing=0.1'], '^label_smoothing=0.1 .* overfit_batches'),
])
def test_bad_values_and_combinations_are_one_line_naming_the_key(args, message):
    with pytest.raises(ConfigError, match=message):
        settings.checked_config(args)


@pytest.mark.parametrize('args, message', [
    (['train_images=1438'], r'^train_images=1438 is more than the training split holds \(1437 images\)'),
    (['overfit_batches=29'], r'^overfit_batches=29 x batch_size=50 = 1450 images is more than the training '
                             r'split holds \(1437 images\)'),
])
def test_more_images_than_the_split_holds_are_refused_naming_its_size(args, message):
    with pytest.raises(ConfigError, match=message):
        input_source.open_dataset(load(*args), None)


def test_a_job_of_several_workers_refuses_what_one_machine_only_can_do():
    role = cluster.Role(['localhost:1', 'localhost:2'], 0)
    cluster.check_config(load('train_images=100'), role)  # arrays: every worker draws the same sample
    for args, key in ((['max_steps=5'], 'max_steps'), (['overfit_batches=1'], 'overfit_batches'),
                      (['train_images=100'], 'train_images')):
        with pytest.raises(ClusterError, match=f'^{key}='):
            cluster.check_config(load(*args), role, train_files=['a', 'b'] if key == 'train_images' else None)


# --- names ---------------------------------------------------------------------------------

def test_each_quick_run_key_is_in_the_run_name_once():
    assert constant.run_name(load('train_images=500')) == 'custom_model_relu_train_images-500'
    assert constant.run_name(load('max_steps=200', 'use_se=True')) == 'custom_model_se_relu_max_steps-200'
    assert constant.run_name(load('overfit_batches=2')) == 'custom_model_relu_overfit-2'
    for key, part in (('train_images', '_train_images-500'), ('max_steps', '_max_steps-500'),
                      ('overfit_batches', '_overfit-500')):
        name = names.experiment_name({**constant.config, key: 500, 'learning_rate': 0.01})
        assert name.count(part) == 1 and name.count('500') == 1 and name.endswith('_learning_rate-0.01'), name
    assert constant.run_name(load('train_images=500', 'run_name=mine')) == 'mine'


# --- TFRecords -----------------------------------------------------------------------------

SHARDS = {'train': 3, 'valid': 2, 'test': 2}


@pytest.fixture(scope='module')
def records_root(tmp_path_factory):
    """CIFAR-10 fixture batches written as 128 px TFRecords (135 / 15 / 30), as a user writes them."""
    root = tmp_path_factory.mktemp('records')
    batches = fixtures.write_cifar_batches(os.path.join(root, 'cifar_32', 'data_dir'), n_per_batch=30)
    assert TFRecordsWriter.main([f'datasets_root={root}', 'resize_batch_size=64', 'one_pass=True',
                                 f'tfrecord_shards={SHARDS!r}']) == 0
    return root, batches['y_train'][15:]  # the first tenth is the validation split


def records_cfg(root, *args):
    return load('dataset_name=cifar_128', f'datasets_root={root}', 'batch_size=16', 'eval_batch_size=32', *args)


def read_pass(session, source, split, training, seed=None):
    """(image digests, labels) of one pass, in its order."""
    source.start(session, split, training=training, seed=seed)
    digests, labels = [], []
    while True:
        try:
            images, one_hot = session.run(source.next_batch)
        except tf.errors.OutOfRangeError:
            return digests, labels
        digests += [image.tobytes() for image in np.round(images, 3)]
        labels += one_hot.argmax(1).tolist()


def test_the_writer_keeps_the_labels_of_every_shard_in_dataset_json(records_root):
    root, train_labels = records_root
    with open(os.path.join(root, 'cifar_128', 'data_dir', 'dataset.json')) as f:
        metadata = json.load(f)
    text = ''.join(metadata['shards'][name]['labels'] for name in metadata['splits']['train']['shards'])
    assert text == ''.join(map(str, train_labels))


def test_labels_in_dataset_json_that_do_not_fit_the_records_are_one_line(records_root, tmp_path):
    root, _ = records_root
    out = tmp_path / 'records'
    shutil.copytree(os.path.join(root, 'cifar_128', 'data_dir'), out)
    metadata = json.loads((out / 'dataset.json').read_text())
    name = metadata['splits']['train']['shards'][0]
    metadata['shards'][name]['labels'] = metadata['shards'][name]['labels'][:-1]
    (out / 'dataset.json').write_text(json.dumps(metadata))
    with pytest.raises(DataError, match=re.escape(f'shards.{name}.labels is ') + '.*one label of 0..9 per record'):
        TFRecordsReader.open_cifar_128(str(out))


def test_records_train_on_a_stratified_sample_the_same_every_epoch(records_root, graph, session):
    root, train_labels = records_root
    cfg = records_cfg(root, 'train_images=40')
    data = input_source.open_dataset(cfg, os.path.join(root, 'cifar_128', 'data_dir'))
    assert data.train_sample == 'stratified' and data.counts == {'train': 40, 'valid': 15, 'test': 30}
    source = input_source.make_input(data, cfg)
    first, labels = read_pass(session, source, 'train', True, seed=1)
    second, _ = read_pass(session, source, 'train', True, seed=2)
    assert len(first) == len(set(first)) == 40
    assert first != second and sorted(first) == sorted(second)  # another order of the same records
    counts = np.bincount(train_labels, minlength=10)
    assert np.bincount(labels, minlength=10).tolist() == subsets.class_shares(counts, 40).tolist()
    # the training split's evaluation is of the sample; valid and test are whole
    assert sorted(read_pass(session, source, 'train', False)[0]) == sorted(first)
    assert [len(read_pass(session, source, split, False)[0]) for split in ('valid', 'test')] == [15, 30]
    whole = TFRecordsReader.open_cifar_128(os.path.join(root, 'cifar_128', 'data_dir'))
    assert set(first) <= set(read_pass(session, input_source.make_input(whole, records_cfg(root)), 'train',
                                       False)[0])


def test_records_without_labels_in_dataset_json_train_on_a_uniform_sample(records_root, graph, session):
    root, _ = records_root
    data = TFRecordsReader.open_cifar_128(os.path.join(root, 'cifar_128', 'data_dir'))
    # as ImageNet shards without dataset.json: no labels, and the records of each file counted
    unlabelled = TFRecordsReader.with_training_sample(dataclasses.replace(data, shard_labels={}, shard_counts={}),
                                                      40, 42)
    assert unlabelled.train_sample == 'uniform' and unlabelled.num_examples('train') == 40
    digests, _ = read_pass(session, input_source.make_input(unlabelled, records_cfg(root)), 'train', True, 3)
    assert len(set(digests)) == 40
    assert 'a uniform sample' in input_source.training_part_line(records_cfg(root, 'train_images=40'), unlabelled)


def test_records_overfit_on_their_first_batches_in_the_same_order(records_root, graph, session):
    root, _ = records_root
    cfg = records_cfg(root, 'overfit_batches=2', 'augment=True')
    data = input_source.open_dataset(cfg, os.path.join(root, 'cifar_128', 'data_dir'))
    assert data.num_examples('train') == 32
    source = input_source.make_input(data, cfg)
    first, _ = read_pass(session, source, 'train', True, seed=1)
    assert len(set(first)) == 32
    assert read_pass(session, source, 'train', True, seed=2)[0] == first  # unshuffled, unaugmented
    assert read_pass(session, source, 'train', False)[0] == first  # the loss is measured on those


# --- digits runs ---------------------------------------------------------------------------

def run(root, *args):
    """main.py in this process; its exit status."""
    return main.main([f'datasets_root={root}', 'log_every=100000', *args])


def saved(root, name):
    with open(os.path.join(root, 'digits', 'save_dir', 'runs', name, 'history.json')) as f:
        return json.load(f)


def global_step(root, name, epoch):
    path = os.path.join(root, 'digits', 'save_dir', 'runs', name, f'model.ckpt-{epoch}')
    return int(tf.train.load_variable(path, 'global_step'))


def test_max_steps_trains_that_many_steps_then_tests_and_a_rerun_has_nothing_to_do(tmp_path, capsys):
    assert run(tmp_path, 'max_steps=3') == 0
    record = saved(tmp_path, 'custom_model_relu_max_steps-3')
    assert [(r['epoch'], r['train_images'], r['train_steps']) for r in record['epochs']] == [(1, 150, 3)]
    assert global_step(tmp_path, 'custom_model_relu_max_steps-3', 1) == 3
    assert record['test']['epoch'] == 1
    cfg = load('max_steps=3')
    assert records.is_complete(record, cfg)
    assert experiments.run_state(record, {**cfg, 'run_name': 'custom_model_relu_max_steps-3'}) == 'done'
    capsys.readouterr()
    assert run(tmp_path, 'max_steps=3', 'resume=True') == 0
    out = capsys.readouterr().out
    assert 'custom_model_relu_max_steps-3 has trained 3 step(s) already (max_steps=3): nothing to train' in out
    assert not re.search(r'^epoch \d+, step', out, re.M) and 'EPOCH STATISTICS' not in out
    assert saved(tmp_path, 'custom_model_relu_max_steps-3')['epochs'] == record['epochs']


def test_max_steps_counts_across_epochs_and_a_resume(tmp_path):
    # 1437 images of 50: 29 steps an epoch; 40 steps end 11 steps into epoch 2
    assert run(tmp_path, 'max_steps=40', 'max_epochs=1') == 0
    assert run(tmp_path, 'max_steps=40', 'max_epochs=10', 'resume=True') == 0
    record = saved(tmp_path, 'custom_model_relu_max_steps-40')
    assert [(r['epoch'], r['train_images'], r['train_steps']) for r in record['epochs']] == \
        [(1, DIGITS_TRAIN, 29), (2, 550, 11)]
    assert global_step(tmp_path, 'custom_model_relu_max_steps-40', 2) == 40
    assert record['test']['epoch'] == 2
    cfg = load('max_steps=40')
    assert records.is_complete(record, cfg) and not records.is_complete(record, load('max_steps=41'))


def test_a_cosine_decay_spans_max_steps_where_they_end_the_run_first(graph, session):
    step = v1.train.get_or_create_global_step()
    rate = learning_rate_schedule(optimisation.from_config(load('lr_schedule=cosine', 'max_steps=40')),
                                  step, steps_per_epoch=29)
    session.run(v1.global_variables_initializer())
    session.run(step.assign(20))
    assert session.run(rate) == pytest.approx(0.5e-3, rel=1e-5)  # half way: the cosine's middle
    session.run(step.assign(40))
    assert session.run(rate) == pytest.approx(0.0, abs=1e-9)


def test_overfit_batches_fit_on_digits_and_are_recorded(tmp_path, capsys):
    assert run(tmp_path, 'overfit_batches=2', 'max_epochs=40', 'augment=True') == 0
    out = capsys.readouterr().out
    assert 'augment=True left off for it' in out
    line = re.search(r'^Overfit check: training loss on 2 batch\(es\) fell from (\d+\.\d\d) to (\d\.\d{3}) '
                     r'in 40 epochs: it can fit them$', out, re.M)
    assert line and float(line.group(1)) > 2, out
    result = saved(tmp_path, 'custom_model_relu_overfit-2')['overfit']
    assert result['fits'] and result['final_loss'] < quick_runs.FITS_BELOW
    assert result['images'] == 100 and result['epochs'] == 40
    rows = saved(tmp_path, 'custom_model_relu_overfit-2')['epochs']
    assert {r['train_images'] for r in rows} == {100} and {r['train_steps'] for r in rows} == {2}
    cfg = load('overfit_batches=2', 'max_epochs=40', 'augment=True')
    assert experiments.run_state(saved(tmp_path, 'custom_model_relu_overfit-2'),
                                 {**cfg, 'run_name': 'custom_model_relu_overfit-2'}) == 'done'


def test_an_overfit_check_that_cannot_fit_says_so(tmp_path, capsys):
    assert run(tmp_path, 'overfit_batches=2', 'max_epochs=2', 'learning_rate=1e-7') == 0
    out = capsys.readouterr().out
    assert re.search(r'^Overfit check: training loss on 2 batch\(es\) fell only to \d\.\d\d \(from \d\.\d\d\) '
                     r'in 2 epochs, not below 0.05: the network cannot fit 2 batch\(es\); look at the '
                     r'learning rate, the loss or the data$', out, re.M), out
    assert saved(tmp_path, 'custom_model_relu_overfit-2')['overfit']['fits'] is False


def test_the_overfit_batches_are_the_first_of_the_split_every_epoch(graph, session):
    cfg = load('overfit_batches=3', 'batch_size=10', 'augment=True')
    data = input_source.open_dataset(cfg, None)
    np.testing.assert_array_equal(data.train.images, loaders.load_digits(None, 42, False).train.images[:30])
    source = input_source.make_input(data, cfg)
    first, labels = read_pass(session, source, 'train', True, seed=1)
    assert read_pass(session, source, 'train', True, seed=2) == (first, labels)
    assert labels == data.train.labels.tolist()


def test_is_complete_needs_the_test_and_the_overfit_verdict():
    rows = [{'epoch': 1, 'train_steps': 29}, {'epoch': 2, 'train_steps': 11}]
    cfg = load('max_steps=40')
    assert not records.is_complete({'epochs': rows}, cfg)
    assert records.is_complete({'epochs': rows, 'test': {}}, cfg)
    assert not records.is_complete({'epochs': rows, 'test': {}}, load())  # 10 epochs asked
    overfit = load('overfit_batches=2', 'max_epochs=2')
    assert not records.is_complete({'epochs': rows, 'test': {}, 'overfit': {'initial_loss': 2.3}}, overfit)
    assert records.is_complete({'epochs': rows, 'test': {}, 'overfit': {'fits': False}}, overfit)
    # an epoch begun: its images so far count as whole steps
    assert records.steps_left({'epochs': rows[:1]}, cfg, skip=100) == 40 - 29 - 2
    assert records.steps_left({'epochs': rows}, load()) is None
