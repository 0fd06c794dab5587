"""ImageResizer and TFRecordsWriter: how many images per second, how much memory?

    python -m bench.preprocess [images=6000] [datasets_root=PATH] [key=value ...]

writes a synthetic CIFAR-10 of `images` random images in the official python
format (cifar-10-batches-py/data_batch_1..5 and test_batch, images/6 each;
tests/fixtures.py) into DATASETS_ROOT/cifar_32/data_dir, then runs, each as
its own child process from the repository root, exactly as a user would:

    python ImageResizer.py datasets_root=DATASETS_ROOT ...
    python TFRecordsWriter.py datasets_root=DATASETS_ROOT ...
    python TFRecordsWriter.py one_pass=True datasets_root=DATASETS_ROOT ...

(the one-pass run after the outputs of the two others are removed). Measures
each child's wall time, start-up included, and its own peak RSS (os.wait4),
plus a child that only imports TensorFlow, the start-up every step pays.
Prints a table and writes bench/results/preprocess.json.

Without datasets_root a fresh temporary folder is used and removed at the end;
a given datasets_root must not hold cifar_32/ or cifar_128/ yet, and is kept
(its cifar_128 TFRecords serve bench/streaming.py). Other key=value pairs
(resize_batch_size=500, tfrecord_shards=..., malloc_mmap_threshold=None) go to
every child unchanged.
"""
import concurrent.futures
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from bench import performance_docs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESULTS = os.path.join(REPO, 'bench', 'results')
DEFAULT_IMAGES = 6000
MIN_IMAGES = 60  # 10 per batch: the validation split (a tenth of training) is not empty
# Set by the bench itself; given on the command line they would break the steps.
RESERVED_KEYS = ('dataset_name', 'data_dir', 'one_pass', 'download')


class StepFailed(RuntimeError):
    """A child process that exited with an error, or did not write what it should."""


def parse_args(argv):
    """key=value arguments -> (images, datasets_root or None, arguments for the children)."""
    images, root, child_args = DEFAULT_IMAGES, None, []
    for arg in argv:
        key, sep, value = arg.partition('=')
        if not sep:
            raise SystemExit(f'error: arguments are key=value, got {arg!r}')
        if key == 'images':
            try:
                images = int(value)
            except ValueError:
                raise SystemExit(f'error: images must be a whole number, got {value!r}') from None
        elif key == 'datasets_root':
            root = os.path.abspath(os.path.expanduser(value))
        elif key in RESERVED_KEYS:
            raise SystemExit(f'error: {key} is set by the bench; leave it out')
        else:
            child_args.append(arg)
    if images < MIN_IMAGES:
        raise SystemExit(f'error: images must be at least {MIN_IMAGES}, got {images}')
    return images, root, child_args


def write_synthetic_cifar(data_dir, n_per_batch):
    """The official cifar-10-batches-py folder, random pixels (tests/fixtures.py)."""
    from tests import fixtures  # in the spawned child only: its RSS is what is measured
    fixtures.write_cifar_batches(data_dir, n_per_batch=n_per_batch, seed=0)


def make_synthetic_cifar(root, n_per_batch):
    # In a spawned process: a child's ru_maxrss starts at its parent's peak RSS
    # (fork copies the parent's memory, exec keeps that high-water mark), so
    # the bench process itself must never hold the images, nor even numpy.
    data_dir = os.path.join(root, 'cifar_32', 'data_dir')
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(write_synthetic_cifar, data_dir, n_per_batch).result()
    return data_dir


def run_child(argv):
    """Runs `python argv...` in the repository root -> (seconds, peak RSS in MB);
    StepFailed with its output when it exits with an error."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=out, stderr=err)
        # wait4, not RUSAGE_CHILDREN: the latter is the largest of all children so far.
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if child.returncode != 0:
            out.seek(0)
            err.seek(0)
            raise StepFailed(f"`python {' '.join(argv)}` exited with {child.returncode}\n"
                             f"--- stdout (end) ---\n{out.read().decode(errors='replace')[-2000:]}"
                             f"--- stderr ---\n{err.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KB on Linux


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def check_records(out_dir, images):
    """The writer's dataset.json must count every image: exit code 0 alone could hide a short set."""
    with open(os.path.join(out_dir, 'dataset.json')) as f:
        counts = {split: v['count'] for split, v in json.load(f)['splits'].items()}
    if sum(counts.values()) != images:
        raise StepFailed(f'{out_dir}/dataset.json counts {counts}, expected {images} images in all')
    return counts


def row(step, images, seconds, peak_rss_mb, output_bytes=None):
    return {'step': step, 'images': images, 'seconds': seconds,
            'images_per_second': images / seconds if images else None,
            'peak_rss_mb': peak_rss_mb, 'output_bytes': output_bytes}


def timed(step, images, argv):
    """Runs one step as a child -> its row, announced as it ends (children's output is kept)."""
    result = row(step, images, *run_child(argv))
    print(f"{step:32s} {result['seconds']:7.1f} s {result['peak_rss_mb']:7.0f} MB", flush=True)
    return result


def measure_steps(root, images, child_args):
    """Start-up alone, the two-step route, then the one-pass route into emptied outputs."""
    common = [f'datasets_root={root}', 'download=False', *child_args]
    out_dir = os.path.join(root, 'cifar_128', 'data_dir')
    startup = timed('python + TensorFlow import only', None,
                    ['-c', 'import tf_quiet; tf_quiet.import_tensorflow_quietly()'])
    resizer = timed('ImageResizer', images, ['ImageResizer.py', *common])
    resizer['output_bytes'] = folder_bytes(os.path.join(out_dir, 'resized'))
    writer = timed('TFRecordsWriter (from .npy)', images, ['TFRecordsWriter.py', *common])
    counts = check_records(out_dir, images)
    writer['output_bytes'] = folder_bytes(out_dir) - resizer['output_bytes']
    both = row('ImageResizer + TFRecordsWriter', images, resizer['seconds'] + writer['seconds'],
               max(resizer['peak_rss_mb'], writer['peak_rss_mb']), writer['output_bytes'])
    shutil.rmtree(os.path.join(root, 'cifar_128'))  # else the writer would skip its complete shards
    one_pass = timed('TFRecordsWriter one_pass=True', images,
                     ['TFRecordsWriter.py', 'one_pass=True', *common])
    check_records(out_dir, images)
    one_pass['output_bytes'] = folder_bytes(out_dir)
    return [startup, resizer, writer, both, one_pass], counts


def print_table(rows):
    print('\n| step | images | seconds | images/s | peak RSS MB |\n| --- | --- | --- | --- | --- |')
    for r in rows:
        rate = f"{r['images_per_second']:.1f}" if r['images_per_second'] else '-'
        print(f"| {r['step']} | {r['images'] or '-'} | {r['seconds']:.1f} | {rate} | "
              f"{r['peak_rss_mb']:.0f} |")


def save_results(rows, images, counts, config):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, 'preprocess.json')
    with open(path, 'w') as f:
        json.dump({'images': images, 'splits': counts, 'config': config, 'rows': rows}, f, indent=1)
    return path


def run(argv):
    requested, given_root, child_args = parse_args(argv)
    n_per_batch = requested // 6  # five training batches and one test batch
    images = 6 * n_per_batch
    if given_root and any(os.path.exists(os.path.join(given_root, d)) for d in ('cifar_32', 'cifar_128')):
        raise SystemExit(f'error: {given_root} already holds cifar_32/ or cifar_128/, which the bench '
                         f'overwrites and removes; give a new or empty folder')
    root = given_root or tempfile.mkdtemp(prefix='bench_preprocess_')
    try:
        print(f'Writing {images} synthetic CIFAR-10 images ({n_per_batch} per batch) into '
              f'{make_synthetic_cifar(root, n_per_batch)}', flush=True)
        rows, counts = measure_steps(root, images, child_args)
    except StepFailed as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    finally:
        if not given_root:
            shutil.rmtree(root, ignore_errors=True)
    print_table(rows)
    config = {'images': images, 'datasets_root': given_root, 'child_args': child_args,
              'python': sys.version.split()[0], 'cpus': os.cpu_count(),
              # the floor under every child's peak RSS (see make_synthetic_cifar)
              'bench_peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f'\nwrote {save_results(rows, images, counts, config)}')
    return 0


if __name__ == '__main__':
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        status = run(argv)
    sys.exit(status)
