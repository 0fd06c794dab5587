"""Trains the model that constant.py describes and reports every epoch.

    python main.py                       # constant.config as it is
    python main.py model=resnet50 use_se=True activation_fn=selu max_epochs=3
    python main.py --help                # this, and every key with its default

Picks the dataset's loader, builds the model on the GPU (the CPU when there
is none), trains epoch by epoch, evaluates, checkpoints and plots; a stopped
run continues with resume=True.
"""
import sys

from trainer.config import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads

import math
import time

import tensorflow as tf

from foundation import machine, malloc_tuning, safe_io, tf_errors
from trainer.after_training import data_summary, evaluation
from trainer.config import settings
from trainer.runs import disk, folder, patience, stops, weights
from trainer.runs.records import is_complete, saved_record, steps_left, steps_trained
from trainer.study import instrument_files
from trainer.training import (
    callbacks,
    cluster,
    input_source,
    interruption,
    passes,
    profiling,
    quick_runs,
    training_graph,
)

v1 = tf.compat.v1


def train(cfg):
    """The whole run; returns the process exit status."""
    malloc_tuning.set_mmap_threshold(cfg['malloc_mmap_threshold'])
    run = folder.locate(cfg)
    data = input_source.open_dataset(cfg, run.dirs['DATA_DIR'])
    devices = machine.decide(cfg)
    with interruption.stop_requests() as stop, training_graph.determinism(cfg['deterministic']):
        try:
            job = cluster.join(cfg, getattr(data, 'files', {}).get('train'),
                               training_graph.session_config(devices), stop)
        except interruption.Interrupted as stopped:
            print(f'Interrupted ({stopped}) while waiting for the workers of the job; nothing was '
                  f'trained', file=sys.stderr, flush=True)
            return 128 + stopped.signum
        run.stop, chief = stop, cluster.is_chief(job.role)
        if job.role:
            run.cfg = cfg = {**cfg, 'resume': True}  # a job goes on from the chief's newest checkpoint
        if not chief:
            return train_in_session(run, data, job, devices)
        safe_io.check_writable(run.dirs['SAVE_DIR'])  # now, not after the first epoch
        with folder.Lock(run):  # only the chief writes the run's files
            return train_in_session(run, data, job, devices)


def train_in_session(run, data, job, devices):
    """Builds the graph and trains in its session, started or resumed, as
    the chief or a worker; returns the exit status."""
    chief, cfg = cluster.is_chief(job.role), run.cfg
    print(training_graph.building_line(cfg, data, devices), flush=True)
    for line in (input_source.training_part_line(cfg, data), training_graph.recipe_line(cfg)):
        if line:
            print(line, flush=True)
    print(machine.precision_line(devices), flush=True)
    run.built = training_graph.build_graph(cfg, data, job.strategy, job.role, devices)
    run.cost = training_graph.network_cost(run.built)
    print(training_graph.cost_line(run.cost), flush=True)
    with run.built.graph.as_default(), v1.Session(job.target, config=job.session_proto) as session:
        run.session = session
        # Before resuming, which rewrites history.json from the checkpoint's record (no test result yet)
        complete = chief and cfg['resume'] and is_complete(saved_record(run.directory), cfg)
        folder.start_or_resume(run, chief)
        if job.role:
            if run.done >= cfg['max_epochs']:  # a worker started after the job ended: no peers left
                print(f'{run.name} has trained {run.done} epoch(s) already: nothing to do', flush=True)
                return 0
            cluster.check_agreement(session, run.built.agreement, run.done, run.skip)
        if not chief:
            return train_as_worker(run)
        return train_as_chief(run, chief_callbacks(), complete)


def chief_callbacks():
    """The chief's bookkeeping, in the order it runs. What adds to the epoch's
    row comes before EpochCheckpoint, which commits the row with the
    checkpoint. At the end, every after_train sees the final weights, then
    every with_best_weights those of the best validation epoch;
    RunSummary, last, names every file the others wrote."""
    return callbacks.Callbacks([
        data_summary.SaveDataDescription(), callbacks.Evaluation(), instrument_files.SelfNormalisation(),
        callbacks.ReduceOnPlateau(), callbacks.BestCheckpoint(), callbacks.EpochCheckpoint(),
        instrument_files.SelfNormalisationFiles(),
        instrument_files.FinalExcitations(), callbacks.TestEvaluation(), quick_runs.StepLimitTest(),
        quick_runs.OverfitCheck(), evaluation.TestAnalysis(),
        instrument_files.FinalClassActivationMaps(),
        callbacks.TensorBoardScalars(), callbacks.EpochStatistics(), callbacks.ProgressPlot(),
        callbacks.FilterImages(), callbacks.RunSummary()])


def train_as_chief(run, hooks, complete=False):
    """The epochs still to train, each followed by the callbacks' bookkeeping
    (evaluation, checkpoints, history, console, plot), then their end of the
    run (test, filters); returns the exit status. `complete`: the run was
    complete before (records.is_complete), which it says."""
    cfg = run.cfg
    run.record.update(config=settings.saved_config(cfg), device=training_graph.device_name(run.built.devices),
                      tensorflow=tf.__version__, cost=run.cost)
    run.record.pop('diverged', None)
    if complete:
        print(complete_line(run))
    epoch = None
    run.trace = profiling.step_trace(cfg, run.directory, steps_trained(run.record, cfg['batch_size'], run.skip))
    try:
        hooks.before_train(run)
        for epoch in range(run.done + 1, cfg['max_epochs'] + 1):
            steps = steps_left(run.record, cfg, run.skip)  # over the rows EpochCheckpoint committed
            if steps == 0 or patience.stopped_at(run.record['epochs'], cfg) is not None:
                break
            hooks.after_epoch(run, epoch_row(run, epoch, steps))
        epoch = None
        hooks.after_train(run)  # the final weights
        hooks.with_best_weights(run, weights.best_weights_into_session(run))
    except interruption.Interrupted as stopped:
        return stops.save_interrupted(run, epoch, stopped)
    except (OSError, tf.errors.OpError) as error:
        explained = (safe_io.out_of_space(error, run.directory, disk.RESUME_ADVICE)
                     or run.built.source.explain(error))
        if explained is None:
            raise
        raise explained from None
    except passes.Divergence as divergence:
        return stops.record_divergence(run, divergence, callbacks.plot_path(run))
    finally:
        if run.trace:
            run.trace.stop()
        hooks.close()
    return 0


def complete_line(run):
    """Says that a complete run (records.is_complete) has nothing left to train, and what would train more."""
    cfg, record = run.cfg, run.record
    stopped = patience.stop_line(record['epochs'], cfg)
    if stopped:
        return f'{run.name} {stopped}: nothing to train'
    if len(record['epochs']) < cfg['max_epochs']:  # max_steps ended it
        return (f"{run.name} has trained {steps_trained(record, cfg['batch_size'])} step(s) already "
                f"(max_steps={cfg['max_steps']}): nothing to train")
    return f'{run.name} has trained {run.done} epoch(s) already: raise max_epochs to train more'


def epoch_row(run, epoch, steps=None):
    """Trains one epoch (from image run.skip on), or its first `steps` steps;
    returns the start of its row, with the images and steps of the whole
    epoch (those before a resume too)."""
    started = time.perf_counter()
    model = run.built.model
    trained = passes.train_epoch(run.session, model, run.built.source, run.cfg, epoch, run.stop,
                                 run.skip, steps, run.trace)
    before, run.skip = run.skip, 0
    return {'epoch': epoch, 'train_running_loss': trained.loss,
            'train_seconds': time.perf_counter() - started,
            'learning_rate': float(run.session.run(model.learning_rate)),
            'train_images': before + trained.images,
            'train_steps': math.ceil(before / run.cfg['batch_size']) + trained.steps}


def train_as_worker(run):
    """A worker other than the chief: trains its part of every epoch's
    batches and writes nothing; returns the exit status."""
    try:
        for epoch in range(run.done + 1, run.cfg['max_epochs'] + 1):
            passes.train_epoch(run.session, run.built.model, run.built.source, run.cfg, epoch,
                               run.stop, run.skip)
            run.skip = 0
    except interruption.Interrupted as stopped:
        print(f'Interrupted ({stopped}); the chief keeps the checkpoints', file=sys.stderr)
        return 128 + stopped.signum
    print(f"Worker done: {run.cfg['max_epochs']} epoch(s); the chief evaluates and writes the results")
    return 0


def main(argv):
    """python main.py [key=value ...]: the exit status of the run."""
    v1.disable_eager_execution()
    try:
        return command.run(lambda: train(settings.load_config(argv)))
    except cluster.PeerLost as lost:
        cluster.restart_process(str(lost))
    except cluster.PEER_ERRORS as error:
        if cluster.role_from_environment() is None:
            raise
        cluster.restart_process(f'a worker of the job was lost ({type(error).__name__}: '
                                f'{tf_errors.error_reason(error)})')


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
