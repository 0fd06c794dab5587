"""Training recipes: warmup, reduce on plateau and early stopping, EMA of
the weights, AdamW and Nesterov, gradient clipping, mixup and cutmix,
determinism. The graph parts against numpy references on small graphs,
the loop parts on synthetic histories and on short digits runs, resumed
in the middle of an epoch."""
import contextlib
import io
import json
import signal

import numpy as np
import pytest
import tensorflow as tf

import constant
import main
from foundation.errors import ConfigError, ResumeError
from foundation.networks import mixing
from Model import Model
from tests.test_research_knobs import DIGITS, config, digits_feed, two_steps
from trainer.after_training import data_summary, inference
from trainer.config import settings
from trainer.runs import patience, records
from trainer.training import interruption

v1 = tf.compat.v1


def recipe_model(steps_per_epoch=None, **overrides):
    """The custom model on digits with `overrides`, seeded, in the current graph."""
    v1.set_random_seed(0)
    return Model.from_config(config(model='custom_model', dataset_name='digits', **overrides), DIGITS,
                             steps_per_epoch=steps_per_epoch)


# --- warmup ------------------------------------------------------------------------------

def test_warmup_rises_linearly_to_the_schedules_rate(session):
    """10 steps an epoch, 2 epochs of warmup: step s gets (s + 1) / 20 of the
    cosine schedule's rate, cos decay over 5 epochs = 50 steps."""
    model = recipe_model(steps_per_epoch=10, learning_rate=0.1, lr_schedule='cosine', max_epochs=5,
                         warmup_epochs=2)
    v1.global_variables_initializer().run()
    cosine = [0.1 * 0.5 * (1 + np.cos(np.pi * s / 50)) for s in range(50)]
    feed = {**digits_feed(model, n=4), model.is_training: True}
    rates = []
    for _ in range(21):
        rates.append(session.run(model.learning_rate))
        session.run(model.train_op, feed)
    for step in (0, 9, 19, 20):  # the first step, half-way, the warmup's last, the first after
        assert rates[step] == pytest.approx(min(1, (step + 1) / 20) * cosine[step], rel=1e-5), step
    assert rates[0] == pytest.approx(0.1 / 20, rel=1e-5)


def test_warmup_beyond_the_run_and_other_bad_values_are_one_line():
    cases = [(['warmup_epochs=12', 'max_epochs=10'], 'warmup_epochs=12 is beyond max_epochs=10'),
             (['early_stopping_patience=0'], 'early_stopping_patience must be at least 1'),
             (['plateau_patience=0'], 'plateau_patience must be at least 1'),
             (['ema_decay=1.0'], 'ema_decay must be a number between 0 and 1'),
             (['ema_decay=0'], 'ema_decay must be a number between 0 and 1'),
             (['mixup_alpha=0'], 'mixup_alpha must be greater than 0'),
             (['clip_grad_norm=-1'], 'clip_grad_norm must be greater than 0'),
             (['optimizer=lamb'], "optimizer='lamb' is not valid; choose one of: adam, adamw, momentum, nesterov"),
             (['cutmix_alpha=1', 'overfit_batches=2'], 'cutmix_alpha=1 mixes the batches'),
             (['deterministic=1'], 'deterministic must be True or False')]
    for args, said in cases:
        with pytest.raises(ConfigError) as error:
            settings.checked_config(args)
        assert said in str(error.value) and '\n' not in str(error.value), args


def test_each_recipe_key_that_is_on_is_in_the_run_name():
    cfg = settings.checked_config(['warmup_epochs=2', 'plateau_patience=3', 'early_stopping_patience=5',
                                   'clip_grad_norm=1.5', 'ema_decay=0.999', 'mixup_alpha=0.2', 'cutmix_alpha=1'])
    assert constant.run_name(cfg) == ('custom_model_relu_warmup-2_plateau-3_early_stop-5_clip-1.5_ema-0.999'
                                      '_mixup-0.2_cutmix-1')
    assert constant.run_name(settings.checked_config(['optimizer=adamw', 'deterministic=True'])) == \
        'custom_model_relu'  # an optimiser is a choice of an existing key; determinism changes no result


# --- early stopping and reduce on plateau, off the history -------------------------------

def rows(losses):
    return [{'epoch': n, 'valid_loss': loss} for n, loss in enumerate(losses, 1)]


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    history = rows([1.0, 0.8, 0.79, 0.85, 0.81, 0.7, 0.9])
    cfg = {'early_stopping_patience': 2, 'min_delta': 0.0}
    assert patience.stopped_at(history, cfg) == 5  # best at 3 (0.79); 4 and 5 not lower
    assert patience.stopped_at(history, {**cfg, 'min_delta': 0.05}) == 4  # 0.79 is not 0.05 below 0.8
    assert patience.stopped_at(history, {**cfg, 'early_stopping_patience': 3}) is None
    assert patience.stopped_at(history[:4], cfg) is None  # a resume before the stop goes on
    assert patience.stopped_at(history, {'early_stopping_patience': None}) is None
    line = patience.stop_line(history, cfg)
    assert line.startswith('stopped early at epoch 5:') and 'its last larger fall at epoch 3' in line


def test_reduce_on_plateau_multiplies_the_rate_and_counts_again():
    history = rows([1.0, 1.1, 1.2, 1.3, 0.5, 0.6, 0.7])
    found = patience.plateau(history, {'plateau_patience': 2, 'plateau_factor': 0.5, 'min_delta': 0.0})
    assert found.reduced_after == (3, 7) and found.scale == 0.25  # after 2, 3 and after 6, 7; 4 restarts the count
    assert patience.plateau(history, {'plateau_patience': None}).scale == 1.0


# --- the optimiser ------------------------------------------------------------------------

def test_adamw_is_one_adam_step_after_a_decoupled_decay(session):
    lr, decay, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    model = recipe_model(optimizer='adamw', learning_rate=lr, weight_decay=decay, decay_base=1.0)
    variables = model.trainable_variables()
    decayed = set(v.op.name for v in v1.get_collection(v1.GraphKeys.WEIGHTS))
    assert decayed and decayed < set(v.op.name for v in variables)  # biases are not decayed
    grads = tf.gradients(model.objective, variables)
    v1.global_variables_initializer().run()
    feed = {**digits_feed(model, n=8), model.is_training: True}
    w0, g = session.run([variables, grads], feed)
    objective_before = session.run(model.objective, feed)
    assert objective_before == pytest.approx(session.run(model.train_loss, feed), rel=1e-6)  # no L2 in the loss
    session.run(model.train_op, feed)
    w1 = session.run(variables)
    for v, w, grad, after in zip(variables, w0, g, w1):
        w = np.float64(w)
        shrunk = w * (1 - lr * decay) if v.op.name in decayed else w
        m, s = (1 - b1) * grad, (1 - b2) * grad ** 2
        lr_t = lr * np.sqrt(1 - b2) / (1 - b1)  # TF1 Adam's bias correction at step 1
        expected = shrunk - lr_t * m / (np.sqrt(s) + eps)
        np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-6, err_msg=v.op.name)


def test_nesterov_momentum_steps_against_numpy(session):
    lr, mu = 0.05, 0.9
    model = recipe_model(optimizer='nesterov', momentum=mu, learning_rate=lr, decay_base=1.0)
    for v, a, b, c, d1, d2 in two_steps(session, model):
        # TF's Nesterov: accum = mu accum + g; w -= lr (g + mu accum)
        accum1 = d1
        np.testing.assert_allclose(a - b, lr * (d1 + mu * accum1), rtol=1e-3, atol=1e-7, err_msg=v.op.name)
        accum2 = mu * accum1 + d2
        np.testing.assert_allclose(b - c, lr * (d2 + mu * accum2), rtol=1e-3, atol=1e-7, err_msg=v.op.name)


def test_clipping_bounds_the_global_norm_of_the_step(session):
    lr, clip = 0.1, 0.05
    model = recipe_model(optimizer='momentum', momentum=0.0, learning_rate=lr, decay_base=1.0,
                         clip_grad_norm=clip)
    variables = model.trainable_variables()
    grads = tf.gradients(model.objective, variables)
    v1.global_variables_initializer().run()
    feed = {**digits_feed(model, n=8), model.is_training: True}
    w0, g = session.run([variables, grads], feed)
    norm = np.sqrt(sum(float(np.sum(np.float64(x) ** 2)) for x in g))
    assert norm > clip  # the case that clips
    session.run(model.train_op, feed)
    w1 = session.run(variables)
    steps = [np.float64(a) - b for a, b in zip(w0, w1)]
    assert np.sqrt(sum(float(np.sum(d ** 2)) for d in steps)) == pytest.approx(lr * clip, rel=1e-3)
    for d, grad in zip(steps, g):  # the gradient's direction, scaled to the bound
        np.testing.assert_allclose(d, lr * grad * clip / norm, rtol=1e-3, atol=1e-7)


def test_the_ema_shadow_follows_numpy_and_evaluation_reads_it(session):
    decay, steps = 0.8, 4
    model = recipe_model(ema_decay=decay, learning_rate=0.01)
    variables = model.trainable_variables()
    shadows = [model.ema.average(v) for v in variables]
    v1.global_variables_initializer().run()
    feed = {**digits_feed(model, n=8), model.is_training: True}
    expected = [np.float64(w) for w in session.run(variables)]  # the shadows start as the weights
    for _ in range(steps):
        session.run(model.train_op, feed)
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, session.run(variables))]
    for shadow, e in zip(session.run(shadows), expected):
        np.testing.assert_allclose(shadow, e, rtol=1e-5, atol=1e-7)
    # The inference copy reads the shadows: the same logits as the raw copy with the shadows loaded in
    eval_logits = session.run(model.eval_logits, feed)
    raw = session.run(model.logits, {**feed, model.is_training: False})
    for v, value in zip(variables, session.run(shadows)):
        v.load(value, session)
    np.testing.assert_allclose(eval_logits, session.run(model.logits, {**feed, model.is_training: False}),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(raw, eval_logits)


# --- mixup and cutmix --------------------------------------------------------------------

def test_mixup_and_cutmix_batches_are_numpys_for_the_draws(session):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 8, 10, 3)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 6)]
    lam, partner, centre = 0.7, np.array([3, 0, 5, 1, 2, 4]), np.array([0.3, 0.8])
    mixed_images, mixed_labels = session.run(mixing.mixup(tf.constant(images), tf.constant(labels),
                                                          tf.constant(lam), tf.constant(partner)))
    np.testing.assert_allclose(mixed_images, lam * images + (1 - lam) * images[partner], rtol=1e-6)
    np.testing.assert_allclose(mixed_labels, lam * labels + (1 - lam) * labels[partner], rtol=1e-6)
    cut_images, cut_labels = session.run(mixing.cutmix(tf.constant(images), tf.constant(labels),
                                                       tf.constant(lam), tf.constant(partner),
                                                       tf.constant(centre, tf.float32)))
    # timm's rand_bbox: sides int(8 * sqrt(0.3)) = 4, int(10 * sqrt(0.3)) = 5 about (int(2.4), int(8.0)) = (2, 8)
    top, bottom, left, right = 0, 4, 6, 10
    expected = images.copy()
    expected[:, top:bottom, left:right] = images[partner][:, top:bottom, left:right]
    np.testing.assert_array_equal(cut_images, expected)
    kept = 1 - (bottom - top) * (right - left) / 80
    np.testing.assert_allclose(cut_labels, kept * labels + (1 - kept) * labels[partner], rtol=1e-6)


def test_the_draws_are_the_same_for_the_same_step_and_seed(session):
    step = v1.placeholder(tf.int64, [])
    found = mixing.draws(step, 8, 0.2, 1.0, seed=5)
    other = mixing.draws(step, 8, 0.2, 1.0, seed=6)
    fetch = [found.lam, found.partner, found.cutmix, found.centre]
    first, again, later = (session.run(fetch, {step: s}) for s in (3, 3, 4))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], later[1]) or first[0] != later[0]
    assert session.run(other.lam, {step: 3}) != first[0]
    assert sorted(first[1]) == list(range(8))  # a permutation of the batch
    switches = [session.run(found.cutmix, {step: s}) for s in range(200)]
    assert 70 < sum(switches) < 130  # each batch one of the two, at even odds


# --- the loop: resumes mid-epoch, determinism ---------------------------------------------

RECIPE = ('max_epochs=6', 'warmup_epochs=1', 'plateau_patience=1', 'plateau_factor=0.5',
          'early_stopping_patience=2', 'min_delta=0.15', 'ema_decay=0.9', 'mixup_alpha=0.4', 'cutmix_alpha=1',
          'clip_grad_norm=5', 'optimizer=adamw', 'weight_decay=0.01', 'deterministic=True')


def train(root, *args, stop_after=None, monkeypatch=None):
    """main.train of digits under `root`; with `stop_after`, a SIGTERM is
    asked for once a training pass has seen that many images."""
    if stop_after is not None:
        check = interruption.StopRequests.check

        def stopping(self, images=None):
            if images is not None and images >= stop_after and self.signum is None:
                self.signum = signal.SIGTERM
            check(self, images)
        monkeypatch.setattr(interruption.StopRequests, 'check', stopping)
    cfg = settings.load_config([f'datasets_root={root}', *args])
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        status = main.train(cfg)
    monkeypatch and monkeypatch.undo()
    run = root / 'digits' / 'save_dir' / 'runs' / constant.run_name(cfg)
    return status, json.loads((run / 'history.json').read_text()), out.getvalue()


# An epoch resumed mid-way has a running loss of the images after the resume only: left out there.
FIGURES = ('train_loss', 'train_accuracy', 'valid_loss', 'valid_accuracy', 'learning_rate')


def figures(record, also=()):
    return [{k: e[k] for k in ('epoch', *FIGURES, *also)} for e in record['epochs']]


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp('straight')
    status, record, out = train(root, *RECIPE)
    assert status == 0
    return record, out, root


def test_predict_and_export_restore_the_moving_averages(uninterrupted):
    record, _, root = uninterrupted
    cfg = settings.load_config([f'datasets_root={root}', *RECIPE])
    prefix = str(root / 'digits' / 'save_dir' / 'runs' / constant.run_name(cfg) / record['best']['checkpoint'])
    serving = inference.Serving(cfg, record[data_summary.KEY])
    with serving.graph.as_default(), v1.Session() as session:
        serving.saver.restore(session, prefix)
        kernel = next(v for v in v1.global_variables() if v.op.name == 'custom_model/conv1/kernel')
        restored = session.run(kernel)
    average = tf.train.load_variable(prefix, 'custom_model/conv1/kernel/ExponentialMovingAverage')
    np.testing.assert_array_equal(restored, average)
    assert not np.array_equal(restored, tf.train.load_variable(prefix, 'custom_model/conv1/kernel'))


def test_the_recipe_stops_early_reduces_on_plateau_and_tests_the_best_epoch(uninterrupted):
    record, out, _ = uninterrupted
    epochs = [e['epoch'] for e in record['epochs']]
    stopped = patience.stopped_at(record['epochs'], {'early_stopping_patience': 2, 'min_delta': 0.15})
    assert stopped is not None and epochs[-1] == stopped < 6
    assert f'stopped early at epoch {stopped}' in out
    reduced = patience.plateau(record['epochs'], {'plateau_patience': 1, 'plateau_factor': 0.5, 'min_delta': 0.15})
    assert reduced.reduced_after and f'Epoch {reduced.reduced_after[0]}, reduce on plateau' in out
    rates = [e['learning_rate'] for e in record['epochs']]
    after = reduced.reduced_after[0]  # the epoch after it trains at half the rate (exponential decay: ~flat)
    assert rates[after] / rates[after - 1] == pytest.approx(0.5, rel=1e-3)
    assert record['test']['epoch'] == stopped and 'test_accuracy' in record['best']


def test_a_resume_in_the_middle_of_an_epoch_gives_the_same_history(uninterrupted, tmp_path, monkeypatch):
    straight, _, _ = uninterrupted
    status, _, _ = train(tmp_path, *RECIPE, stop_after=700, monkeypatch=monkeypatch)  # epoch 1, mid-way
    assert status == 128 + signal.SIGTERM
    status, _, _ = train(tmp_path, *RECIPE, 'resume=True', stop_after=500, monkeypatch=monkeypatch)  # epoch 2
    assert status == 128 + signal.SIGTERM
    status, resumed, out = train(tmp_path, *RECIPE, 'resume=True')
    assert status == 0
    assert figures(resumed) == figures(straight)
    assert resumed['best'] == straight['best'] and resumed['test'] == straight['test']
    status, _, out = train(tmp_path, *RECIPE, 'resume=True')  # complete: nothing to train
    assert status == 0 and 'stopped early at epoch' in out and 'nothing to train' in out


def test_deterministic_runs_give_bit_equal_histories(tmp_path):
    args = ('max_epochs=2', 'deterministic=True', 'model=custom_model', 'use_se=True')
    _, first, _ = train(tmp_path / 'a', *args)
    _, second, _ = train(tmp_path / 'b', *args)
    also = ('train_running_loss',)
    assert figures(first, also) == figures(second, also) and first['test'] == second['test']


def test_a_run_saved_before_the_recipe_keys_resumes_only_without_their_variables():
    """A record without ema_decay or plateau_patience was trained without
    their variables: resuming it with one on is the one-line refusal."""
    old = {'epochs': [{'epoch': 1}], 'config': {k: v for k, v in config().items()
                                                  if k not in ('ema_decay', 'plateau_patience')}}
    assert records.graph_changes(old, config()) == ''
    assert records.graph_changes(old, config(ema_decay=0.99)) == 'ema_decay: None in the checkpoint, 0.99 now'
    with pytest.raises(ResumeError, match='^cannot resume run with another network .*plateau_patience'):
        records.check_same_graph(old, config(plateau_patience=2), 'run')
