"""Class activation maps (trainer/study/cam.py, and what instruments.py writes of them)."""
import contextlib
import io

import numpy as np
import pytest
import tensorflow as tf

import instruments
import main
from foundation.data import loaders
from foundation.errors import ConfigError
from Model import Model
from trainer.config import settings
from trainer.study import cam, figures

v1 = tf.compat.v1


def test_a_logit_that_depends_on_one_region_lights_that_region():
    """Two maps see the whole image; the logit reads only the second, masked
    to the top-left quarter: the map is 1 there and 0 elsewhere."""
    with tf.Graph().as_default(), v1.Session() as session:
        images = v1.placeholder(tf.float32, [None, 8, 8, 1])
        mask = np.zeros((1, 8, 8, 1), np.float32)
        mask[:, :4, :4] = 1.0
        whole = tf.nn.relu(images)
        region = tf.nn.relu(images) * mask
        maps = tf.concat([whole, region], -1)
        read = tf.reduce_sum(maps[..., 1], [1, 2])  # the masked map only
        logits = tf.stack([read, tf.zeros_like(read)], 1)
        heat, predicted = cam.grad_cam(logits, maps, [8, 8])
        shown, classes = session.run([heat, predicted], {images: np.ones((2, 8, 8, 1))})
    assert classes.tolist() == [0, 0]
    np.testing.assert_allclose(shown[:, :3, :3], 1.0)
    np.testing.assert_allclose(shown[:, 5:, :], 0.0)
    np.testing.assert_allclose(shown[:, :, 5:], 0.0)


def test_the_maps_of_a_model_cover_its_images_and_name_its_prediction():
    cfg = settings.load_config(['use_se=True'])
    with tf.Graph().as_default():
        v1.set_random_seed(0)
        model = Model.from_config(cfg, (8, 8, 1))
        maps = cam.ClassActivationMaps(model)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            images = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype(np.float32)
            shown, predicted = maps(session, images)
            logits = session.run(model.logits, {model.X: images})
    assert shown.shape == (3, 8, 8) and shown.min() >= 0.0 and shown.max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(predicted, logits.argmax(1))
    assert cam.last_feature_maps(model).shape.as_list()[1:] == [2, 2, 64]  # conv3 of 8 px digits


# --- instruments.py -------------------------------------------------------------------

SEEDS = {'cam_a': 42, 'cam_b': 7}  # two runs of one network, their digits split apart


def pages(path):
    data = open(path, 'rb').read()
    return data.count(b'/Type /Page') - data.count(b'/Type /Pages')


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
    """Two 1-epoch SE runs of the custom model on digits with other seeds,
    then instruments.py on each with cam_images=5; what it printed."""
    root = tmp_path_factory.mktemp('cam')
    printed = {}
    for name, seed in SEEDS.items():
        keys = [f'datasets_root={root}', f'run_name={name}', 'use_se=True']
        with contextlib.redirect_stdout(io.StringIO()):
            assert main.train(settings.load_config([*keys, f'seed={seed}', 'max_epochs=1',
                                                    'log_every=100000'])) == 0
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert instruments.main([*keys, 'cam_images=5']) == 0  # the seed is the run's
        printed[name] = out.getvalue()
    return root / 'digits' / 'save_dir' / 'runs', printed


def test_instruments_writes_the_maps_of_the_first_validation_images(two_runs):
    runs, printed = two_runs
    for name, seed in SEEDS.items():
        measured = cam.load(runs / name / cam.NUMBERS_NAME)
        valid = loaders.load_digits(None, seed, False).valid
        assert measured.indices.tolist() == [0, 1, 2, 3, 4]
        assert measured.maps.shape == (5, 8, 8) and measured.images.shape == (5, 8, 8, 1)
        assert measured.maps.min() >= 0.0 and measured.maps.max() <= 1.0 + 1e-6
        # the run's own validation images, un-normalised back to their pixel levels
        np.testing.assert_allclose(measured.images, valid.images[:5], atol=1e-4)
        np.testing.assert_array_equal(measured.true, valid.labels[:5])
        assert measured.predicted.shape == (5,) and measured.predicted.dtype == np.int64
        assert measured.layer == 'conv3' and measured.feature_shape == (2, 2)
        assert measured.epoch == 1
        assert pages(runs / name / cam.FIGURE_NAME) == 1
        assert ('Class activation maps (Grad-CAM at conv3) of the first 5 validation images'
                in printed[name])
        assert f'runs/{name}/{cam.FIGURE_NAME} (numbers: {cam.NUMBERS_NAME})' in printed[name]


def test_runs_of_other_seeds_draw_the_same_indices(two_runs):
    runs, _ = two_runs
    first, second = (cam.load(runs / name / cam.NUMBERS_NAME) for name in SEEDS)
    np.testing.assert_array_equal(first.indices, second.indices)


def test_the_figure_pages_colour_images_and_says_when_the_maps_are_uniform(tmp_path):
    """17 colour images of 1x1 feature maps: two pages, long class names cut."""
    rng = np.random.default_rng(0)
    n = 17
    measured = cam.ActivationMaps(np.arange(n), rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32),
                                  np.ones((n, 4, 4), np.float32), np.zeros(n, np.int64),
                                  np.arange(n) % 2, 'stage5/block3', (1, 1))
    assert 'every map is uniform' in figures.cam_caption(measured)
    figures.cam_figure(measured, tmp_path / 'maps.pdf', 'a title', ['a' * 40, 'b'], 255)
    assert pages(tmp_path / 'maps.pdf') == 2
    assert figures.short_name('a' * 40) == 'a' * (figures.MAX_NAME - 1) + '…'


# --- the key ------------------------------------------------------------------------------

@pytest.mark.parametrize('value, message', [
    ('0', 'cam_images must be at least 1'),
    ('2.5', 'cam_images must be a whole number, got 2.5'),
    ('True', 'cam_images must be a whole number, got True'),
    ('many', "cam_images must be a whole number, got 'many'"),
])
def test_cam_images_is_a_whole_number_of_at_least_one(value, message):
    with pytest.raises(ConfigError, match=f'^{message}'):
        settings.load_config([f'cam_images={value}'])


def test_cam_images_changes_what_is_drawn_not_the_network():
    assert settings.load_config(['cam_images=32'])['cam_images'] == 32
    assert settings.KEYS['cam_images'].tags == {settings.HOW}
    assert 'cam_images' not in settings.graph_signature(settings.load_config(['use_se=True']))
