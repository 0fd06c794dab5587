"""What recording the self-normalisation costs a training epoch, against
BUDGET (a share of the epoch), on MNIST with the custom model.

    python -m bench.self_normalisation_cost data_dir=../shared/datasets/mnist [pairs=2] [key=value ...]

In one process and one session, on MNIST with the custom model (any
key=value changes that): training epochs as main.py trains them
(passes.train_epoch), back to back, alternately without and with what the
SelfNormalisation callbacks do after an epoch (measure every layer on the
fixed batch, add it to the record, write the CSV); then that work alone,
timed many times. The epochs of a shared machine vary by more than the
budget between themselves, so the verdict is the work alone against the median
epoch; the difference of the epoch medians is printed beside it.

Prints a table and writes bench/results/self_normalisation_cost.json.
"""
import json
import os
import statistics
import sys
import tempfile
import time

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

import constant
from bench import performance_docs
from trainer.config import settings
from trainer.study import figures, self_normalisation
from trainer.training import input_source, interruption, passes, training_graph

v1 = tf.compat.v1
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
BUDGET = 0.02  # of an epoch
REPEATS = 20


def timed(task, *args):
    started = time.perf_counter()
    task(*args)
    return time.perf_counter() - started


class Recording:
    """What SelfNormalisation and SelfNormalisationFiles do after an epoch."""

    def __init__(self, session, model, source, cfg, directory):
        self.session, self.directory, self.record = session, directory, {}
        self.recorder = self_normalisation.Recorder(model, cfg['eval_batch_size'])
        self.images = self_normalisation.fixed_batch(session, model, source)

    def after_epoch(self, epoch):
        measured = self.recorder.measure(self.session, self.images)
        self_normalisation.add(self.record, self.recorder.layers, len(self.images), epoch, measured)
        self_normalisation.write_csv(self.directory, self.record[self_normalisation.KEY])


def run(argv):
    pairs = int(next((a.split('=', 1)[1] for a in argv if a.startswith('pairs=')), 2))
    argv = [a for a in argv if not a.startswith('pairs=')]
    cfg = settings.load_config(['dataset_name=mnist', 'download=False', 'log_every=1000000', *argv])
    data = input_source.open_dataset(cfg, constant.derived_dirs(cfg)['DATA_DIR'])
    built = training_graph.build_graph(cfg, data)
    stop = interruption.StopRequests()  # no signal handlers: never asks to stop
    with built.graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session, \
            tempfile.TemporaryDirectory(prefix='bench_selfnorm_') as directory:
        session.run(v1.global_variables_initializer())
        started = time.perf_counter()
        recording = Recording(session, built.model, built.source, cfg, directory)
        setup = time.perf_counter() - started

        def epoch(number, measured):
            seconds = timed(passes.train_epoch, session, built.model, built.source, cfg, number, stop)
            return seconds + (timed(recording.after_epoch, number) if measured else 0.0)

        epoch(0, False)  # warm-up: the first pass pays for graph optimisation
        without, with_ = [], []
        for number in range(1, pairs + 1):
            without.append(epoch(2 * number - 1, False))
            with_.append(epoch(2 * number, True))
        alone = [timed(recording.after_epoch, pairs * 2 + 1) for _ in range(REPEATS)]
        figure = timed(figures.self_normalisation_figure, recording.record[self_normalisation.KEY],
                       os.path.join(directory, 'figure.pdf'), 'bench')
    return report(cfg, data, setup, without, with_, alone, figure, len(recording.recorder.layers))


def report(cfg, data, setup, without, with_, alone, figure, layers):
    epoch, work = statistics.median(without), statistics.median(alone)
    rows = [('training epoch, without the recorder (median)', epoch, without),
            ('training epoch + recording after it (median)', statistics.median(with_), with_),
            ('the recording alone: measure, record, CSV (median of 20)', work, alone),
            ('once per run: gathering the fixed batch', setup, [setup]),
            ('once per run: drawing the figure', figure, [figure])]
    print(f"\n{cfg['dataset_name']}, {cfg['model']}, {cfg['activation_fn']}, "
          f"{data.num_examples('train')} training images, batch {cfg['batch_size']}; "
          f"{layers} layers measured on {self_normalisation.SAMPLE_IMAGES} validation images")
    print('\n| what | seconds | / the epoch | every run |\n| --- | --- | --- | --- |')
    for name, seconds, each in rows:
        print(f"| {name} | {seconds:.3f} | {100 * seconds / epoch:.2f} % | "
              f"{', '.join(f'{s:.2f}' for s in each) if len(each) <= 4 else '-'} |")
    difference = statistics.median(with_) / epoch - 1
    print(f'\nthe recording costs {100 * work / epoch:.2f} % of an epoch (budget {100 * BUDGET:.0f} %); '
          f'the epoch medians differ by {100 * difference:+.2f} %, while epochs without it vary by '
          f'{100 * (max(without) - min(without)) / epoch:.1f} % among themselves')
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'self_normalisation_cost.json'), 'w') as f:
        json.dump({'dataset': cfg['dataset_name'], 'model': cfg['model'],
                   'activation': cfg['activation_fn'], 'epochs_without': without,
                   'epochs_with': with_, 'recording_alone': alone, 'fixed_batch': setup,
                   'figure': figure, 'share_of_epoch': work / epoch}, f, indent=1)
    return work / epoch <= BUDGET


if __name__ == '__main__':
    v1.disable_eager_execution()  # as main.py runs
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        passed = run(argv)
    sys.exit(0 if passed else 1)
