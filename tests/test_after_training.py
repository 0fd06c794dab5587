"""After training: the test split's confusion matrix at the end of a
run, evaluate.py, predict.py, export.py, class names with the data, and the
checkpoints of replicas and of a job serving too.

References are independent of the code under test: the digits' splits and
statistics straight from scikit-learn, the checkpoint's probabilities from
training's own Model (softmax of its logits), scikit-learn's metrics, the
SavedModel loaded by TensorFlow alone in a fresh process.
"""
import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, top_k_accuracy_score
from sklearn.model_selection import train_test_split

import evaluate
import export
import ImageResizer
import main
import predict
import TFRecordsWriter
from foundation.data import loaders
from foundation.networks import architecture
from Model import Model, network
from tests.fixtures import TWO_CPU_SCRIPT, write_cifar_batches
from trainer import console
from trainer.after_training import inference, trained_run
from trainer.config import settings
from trainer.runs import checkpoints
from trainer.training import training_graph

v1 = tf.compat.v1
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = 'custom_model_relu'
DIGIT_LEVELS = 16  # scikit-learn's digits hold 0..16; image files 0..255


def digits_reference(seed=42):
    """(training images, test images, test labels) of the digits' split, as
    loaders.load_digits makes it, straight from scikit-learn."""
    digits = load_digits()
    images, labels = digits.images[..., np.newaxis], digits.target
    rest_x, test_x, rest_y, test_y = train_test_split(images, labels, test_size=180, stratify=labels,
                                                      random_state=seed)
    train_x, _, _, _ = train_test_split(rest_x, rest_y, test_size=180, stratify=rest_y,
                                        random_state=seed)
    return train_x, test_x, test_y


def checkpoint_probabilities(cfg, prefix, levels, mean, std):
    """softmax of training's Model's logits (batch norm in inference mode)
    for images of the data's levels, restored from `prefix`."""
    with tf.Graph().as_default():
        model = Model.from_config(cfg, levels.shape[1:])
        probabilities = tf.nn.softmax(model.logits)
        with v1.Session() as session:
            # the best epoch's checkpoint holds the network, not the optimiser's slots
            v1.train.Saver(training_graph.inference_variables(model)).restore(session, prefix)
            return session.run(probabilities, {model.X: ((levels - mean) / std).astype(np.float32)})


def start_child(script, *args, env=None):
    """A Python child running `script`, its output collected by finish()."""
    return subprocess.Popen([sys.executable, '-c', script, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=args[0])


def finish(child):
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope='module')
def replicated(tmp_path_factory):
    """Checkpoints written by two replicas and under the multi-worker
    strategy, made by a child process (the CPU is split into two devices
    before TensorFlow starts) while the tests here run."""
    root = tmp_path_factory.mktemp('replicated')
    return root, start_child(REPLICATED.format(project=PROJECT_DIR), root,
                             env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})


@pytest.fixture(scope='module')
def trained(tmp_path_factory, replicated):
    """A digits run of two epochs, trained in this process as main.py
    trains, and exported; a fresh process loads the SavedModel meanwhile."""
    root = tmp_path_factory.mktemp('after')
    args = [f'datasets_root={root}', 'max_epochs=2', 'log_every=100000']
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main.train(settings.load_config(args)) == 0
        trained_out = out.getvalue()
        assert export.main(args) == 0
    run = root / 'digits' / 'save_dir' / 'runs' / RUN
    record = json.loads((run / 'history.json').read_text())
    train_x, test_x, test_y = digits_reference()
    pixels = test_x * 255 / DIGIT_LEVELS  # raw pixels, as image files hold them
    np.save(root / 'pixels.npy', pixels)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    loader = start_child(FRESH_LOAD, root, run / 'saved_model' / 'best', root / 'pixels.npy',
                         root / 'loaded.npz', env={**env, 'TF_CPP_MIN_LOG_LEVEL': '3'})
    mean, std = train_x.mean(), train_x.std()
    cfg = settings.load_config(args)
    best = str(run / record['best']['checkpoint'])
    return {'root': root, 'args': args, 'run': run, 'record': record, 'stdout': trained_out,
            'export_stdout': out.getvalue()[len(trained_out):], 'loader': loader,
            'cfg': cfg, 'best': best, 'mean': mean, 'std': std, 'test_x': test_x, 'test_y': test_y,
            'pixels': pixels, 'best_probabilities': checkpoint_probabilities(cfg, best, test_x, mean, std)}


def read_csv(path):
    with open(path, newline='') as f:
        return list(csv.reader(f))


def test_training_ends_with_the_test_splits_confusion_matrix_and_per_class_figures(trained):
    folder = trained['run'] / 'evaluation' / 'test-best'
    probabilities, labels = trained['best_probabilities'], trained['test_y']
    predicted = probabilities.argmax(1)
    rows = read_csv(folder / 'confusion.csv')
    assert rows[0] == ['true \\ predicted'] + [str(i) for i in range(10)]
    assert np.array_equal(np.array([r[1:] for r in rows[1:]], int), confusion_matrix(labels, predicted))
    assert json.loads((folder / 'confusion.json').read_text())['matrix'] == \
        confusion_matrix(labels, predicted).tolist()
    report = classification_report(labels, predicted, output_dict=True, zero_division=0)
    table = {r['class']: r for r in csv.DictReader(open(folder / 'per_class.csv'))}
    for name in map(str, range(10)):
        for ours, theirs in (('precision', 'precision'), ('recall', 'recall'), ('f1', 'f1-score'),
                             ('accuracy', 'recall'), ('images', 'support')):
            assert float(table[name][ours] or 0) == pytest.approx(report[name][theirs], abs=1e-12)
    summary = json.loads((folder / 'summary.json').read_text())
    best = trained['record']['best']
    # the same figure as main.py's test of the best epoch, and as scikit-learn's
    assert summary['accuracy'] == best['test_accuracy']
    assert summary['accuracy'] == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    assert summary['loss'] == pytest.approx(best['test_loss'], rel=1e-6)
    assert summary['top5_accuracy'] == pytest.approx(top_k_accuracy_score(labels, probabilities, k=5))
    confidence = probabilities.max(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = read_csv(folder / 'misclassified.csv')[1:]
    assert [int(r[0]) for r in worst] == sorted(wrong, key=lambda i: -confidence[i])[:25]
    for name in ('confusion.png', 'misclassified.png'):
        assert (folder / name).read_bytes().startswith(b'\x89PNG')
    assert f"in: {console.shown_path(folder)}" in trained['stdout']


def test_the_run_keeps_its_datas_description(trained):
    data = trained['record']['data']
    assert data['classes'] == [str(i) for i in range(10)]
    assert data['image_shape'] == [8, 8, 1] and data['pixel_max'] == DIGIT_LEVELS
    assert data['mean'] == [pytest.approx(trained['mean'], rel=1e-6)]
    assert data['std'] == [pytest.approx(trained['std'], rel=1e-6)]
    newest = json.loads((trained['run'] / 'model.ckpt-2.history.json').read_text())
    assert newest['data'] == data  # every checkpoint carries it


def test_evaluate_agrees_with_the_training_and_prints_as_it_does(trained, capsys):
    assert evaluate.main(trained['args']) == 0
    out = capsys.readouterr().out
    best = trained['record']['best']
    line = re.search(r'^Test error: loss=(\d+\.\d{4}) accuracy=(\d\.\d{4}) top5_accuracy=\d\.\d{4}$',
                     out, re.M)
    assert line and line.groups() == (f"{best['test_loss']:.4f}", f"{best['test_accuracy']:.4f}")
    assert re.search(r'^1 +18 +\d+ +\d+ +\d\.\d{4} ', out, re.M)  # the per-class table
    cfg = settings.load_config(trained['args'] + ['checkpoint=newest', 'eval_split=valid'])
    with contextlib.redirect_stdout(io.StringIO()):
        result = evaluate.evaluate(cfg)
    last = trained['record']['epochs'][-1]
    assert result['accuracy'] == last['valid_accuracy']
    assert result['loss'] == pytest.approx(last['valid_loss'], rel=1e-6)
    assert (trained['run'] / 'evaluation' / 'valid-newest' / 'confusion.csv').is_file()


def write_png(path, pixels):
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(path)


def test_predict_classifies_files_as_the_checkpoint_does(trained, tmp_path, capsys):
    images = np.round(trained['test_x'][:3] * 255 / DIGIT_LEVELS).astype(np.uint8)
    folder = tmp_path / 'digits'
    folder.mkdir()
    for i, image in enumerate(images):
        write_png(folder / f'{i}.png', image)
    big = np.repeat(np.repeat(images[0], 4, 0), 4, 1)  # 32 x 32, in colour: made 8 x 8 and grey
    write_png(tmp_path / 'big.png', np.repeat(big, 3, -1))
    Image.fromarray(np.repeat(big, 3, -1)).save(tmp_path / 'big.jpg', quality=95)
    (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not an image')
    paths = [str(folder), str(tmp_path / 'broken.png'), str(tmp_path / 'big.png'),
             str(tmp_path / 'big.jpg')]
    assert predict.main(trained['args'] + ['top_k=10'] + paths) == 2
    out, err = capsys.readouterr()
    lines = dict(line.split(': ', 1) for line in out.splitlines())
    assert list(lines) == [str(folder / f'{i}.png') for i in range(3)] + paths[2:]
    errors = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and errors[0].startswith(f'error: {tmp_path / "broken.png"} is not a readable image')
    # the 32x32 images were shrunk to the 8x8 the network takes, and predict says so
    warned = [line for line in err.splitlines() if line.startswith('warning: ')]
    assert [w.split(': ')[1] for w in warned] == paths[2:] and all('shrunk to the 8x8' in w for w in warned)
    reference = checkpoint_probabilities(trained['cfg'], str(trained['run'] / trained['record']['best']['checkpoint']),
                                         images * (DIGIT_LEVELS / 255), trained['mean'], trained['std'])
    for i, probabilities in enumerate(reference):
        printed = dict(re.findall(r'(\d) \((\d\.\d{4})\)', lines[str(folder / f'{i}.png')]))
        assert list(printed)[0] == str(probabilities.argmax())  # best first
        assert {int(k): float(v) for k, v in printed.items()} == {
            k: pytest.approx(p, abs=5.1e-5) for k, p in enumerate(probabilities)}
    first = lines[str(folder / '0.png')].split(' ')[0]
    assert lines[paths[2]].split(' ')[0] == lines[paths[3]].split(' ')[0] == first


FRESH_LOAD = """
import importlib.util, json, sys
import numpy as np
assert importlib.util.find_spec('trainer') is None and importlib.util.find_spec('Model') is None
import tensorflow as tf
model = tf.saved_model.load(sys.argv[2])
pixels = np.load(sys.argv[3])
as_uint8 = tf.constant(np.round(pixels).astype(np.uint8))
out = {'float': model.signatures['serving_default'](images=tf.constant(pixels, tf.float32))['probabilities'].numpy(),
       'uint8': model.signatures['serving_uint8'](images=as_uint8)['probabilities'].numpy()}
np.savez(sys.argv[4], classes=model.signatures['class_names']()['class_names'].numpy().astype(str), **out)
"""


def test_export_loads_without_this_project_and_gives_the_checkpoints_probabilities(trained):
    saved = trained['run'] / 'saved_model' / 'best'
    assert f'into: {console.shown_path(saved)}' in trained['export_stdout']
    finish(trained['loader'])  # tf.saved_model.load in a process without this project's modules
    out = np.load(trained['root'] / 'loaded.npz')
    difference = float(np.abs(out['float'] - trained['best_probabilities']).max())
    print(f'SavedModel against the checkpoint: largest difference {difference:.1e}')
    assert difference < 1e-5
    rounded = checkpoint_probabilities(trained['cfg'], trained['best'],
                                       np.round(trained['pixels']) * (DIGIT_LEVELS / 255),
                                       trained['mean'], trained['std'])
    assert float(np.abs(out['uint8'] - rounded).max()) < 1e-5
    assert list(out['classes']) == [str(i) for i in range(10)]


@pytest.mark.parametrize('args, said', [
    (['use_se=True'], rf'^error: no trained run custom_model_se_relu of digits in .*; the trained '
                      rf'runs there: {RUN}; name one as training did'),
    (['checkpoint=model.ckpt-7'], r"^error: no checkpoint model.ckpt-7: .*custom_model_relu's are "
                                  r"model.ckpt-1, model.ckpt-2$"),
    (['eval_split=validation'], r"^error: eval_split='validation' is not valid; choose one of: "
                                r"train, valid, test$"),
    (['dataset_name=mnist'], r'^error: no trained run custom_model_relu of mnist in .*: train it first'),
])
def test_bad_input_is_one_line_and_exit_status_2(trained, capsys, args, said):
    assert evaluate.main(trained['args'] + args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and re.search(said, err), err


def test_a_checkpoint_of_another_network_names_the_differing_keys(trained, capsys):
    path = trained['run'] / 'model.ckpt-2'
    assert export.main(trained['args'] + [f'checkpoint={path}', 'use_se=True']) == 2
    assert capsys.readouterr().err == (f'error: {path} is a checkpoint of another network (use_se: '
                                       "False in the checkpoint, True now); leave those keys out: the "
                                       "run's record gives them\n")
    assert predict.main(trained['args']) == 2
    assert 'give the image files or folders to classify' in capsys.readouterr().err


@pytest.fixture(scope='module')
def records(tmp_path_factory):
    """A cifar_128 run of one epoch on TFRecords that ImageResizer and
    TFRecordsWriter made of small CIFAR-10 batches (18 training images)."""
    root = tmp_path_factory.mktemp('records')
    batches = write_cifar_batches(root / 'cifar_32' / 'data_dir', n_per_batch=4)
    shards = "tfrecord_shards={'train': 1, 'valid': 1, 'test': 1}"
    assert ImageResizer.main([f'datasets_root={root}', shards]) == 0
    assert TFRecordsWriter.main([f'datasets_root={root}', shards]) == 0
    args = [f'datasets_root={root}', 'dataset_name=cifar_128', 'max_epochs=1', 'batch_size=6',
            'train_eval_images=6', 'log_every=100000']
    with contextlib.redirect_stdout(io.StringIO()):
        assert main.train(settings.load_config(args)) == 0
    run = root / 'cifar_128' / 'save_dir' / 'runs' / RUN
    return {'root': root, 'args': args, 'run': run, 'x_test': batches['x_test'],
            'record': json.loads((run / 'history.json').read_text())}


def test_a_run_on_tfrecords_evaluates_and_classifies_image_files(records, tmp_path, capsys):
    """evaluate reads the records' test split; predict makes a 32 px PNG a
    128 px image as ImageResizer made the records' and gives the
    checkpoint's probabilities."""
    record, run = records['record'], records['run']
    assert record['data']['classes'][:2] == ['airplane', 'automobile']
    assert evaluate.main(records['args']) == 0
    result = json.loads((run / 'evaluation' / 'test-best' / 'summary.json').read_text())
    assert result['accuracy'] == record['best']['test_accuracy'] and result['images'] == 4
    assert 'top5_accuracy' in result
    image = records['x_test'][0]
    write_png(tmp_path / 'small.png', image)
    capsys.readouterr()
    assert predict.main(records['args'] + ['top_k=10', str(tmp_path / 'small.png')]) == 0
    printed = dict(re.findall(r'(\w+) \((\d\.\d{4})\)', capsys.readouterr().out))
    resizer = ImageResizer.BicubicResizer(128)
    large = resizer(image[np.newaxis]).astype(np.float64)
    resizer.close()
    data = record['data']
    cfg = settings.load_config(records['args'])
    expected = checkpoint_probabilities(cfg, str(run / record['best']['checkpoint']), large,
                                        np.array(data['mean']), np.array(data['std']))[0]
    assert {name: float(p) for name, p in printed.items()} == {
        name: pytest.approx(p, abs=5.1e-5) for name, p in zip(data['classes'], expected)}


def test_cifar_class_names_come_from_batches_meta(tmp_path):
    write_cifar_batches(tmp_path, n_per_batch=2)
    names = [f'kind {i}' for i in range(10)]
    meta = tmp_path / 'cifar-10-batches-py' / 'batches.meta'
    meta.write_bytes(__import__('pickle').dumps({b'label_names': [n.encode() for n in names]}, protocol=2))
    assert loaders.load_cifar_32(str(tmp_path), 0, False).classes == tuple(names)
    meta.unlink()  # a folder of batches without it: CIFAR-10's own names
    assert loaders.load_cifar_32(str(tmp_path), 0, False).classes[:2] == ('airplane', 'automobile')


REPLICATED = TWO_CPU_SCRIPT + """from trainer.after_training import data_summary
from trainer.config import settings
from trainer.runs import checkpoints
from trainer.training import input_source, passes, training_graph
root = sys.argv[1]
strategies = {{'replicas': lambda: None,
               'job': lambda: v1.distribute.experimental.MultiWorkerMirroredStrategy()}}
for name, strategy in strategies.items():
    cfg = settings.load_config(['datasets_root=' + root, 'run_name=' + name, 'num_gpus=2'])
    data = input_source.open_dataset(cfg, None)
    built = training_graph.build_graph(cfg, data, strategy())
    with built.graph.as_default(), v1.Session() as session:
        session.run(v1.global_variables_initializer())
        built.source.start(session, 'train', training=True, seed=1)
        passes.train_step(session, built.model)  # weights of their own, not the initial ones
        directory = os.path.join(root, 'digits', 'save_dir', 'runs', name)
        os.makedirs(directory)
        record = {{'epochs': [{{'epoch': 1}}], 'config': settings.saved_config(cfg),
                   'data': data_summary.summary_of(data, 'digits')}}
        checkpoints.save(session, built.saver, directory, 1, 0, record)
        normalised = (data.test.images - data.mean) / data.std
        probabilities = session.run(tf.nn.softmax(built.model.logits), {{built.model.X: normalised}})
        np.save(os.path.join(directory, 'probabilities.npy'), probabilities)
        print(name, built.model.replica_count)
"""


def served_probabilities(cfg, pixels):
    """The probabilities predict.py and export.py's network gives raw
    `pixels`, with the weights of the checkpoint cfg names."""
    trained = trained_run.find(cfg)
    serving = inference.Serving(cfg, trained.record['data'])
    with serving.graph.as_default(), v1.Session() as session:
        trained_run.restore_trained(session, serving.saver, trained)
        return serving.probabilities_of(session, pixels)


# ResNet-50's 50 layers of float32 (batch norm's statistics random) amplify
# rounding: the inputs' last bit alone (pixels scaled in float32 by predict,
# in float64 here) moved its probabilities by 8e-6 on this CPU.
@pytest.mark.parametrize('model, use_se, activation, tolerance', [
    ('custom_model', True, 'selu', 1e-5), ('resnet50', True, 'relu', 5e-5)])
def test_every_network_serves_as_its_checkpoint_computes(tmp_path, model, use_se, activation,
                                                         tolerance):
    """With the trained run's custom_model_relu, every model, SE and
    activation: a checkpoint of the network as training's Model builds it
    (in the model's variable scope; batch norm's moving averages made values
    of their own) gives predict and export the probabilities of its
    inference mode. Not Model itself: ResNet-50's training graph, gradients
    and all, takes minutes to build on a small CPU."""
    cfg = settings.load_config([f'datasets_root={tmp_path}', f'model={model}', f'use_se={use_se}',
                                f'activation_fn={activation}', 'checkpoint=newest'])
    train_x, test_x, _ = digits_reference()
    mean, std = float(train_x.mean()), float(train_x.std())
    data = {'dataset_name': 'digits', 'image_shape': [8, 8, 1], 'pixel_max': DIGIT_LEVELS,
            'mean': [mean], 'std': [std], 'resize': 'bicubic', 'classes': [str(i) for i in range(10)]}
    rng = np.random.default_rng(5)
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, 8, 8, 1])
        with v1.variable_scope(model):
            probabilities = tf.nn.softmax(network(images, False, architecture.from_config(cfg)))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            for variable in v1.global_variables():
                if 'moving_' in variable.name:
                    low = 0.5 if 'variance' in variable.name else -0.2
                    variable.load(rng.uniform(low, low + 0.7, variable.shape).astype(np.float32), session)
            expected = session.run(probabilities, {images: (test_x - mean) / std})
            record = {'epochs': [{'epoch': 1}], 'config': settings.saved_config(cfg), 'data': data}
            run = tmp_path / 'digits' / 'save_dir' / 'runs' / f"{model}{'_se' if use_se else ''}_{activation}"
            checkpoints.save(session, v1.train.Saver(), str(run), 1, 0, record)
    assert np.abs(served_probabilities(cfg, test_x * 255 / DIGIT_LEVELS) - expected).max() < tolerance


def test_checkpoints_of_replicas_and_of_a_job_serve_and_evaluate(replicated):
    """A checkpoint written by two replicas (num_gpus=2, MirroredStrategy)
    and one of a graph under the multi-worker strategy restore into the
    one-device network of predict and export, and evaluate."""
    root, child = replicated
    assert finish(child).split() == ['replicas', '2', 'job', '1']
    _, test_x, test_y = digits_reference()
    for name in ('replicas', 'job'):
        run = root / 'digits' / 'save_dir' / 'runs' / name
        cfg = settings.load_config([f'datasets_root={root}', f'run_name={name}', 'checkpoint=newest'])
        written = np.load(run / 'probabilities.npy')
        assert np.abs(served_probabilities(cfg, test_x * 255 / DIGIT_LEVELS) - written).max() < 1e-5
    with contextlib.redirect_stdout(io.StringIO()):
        result = evaluate.evaluate(cfg)  # the job's, restored into the training graph of one device
    assert result['accuracy'] == pytest.approx(np.mean(written.argmax(1) == test_y))
