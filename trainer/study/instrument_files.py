"""The instruments of the study in a run's folder: what main.py's
callbacks write during and at the end of a run, and instruments.py on
demand for any run.

    excitation_<split>.npz, excitation_<split>_blocks.csv, excitation_<split>.pdf
        SE excitations per class of a split (trainer/study/excitation.py)
    activation_statistics.csv, activation_statistics.pdf
        mean and variance of every layer's output per epoch (trainer/study/self_normalisation.py)
    class_activation_maps.npz, class_activation_maps.pdf
        Grad-CAM of the first validation images, with the best validation epoch's weights
        (trainer/study/cam.py)
"""
import os

import numpy as np

from foundation import safe_io
from trainer import console
from trainer.after_training import data_summary
from trainer.study import cam, excitation, figures, probes, self_normalisation
from trainer.training.callbacks import Callback

TRAINING_SPLIT = 'valid'  # what the end of a training run measures the excitations on


def title(run_name, dataset_name, epoch=None):
    """'<run> on <dataset>, weights of epoch <n>' ('initial weights' for None)."""
    weights = f'weights of epoch {epoch}' if epoch is not None else 'initial weights'
    return f'{run_name} on {dataset_name}, {weights}'


def write_excitations(measured, directory, title):
    """Writes measured SE excitations (excitation.measure, with its epoch
    set) into the run folder `directory` as numbers and figures, all or
    none; returns the lines that tell of them (their table, where they are)."""
    numbers, table, figure = excitation.paths(directory, measured.split)
    with safe_io.all_or_none():
        excitation.save(directory, measured)
        figures.excitation_figure(measured, figure, title)
    return [f'SE excitations on the {measured.split} split ({title}), per block:',
            excitation.table_markdown(measured),
            f'SE excitation figures in: {console.shown_path(figure)} (numbers: '
            f'{os.path.basename(numbers)}, {os.path.basename(table)})']


def write_self_normalisation(statistics, directory, title):
    """The CSV and the figure of recorded self-normalisation statistics in
    the run folder `directory`, both or neither; returns the lines that tell
    of them."""
    figure = os.path.join(directory, self_normalisation.FIGURE_NAME)
    epochs = [e['epoch'] for e in statistics['epochs']]
    with safe_io.all_or_none():
        self_normalisation.write_csv(directory, statistics)
        figures.self_normalisation_figure(statistics, figure, title)
    return [f"Self-normalisation on {statistics['images']} validation images, at the first and "
            f"last epoch recorded (0: at initialisation):",
            *self_normalisation.table_markdown(statistics),
            f'Self-normalisation per layer (epochs {epochs[0]}-{epochs[-1]}) in: '
            f'{console.shown_path(figure)} (numbers: {self_normalisation.CSV_NAME})']


def write_class_activation_maps(measured, directory, title, classes, pixel_max):
    """The numbers and the figure of class activation maps (cam.measure, with
    its epoch set) in the run folder `directory`, both or neither; `classes`
    names the labels, `pixel_max` is the brightest level of the images;
    returns the line that tells of them."""
    figure = os.path.join(directory, cam.FIGURE_NAME)
    with safe_io.all_or_none():
        cam.save(os.path.join(directory, cam.NUMBERS_NAME), measured)
        figures.cam_figure(measured, figure, title, classes, pixel_max)
    right = int(np.sum(measured.true == measured.predicted))
    return [f'Class activation maps (Grad-CAM at {measured.layer}) of the first '
            f'{len(measured.indices)} validation images ({right} classified right) in: '
            f'{console.shown_path(figure)} (numbers: {cam.NUMBERS_NAME})']


def print_lines(lines):
    print('\n'.join(lines), flush=True)


# --- as callbacks of main.py's loop -------------------------------------------------------

class SelfNormalisation(Callback):
    """Measures the layers at the start of a fresh run (epoch 0) and after
    every epoch into run.record, which the epoch's checkpoint then saves:
    it comes before EpochCheckpoint."""

    def before_train(self, run):
        model = run.built.model
        self.recorder = self_normalisation.Recorder(model, run.cfg['eval_batch_size'])
        self.images = self_normalisation.fixed_batch(run.session, model, run.built.source)
        if run.done == 0 and run.skip == 0:
            self.measure(run, 0)

    def after_epoch(self, run, row):
        self.measure(run, row['epoch'])

    def measure(self, run, epoch):
        measured = self.recorder.measure(run.session, self.images)
        self_normalisation.add(run.record, self.recorder.layers, len(self.images), epoch, measured)


class SelfNormalisationFiles(Callback):
    """The CSV of the recorded figures once the epoch is committed (it comes
    after EpochCheckpoint); their figure at the end of the run."""

    def after_epoch(self, run, row):
        self_normalisation.write_csv(run.directory, run.record[self_normalisation.KEY])

    def after_train(self, run):
        if self_normalisation.KEY in run.record:
            print_lines(write_self_normalisation(run.record[self_normalisation.KEY], run.directory,
                                          f"{run.name} on {run.cfg['dataset_name']}"))


class FinalExcitations(Callback):
    """At the end of a run with SE blocks: their excitations per class of
    the validation split, with the final weights (labelled with the last
    epoch)."""

    def after_train(self, run):
        if not (probes.se_gates(run.built.model) and run.record['epochs']):
            return
        measured = excitation.measure(run.session, run.built.model, run.built.source, TRAINING_SPLIT,
                                      run.cfg['output_shape'], run.stop)
        measured.epoch = run.record['epochs'][-1]['epoch']
        print_lines(write_excitations(measured, run.directory,
                               title(run.name, run.cfg['dataset_name'], measured.epoch)))


class FinalClassActivationMaps(Callback):
    """At the end of a run: the class activation maps of the first cam_images
    validation images with the weights of the best validation epoch, the
    same images for every run that splits its data alike (a sweep's report
    sets them side by side). A replicated network's are left to
    instruments.py, which builds one copy."""

    def with_best_weights(self, run, label):
        model = run.built.model
        if label != 'best' or model.replica_count > 1 or run.built.agreement is not None:
            return
        description = run.record[data_summary.KEY]
        measured = cam.measure(run.session, model, run.built.source, run.cfg['cam_images'],
                               run.cfg['eval_batch_size'], description)
        measured.epoch = run.record['best']['epoch']
        print_lines(write_class_activation_maps(
            measured, run.directory, title(run.name, run.cfg['dataset_name'], measured.epoch),
            description['classes'], description['pixel_max']))
