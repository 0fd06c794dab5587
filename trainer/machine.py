"""What this machine can do, and the 'auto' device options decided for it:
a GPU or not, NCHW kernels on its CPU or not."""
import functools
import sys

from trainer import tf_quiet
from trainer.tf_quiet import OnFirstUse

tf = OnFirstUse()


def gpu_found(device):
    """Whether `device` names a GPU and TensorFlow sees one on this machine."""
    if 'GPU' not in device.upper():
        return False
    with tf_quiet.stderr_hidden():  # 'failed call to cuInit' on a machine without a driver
        return bool(tf.config.list_physical_devices('GPU'))


def placement(device):
    """The device to build on: `device`, or the CPU for a GPU this machine
    lacks. Soft placement would fall back too, but op by op, with a warning
    per colocation group at TF_CPP_MIN_LOG_LEVEL < 2."""
    if 'GPU' in device.upper() and not gpu_found(device):
        return '/device:CPU:0'
    return device


@functools.lru_cache(maxsize=None)
def cpu_runs_nchw():
    """Whether TensorFlow's CPU kernels take NCHW convolutions and pools here:
    oneDNN's do, the plain ones (where oneDNN is off, as on CPUs without
    AVX-512) take NHWC only."""
    graph = tf.Graph()
    with graph.as_default(), tf.device('/CPU:0'):
        x = tf.zeros([1, 1, 4, 4])
        y = tf.nn.conv2d(x, tf.zeros([1, 1, 1, 1]), 1, 'SAME', data_format='NCHW')
        y = tf.nn.max_pool2d(y, 2, 2, 'SAME', data_format='NCHW')
    with tf.compat.v1.Session(graph=graph) as session:
        try:
            session.run(y)
            return True
        except tf.errors.OpError:
            return False


def resolve_auto(cfg, on_gpu):
    """The 'auto' device options made concrete for the machine.

    On a GPU: float16 compute with loss scaling (tensor cores), XLA, and NCHW
    in float32 (cuDNN's fast layout) but NHWC in float16 (what tensor cores
    want). On the CPU: float32, NHWC, no XLA: XLA and NCHW were slower there
    (bench/throughput.py).
    """
    cfg = dict(cfg)
    if cfg['mixed_precision'] == 'auto':
        cfg['mixed_precision'] = on_gpu
    if cfg['xla'] == 'auto':
        cfg['xla'] = on_gpu
    if cfg['data_format'] == 'auto':
        cfg['data_format'] = 'NCHW' if on_gpu and not cfg['mixed_precision'] else 'NHWC'
    return cfg


def fit_to_machine(cfg):
    """cfg with its 'auto' options decided, and NCHW turned into NHWC (with a
    warning) where neither a GPU nor the CPU's kernels can run it: the
    weights are the same in both layouts, so nothing else changes."""
    on_gpu = gpu_found(cfg['device'])
    cfg = resolve_auto(cfg, on_gpu)
    if cfg['data_format'] == 'NCHW' and not on_gpu and not cpu_runs_nchw():
        print("warning: data_format='NCHW' needs a GPU or a CPU with oneDNN's kernels, and this "
              "machine has neither; training in NHWC, the same network", file=sys.stderr, flush=True)
        cfg['data_format'] = 'NHWC'
    return cfg
