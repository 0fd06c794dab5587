"""The instruments of the study (SPEC 10) in a run's folder: what main.py's
callbacks write during and at the end of a run, and instruments.py on
demand for any run.

    excitation_<split>.npz, excitation_<split>_blocks.csv, excitation_<split>.pdf
        SE excitations per class of a split (trainer/excitation.py)
    activation_statistics.csv, activation_statistics.pdf
        mean and variance of every layer's output per epoch (trainer/self_normalisation.py)
"""
import os

from trainer import console, excitation, probes, self_normalisation, study_figures
from trainer.callbacks import Callback

TRAINING_SPLIT = 'valid'  # what the end of a training run measures the excitations on


def title(run, epoch):
    weights = f'weights of epoch {epoch}' if epoch is not None else 'initial weights'
    return f"{run.name} on {run.cfg['dataset_name']}, {weights}"


def write_excitations(run, split, epoch):
    """Measures the SE excitations of run's session over `split`, writes
    their numbers and figures into the run's folder and prints the table;
    returns the Excitations."""
    measured = excitation.measure(run.session, run.built.model, run.built.source, split,
                                  run.cfg['output_shape'], run.stop)
    measured.epoch = epoch
    excitation.save(run.directory, measured)
    numbers, table, figure = excitation.paths(run.directory, split)
    study_figures.excitation_figure(measured, figure, title(run, epoch))
    print(f'SE excitations on the {split} split ({title(run, epoch)}), per block:')
    print(excitation.table_markdown(measured))
    print(f'SE excitation figures in: {console.shown_path(figure)} (numbers: '
          f'{os.path.basename(numbers)}, {os.path.basename(table)})', flush=True)
    return measured


def write_self_normalisation(run, statistics):
    """The CSV and the figure of recorded self-normalisation statistics."""
    self_normalisation.write_csv(run.directory, statistics)
    figure = os.path.join(run.directory, self_normalisation.FIGURE_NAME)
    epochs = [e['epoch'] for e in statistics['epochs']]
    study_figures.self_normalisation_figure(statistics, figure, f'{run.name} on '
                                            f"{run.cfg['dataset_name']}")
    print(f"Self-normalisation on {statistics['images']} validation images, at the first and "
          f"last epoch recorded (0: at initialisation):")
    print('\n'.join(self_normalisation.table_markdown(statistics)))
    print(f'Self-normalisation per layer (epochs {epochs[0]}-{epochs[-1]}) in: '
          f'{console.shown_path(figure)} (numbers: {self_normalisation.CSV_NAME})', flush=True)


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
            write_self_normalisation(run, run.record[self_normalisation.KEY])


class Excitations(Callback):
    """At the end of a run with SE blocks: their excitations per class of
    the validation split, with the final weights (it comes before
    TestEvaluation, which leaves the best epoch's in the session)."""

    def after_train(self, run):
        if probes.se_gates(run.built.model) and run.record['epochs']:
            write_excitations(run, TRAINING_SPLIT, run.record['epochs'][-1]['epoch'])
