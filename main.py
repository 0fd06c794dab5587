"""Trains the model that constant.py describes and reports every epoch.

    python main.py                       # constant.config as it is
    python main.py model=resnet50 use_se=True activation_fn=selu max_epochs=3
"""
import os
import sys

import tf_quiet

tf_quiet.import_tensorflow_quietly()

import collections  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import rewriter_config_pb2  # noqa: E402

import cluster  # noqa: E402
import constant  # noqa: E402
import history  # noqa: E402
import interruption  # noqa: E402
import loaders  # noqa: E402
import malloc_tuning  # noqa: E402
import replicas  # noqa: E402
import safe_io  # noqa: E402
import settings  # noqa: E402
import util  # noqa: E402
from download import DataError  # noqa: E402
from input_pipeline import make_input  # noqa: E402

v1 = tf.compat.v1
CHECKPOINT_NAME = 'model.ckpt'
BEST_DIR = 'best'  # in a run's directory: the checkpoint of its best validation epoch


class Divergence(RuntimeError):
    """The loss or the weights stopped being finite numbers."""


def session_config(cfg):
    """Soft placement, so that '/device:GPU:0' falls back to the CPU; GPU
    memory options, which a machine without a GPU ignores; mixed precision
    and XLA as the config decided them."""
    proto = v1.ConfigProto(allow_soft_placement=True,
                           log_device_placement=cfg['log_device_placement'])
    proto.gpu_options.allow_growth = cfg['gpu_memory_growth']
    if cfg['gpu_memory_fraction'] is not None:
        proto.gpu_options.per_process_gpu_memory_fraction = cfg['gpu_memory_fraction']
    if cfg['mixed_precision']:
        # Grappler casts what is safe to float16 on a GPU, to bfloat16 on a CPU.
        rewrites = proto.graph_options.rewrite_options
        if settings.gpu_found(cfg['device']):
            rewrites.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
        else:
            rewrites.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    if cfg['xla']:
        proto.graph_options.optimizer_options.global_jit_level = v1.OptimizerOptions.ON_1
    return proto


class RunProgress:
    """Epochs completed and images into the next one, saved with every
    checkpoint, so that a run stopped mid-epoch resumes where it stood."""

    def __init__(self):
        self.epochs = v1.Variable(0, dtype=tf.int64, trainable=False, name='epochs_done')
        self.images = v1.Variable(0, dtype=tf.int64, trainable=False, name='epoch_images')
        self._values = v1.placeholder(tf.int64, [2], 'progress')
        self._assign = tf.group(self.epochs.assign(self._values[0]),
                                self.images.assign(self._values[1]))

    def set(self, session, epochs, images):
        session.run(self._assign, {self._values: [epochs, images]})

    def get(self, session):
        return tuple(int(v) for v in session.run([self.epochs, self.images]))


TrainingGraph = collections.namedtuple(
    'TrainingGraph', 'graph source model progress saver best_saver agreement')


def build_graph(cfg, data, strategy=None, role=None):
    """A TrainingGraph: the input source, the model reading from it, the
    run's progress, its saver and the saver of its best epoch, in a new graph;
    in a multi-worker job (`strategy`, this worker's `role`), also the op
    that averages the progress over the workers (`agreement`)."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(cfg['seed'])
        shard = (role.index, len(role.workers)) if role else None
        source = make_input(data, cfg, shard)
        images, labels = source.next_batch
        steps_per_epoch = math.ceil(data.num_examples('train') / cfg['batch_size'])
        progress = RunProgress()
        model = replicas.build_model(cfg, data.image_shape, images, labels, steps_per_epoch,
                                     strategy)
        agreement = (model.mean_over_workers(tf.stack([progress.epochs, progress.images]))
                     if strategy else None)
        saver = v1.train.Saver(max_to_keep=cfg['keep_checkpoints'])
        best_saver = v1.train.Saver(max_to_keep=1)
    return TrainingGraph(graph, source, model, progress, saver, best_saver, agreement)


def train_step(session, model):
    """One optimiser step on the next training batch; returns (loss, images)."""
    _, loss, batch = session.run([model.train_op, model.train_loss, model.train_batch_size])
    return loss, batch


def train_epoch(session, model, source, cfg, epoch, stop, skip=0):
    """One shuffled pass over the training split, less its first `skip`
    images; returns the mean training loss of the images trained.

    Prints a progress line each time another `log_every` images are done, and
    after the last batch. Raises Divergence at the first non-finite loss and
    Interrupted (with the images done) when a stop was requested.
    """
    total, last = source.num_examples('train'), source.training_images()
    log_every = cfg['log_every']
    source.start(session, 'train', training=True, seed=cfg['seed'] * 100_003 + epoch, skip=skip)
    seen, loss_sum, batches_since_log = skip, 0.0, 0
    next_log, last_log = (skip // log_every + 1) * log_every, time.perf_counter()
    while True:
        stop.check(images=seen)
        try:
            loss, batch = train_step(session, model)
        except tf.errors.OutOfRangeError:
            break
        seen += batch
        if not math.isfinite(loss):
            raise Divergence(f'loss became {loss} at epoch {epoch}, step {seen}')
        loss_sum += loss * batch
        batches_since_log += 1
        if seen >= next_log or seen == last:
            now = time.perf_counter()
            print(f'epoch {epoch}, step {seen} / {total}, loss = {loss:.2f} '
                  f'({(now - last_log) / batches_since_log:.3f} sec/batch)', flush=True)
            next_log = (seen // log_every + 1) * log_every
            last_log, batches_since_log = now, 0
    if seen < last:
        print(f'epoch {epoch}: skipped {last - seen} of {total} training records that could '
              f'not be read', flush=True)
    return float(loss_sum / max(seen - skip, 1))


def evaluate(session, model, source, split, stop=None):
    """Mean loss and accuracy over a whole split, batch norm in inference mode."""
    source.start(session, split, training=False)
    loss_sum = correct = count = 0.0
    while True:
        if stop:
            stop.check()
        try:
            loss, accuracy, n = session.run([model.loss, model.accuracy, model.batch_size])
        except tf.errors.OutOfRangeError:
            break
        loss_sum, correct, count = loss_sum + loss * n, correct + accuracy * n, count + n
    if not count:
        raise DataError(f'the {split} split gave no images to evaluate (all skipped as bad?)')
    return float(loss_sum / count), float(correct / count)


def run_epoch(session, model, source, cfg, epoch, stop, skip=0):
    """Trains one epoch (from image `skip` on), then evaluates it; returns its
    row of the history."""
    started = time.perf_counter()
    running_loss = train_epoch(session, model, source, cfg, epoch, stop, skip)
    train_seconds = time.perf_counter() - started
    if not session.run(model.weights_finite):
        raise Divergence(f'weights became NaN or infinite during epoch {epoch}')
    train_loss, train_accuracy = evaluate(session, model, source, 'train', stop)
    valid_loss, valid_accuracy = evaluate(session, model, source, 'valid', stop)
    return {'epoch': epoch, 'train_loss': train_loss, 'train_accuracy': train_accuracy,
            'valid_loss': valid_loss, 'valid_accuracy': valid_accuracy,
            'learning_rate': float(session.run(model.learning_rate)),
            'train_running_loss': running_loss, 'train_seconds': train_seconds,
            'epoch_seconds': time.perf_counter() - started}


def print_epoch_statistics(row):
    epoch = row['epoch']
    print('EPOCH STATISTICS :')
    print(f"Train error: epoch {epoch} loss={row['train_loss']:.4f} accuracy={row['train_accuracy']:.4f}")
    print(f"Validation error: epoch {epoch} loss={row['valid_loss']:.4f} "
          f"accuracy={row['valid_accuracy']:.4f}")
    print(f"Total epoch time training: {row['epoch_seconds']:.1f}", flush=True)


def write_scalars(writer, step, values):
    summary = v1.Summary(value=[v1.Summary.Value(tag=tag, simple_value=float(value))
                                for tag, value in values.items()])
    writer.add_summary(summary, step)
    writer.flush()


def graph_signature(cfg):
    """The keys that shape the network and its optimiser: a checkpoint
    restores only into the same."""
    keys = ['dataset_name', 'model', 'use_se', 'activation_fn', 'output_shape',
            'mixed_precision',  # its loss scale is saved with the weights
            'optimizer']  # Adam's slots are not momentum's
    keys += ['se_r', 'se_squeeze', 'se_excitation'] if cfg['use_se'] else []
    keys += ['pool_size', 'strides'] if cfg['model'] == 'custom_model' else []
    if cfg['model'] == 'resnet50':
        keys += ['se_integration', 'se_stages'] if cfg['use_se'] else []
        keys += ['selu_residual_scale'] if cfg['activation_fn'] == 'selu' else []
    return {k: cfg[k] for k in keys}


def device_name(cfg):
    """What trains: 'GPU (NVIDIA H100 ...)' or 'CPU (2 cores)', for the record."""
    if settings.gpu_found(cfg['device']):
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0])
        return f"GPU ({details.get('device_name', 'unknown')})"
    return f'CPU ({os.cpu_count()} cores)'


def better(row, best):
    """Whether an epoch's row beats the best so far: higher validation
    accuracy, and lower validation loss among equals."""
    return best is None or ((row['valid_accuracy'], -row['valid_loss'])
                            > (best['valid_accuracy'], -best['valid_loss']))


def save_if_best(session, best_saver, record, row, run_dir):
    """Keeps the checkpoint of the best validation epoch in run_dir/best."""
    if better(row, record.get('best')):
        path = best_saver.save(session, os.path.join(run_dir, BEST_DIR, CHECKPOINT_NAME),
                               global_step=row['epoch'], latest_filename='checkpoint')
        record['best'] = {'epoch': row['epoch'], 'valid_loss': row['valid_loss'],
                          'valid_accuracy': row['valid_accuracy'],
                          'checkpoint': os.path.relpath(path, run_dir)}  # the run may move


def evaluate_best(session, best_saver, model, source, record, stop, final_test, run_dir):
    """Test loss and accuracy of the best validation epoch's weights (the
    final weights' `final_test` when the last epoch was the best), into
    record['best']; leaves the best weights in the session."""
    best = record.get('best')
    if best is None:
        return
    if best['epoch'] == record['epochs'][-1]['epoch']:
        best['test_loss'], best['test_accuracy'] = final_test
        return
    checkpoint = os.path.join(run_dir, best['checkpoint'])
    try:
        best_saver.restore(session, checkpoint)
    except (tf.errors.OpError, ValueError) as error:
        reason = str(getattr(error, 'message', error)).strip().split('\n')[0]
        print(f"warning: the best epoch's checkpoint {checkpoint} is unreadable ({reason}); "
              f"no test figure for it", file=sys.stderr, flush=True)
        return
    best['test_loss'], best['test_accuracy'] = evaluate(session, model, source, 'test', stop)


class ResumeError(ValueError):
    """A run that cannot be resumed as asked."""


def check_same_graph(record, cfg, run_dir):
    saved = record.get('config', {})
    differing = [k for k, v in graph_signature(cfg).items() if k in saved and saved[k] != v]
    if differing:
        changes = ', '.join(f'{k}: {saved[k]!r} in the checkpoint, {cfg[k]!r} now' for k in differing)
        raise ResumeError(f'cannot resume {run_dir} with another network ({changes}); set the '
                          f'same values, or drop resume=True to start afresh')


def restore_newest_readable(session, saver, run_dir):
    """Restores the newest checkpoint that reads back; returns its path or None.

    A truncated or corrupt checkpoint is named and skipped for the one before.
    """
    state = tf.train.get_checkpoint_state(run_dir)
    for checkpoint in reversed(list(state.all_model_checkpoint_paths) if state else []):
        try:
            saver.restore(session, checkpoint)
            return checkpoint
        except (tf.errors.OpError, ValueError) as error:
            reason = str(getattr(error, 'message', error)).strip().split('\n')[0]
            print(f'warning: checkpoint {checkpoint} is unreadable ({reason}); trying the one '
                  f'before', file=sys.stderr, flush=True)
    return None


def start_or_resume(session, saver, progress, run_dir, cfg, chief=True):
    """Restores the run's last good checkpoint when resuming; returns (record,
    epochs done, images done of the next epoch).

    A fresh start keeps the previous run of the same name as <run>.previous.
    Only the `chief` of a multi-worker job touches the files.
    """
    if cfg['resume'] and os.path.isdir(run_dir):
        record = history.load(run_dir)
        check_same_graph(record, cfg, run_dir)
        checkpoint = restore_newest_readable(session, saver, run_dir)
        if checkpoint:
            done, images = progress.get(session)
            record['epochs'] = [e for e in record['epochs'] if e['epoch'] <= done]
            into = f', {images} images into epoch {done + 1}' if images else ''
            print(f'Resuming from {checkpoint}: {done} epoch(s) done{into}', flush=True)
            return record, done, images
    if cfg['resume']:
        print(f'No readable checkpoint in {run_dir}: starting from epoch 1', flush=True)
    if chief:
        if os.path.isdir(run_dir):
            shutil.rmtree(run_dir + '.previous', ignore_errors=True)
            os.replace(run_dir, run_dir + '.previous')
        os.makedirs(run_dir)
    session.run(v1.global_variables_initializer())
    return {'epochs': []}, 0, 0


def plot_path(dirs, name):
    return os.path.join(dirs['PLOT_TRAINING_SAVE_DIR'], f'{name}.pdf')


def plot(record, cfg, dirs, name):
    """Writes the PDF of all completed epochs (after every epoch, so that a
    long run can be watched and a stopped one keeps its plot)."""
    path = plot_path(dirs, name)
    print(f'Plotting in: {os.path.relpath(path)}', flush=True)
    util.plot_training_progress(record['epochs'], path, f"{name} on {cfg['dataset_name']}")


def train(cfg):
    """The whole run; returns the process exit status."""
    malloc_tuning.set_mmap_threshold(cfg['malloc_mmap_threshold'])
    dirs = constant.derived_dirs(cfg)
    name = constant.run_name(cfg)
    run_dir = os.path.join(dirs['RUNS_SAVE_DIR'], name)
    data = loaders.DATASETS[cfg['dataset_name']].load(dirs['DATA_DIR'], cfg['seed'], cfg['download'])
    if cfg['batch_size'] > data.num_examples('train'):
        raise DataError(f"batch_size={cfg['batch_size']} is larger than the training split "
                        f"({data.num_examples('train')} images); choose batch_size <= "
                        f"{data.num_examples('train')}")
    if data.num_classes != cfg['output_shape']:
        raise DataError(f"{dirs['DATA_DIR']} holds {data.num_classes} classes but output_shape="
                        f"{cfg['output_shape']}; set output_shape={data.num_classes}")
    role = cluster.role_from_environment()
    proto, target, strategy = session_config(cfg), '', None
    if role:
        cluster.check_config(cfg, role, getattr(data, 'files', {}).get('train'))
        strategy, server, proto = cluster.start(role, proto)
        target = server.target
        cfg = {**cfg, 'resume': True}  # a job always goes on from the chief's newest checkpoint
    chief = cluster.is_chief(role)
    if chief:
        safe_io.check_writable(dirs['SAVE_DIR'])  # now, not after the first epoch
    graph, source, model, progress, saver, best_saver, agreement = build_graph(cfg, data, strategy,
                                                                               role)
    checkpoint_prefix = os.path.join(run_dir, CHECKPOINT_NAME)
    with graph.as_default(), v1.Session(target, config=proto) as session, \
            interruption.stop_requests() as stop:
        record, done, skip = start_or_resume(session, saver, progress, run_dir, cfg, chief)
        if agreement is not None:
            if done >= cfg['max_epochs']:  # a worker started after the job ended: no peers left
                print(f'{name} has trained {done} epoch(s) already: nothing to do', flush=True)
                return 0
            check_agreement(session, agreement, done, skip)
        if not chief:
            return train_as_worker(session, model, source, cfg, done, skip, stop)
        record['config'] = {k: v for k, v in cfg.items() if k not in settings.MENU_KEYS}
        record['device'] = device_name(cfg)
        record.pop('diverged', None)
        if done >= cfg['max_epochs']:
            print(f'{name} has trained {done} epoch(s) already: raise max_epochs to train more')
        writer = v1.summary.FileWriter(run_dir, graph if done == 0 else None)
        epoch = None
        try:
            for epoch in range(done + 1, cfg['max_epochs'] + 1):
                row = run_epoch(session, model, source, cfg, epoch, stop, skip)
                skip = 0
                progress.set(session, epoch, 0)
                saver.save(session, checkpoint_prefix, global_step=epoch)
                save_if_best(session, best_saver, record, row, run_dir)
                record['epochs'].append(row)
                history.save(run_dir, record)
                write_scalars(writer, epoch, {k: v for k, v in row.items() if k != 'epoch'})
                print_epoch_statistics(row)
                plot(record, cfg, dirs, name)
            epoch = None
            test_loss, test_acc = evaluate(session, model, source, 'test', stop)
            first_kernel = session.run(model.first_conv_kernel)
            evaluate_best(session, best_saver, model, source, record, stop, (test_loss, test_acc),
                          run_dir)
        except interruption.Interrupted as stopped:
            return save_interrupted(session, saver, progress, source, checkpoint_prefix,
                                    epoch, stopped)
        except tf.errors.OpError as error:
            explained = source.explain(error)
            if explained is None:
                raise
            raise explained from None
        except Divergence as divergence:
            last = tf.train.latest_checkpoint(run_dir)
            kept = f'the last good checkpoint is {last}' if last else 'no epoch completed, so no checkpoint'
            print(f'error: {divergence}; training stopped, {kept}. Lower learning_rate '
                  f'(now {cfg["learning_rate"]}) and run again.', file=sys.stderr, flush=True)
            record['diverged'] = str(divergence)
            history.save(run_dir, record)
            if record['epochs']:
                print(f"The plot of epochs 1-{record['epochs'][-1]['epoch']} is in "
                      f"{os.path.relpath(plot_path(dirs, name))}", file=sys.stderr)
            return 1
        finally:
            writer.close()
        record['test'] = {'epoch': max(done, cfg['max_epochs']), 'loss': test_loss, 'accuracy': test_acc}
        history.save(run_dir, record)
        print(f'Test error: loss={test_loss:.4f} accuracy={test_acc:.4f}')
        best = record.get('best', {})
        if 'test_accuracy' in best:
            print(f"Test error of the best validation epoch ({best['epoch']}): "
                  f"loss={best['test_loss']:.4f} accuracy={best['test_accuracy']:.4f}")
        grid = util.draw_filters(first_kernel, os.path.join(dirs['FILTERS_SAVE_DIR'], name))
        print(f'First-layer filters in: {os.path.relpath(os.path.dirname(grid))}')
    return 0


def check_agreement(session, agreement, done, images):
    """Raises cluster.PeerLost unless every worker of the job restored the
    same progress (the chief's newest checkpoint)."""
    mean = session.run(agreement)
    if abs(mean[0] - done) > 1e-6 or abs(mean[1] - images) > 1e-3:
        raise cluster.PeerLost(f'the workers restored different checkpoints (this one: {done} '
                               f'epochs and {images} images; the mean: {mean[0]:g} and {mean[1]:g})')


def train_as_worker(session, model, source, cfg, done, skip, stop):
    """A worker other than the chief: trains its part of every epoch's
    batches and writes nothing; returns the exit status."""
    try:
        for epoch in range(done + 1, cfg['max_epochs'] + 1):
            train_epoch(session, model, source, cfg, epoch, stop, skip)
            skip = 0
    except interruption.Interrupted as stopped:
        print(f'Interrupted ({stopped}); the chief keeps the checkpoints', file=sys.stderr)
        return 128 + stopped.signum
    print(f"Worker done: {cfg['max_epochs']} epoch(s); the chief evaluates and writes the results")
    return 0


def save_interrupted(session, saver, progress, source, checkpoint_prefix, epoch, stopped):
    """Checkpoints a run stopped in `epoch` (None: after its last epoch, whose
    checkpoint stands); returns the exit status 128 + signal number."""
    if epoch is not None:
        images = source.num_examples('train') if stopped.images is None else stopped.images
        progress.set(session, epoch - 1, images)
        path = saver.save(session, f'{checkpoint_prefix}-{epoch - 1}-{images}img')
        print(f'Interrupted ({stopped}) at epoch {epoch}, step {images}: saved {path}; '
              f'python main.py ... resume=True continues from there', file=sys.stderr, flush=True)
    else:
        print(f'Interrupted ({stopped}) after the last epoch; its checkpoint stands',
              file=sys.stderr, flush=True)
    return 128 + stopped.signum


# What a user can fix: reported in one line, exit status 2.
USER_ERRORS = (settings.ConfigError, DataError, ResumeError, safe_io.NotWritableError,
               cluster.ClusterError)


def main(argv):
    v1.disable_eager_execution()
    try:
        cfg = settings.load_config(argv)
        return train(cfg)
    except cluster.PeerLost as lost:
        cluster.restart_process(str(lost))
    except cluster.PEER_ERRORS as error:
        if cluster.role_from_environment() is None:
            raise
        reason = str(getattr(error, 'message', error)).strip().split('\n')[0]
        cluster.restart_process(f'a worker of the job was lost ({type(error).__name__}: {reason})')
    except USER_ERRORS as error:
        print(f'error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
