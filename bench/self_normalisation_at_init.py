"""SELU's self-normalisation at initialisation, measured with the project
(an instrument of the study): does every layer's output start near mean 0 and variance 1?

    python -m bench.self_normalisation_at_init data_dir=../shared/datasets/mnist [key=value ...]

For the custom model and ResNet50 (without SE), under SELU and under ReLU,
as main.py starts them (the same seed, LeCun-normal or He-normal weights,
inputs standardised per channel): the mean and variance of every layer's
output on the fixed batch the training runs record on (the first 256
validation images), in batch norm's inference mode (moving averages 0 and
1, as a fresh network evaluates) and training mode (the batch's statistics,
as it trains). Prints the custom model layer by layer and ResNet50 part by
part (stem, stages 2-5, head), and writes bench/results/
self_normalisation_at_init.json and .pdf (the figures across the layers).
"""
import json
import os
import sys

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

import constant
from bench import performance_docs
from trainer.config import settings
from trainer.study import figures, self_normalisation
from trainer.training import input_source, training_graph

v1 = tf.compat.v1
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
NETWORKS = [(model, activation) for model in ('custom_model', 'resnet50') for activation in ('selu', 'relu')]


def at_init(cfg, data):
    """The self-normalisation statistics of cfg's network as a run starts it."""
    built = training_graph.build_graph(cfg, data)
    with built.graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session:
        session.run(v1.global_variables_initializer())
        recorder = self_normalisation.Recorder(built.model, cfg['eval_batch_size'])
        images = self_normalisation.fixed_batch(session, built.model, built.source)
        record = {}
        self_normalisation.add(record, recorder.layers, len(images), 0,
                               recorder.measure(session, images))
        return record[self_normalisation.KEY]


def run(argv):
    base = settings.load_config(['dataset_name=mnist', 'download=False', *argv])
    data = input_source.open_dataset(base, constant.derived_dirs(base)['DATA_DIR'])
    measured, pdf = {}, os.path.join(RESULTS, 'self_normalisation_at_init.pdf')
    os.makedirs(RESULTS, exist_ok=True)
    with figures.pdf_pages(pdf) as pages:
        for model, activation in NETWORKS:
            cfg = settings.load_config([], base={**base, 'model': model, 'activation_fn': activation,
                                                 'use_se': False})
            name = f'{model}_{activation}'
            statistics = measured[name] = at_init(cfg, data)
            print(f"\n### {name} at initialisation, {base['dataset_name']}, "
                  f"{statistics['images']} validation images\n")
            print('\n'.join(self_normalisation.table_markdown(statistics)))
            modes = [m for m in self_normalisation.MODES if m in statistics['epochs'][0]]
            pages.savefig(figures.depth_profile_figure(
                statistics, modes, f"{name} on {base['dataset_name']}, at initialisation"))
    with open(os.path.join(RESULTS, 'self_normalisation_at_init.json'), 'w') as f:
        json.dump(measured, f, indent=1)
    print(f'\nFigures across the layers in: {os.path.relpath(pdf)}')


if __name__ == '__main__':
    v1.disable_eager_execution()  # as main.py runs
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        run(argv)
