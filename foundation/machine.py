"""What this machine can do, and the 'auto' device options decided for it:
a GPU or not, NCHW kernels on its CPU or not, native bfloat16 on its CPU or not."""
import dataclasses
import functools
import os
import platform
import sys

from foundation import tf_quiet
from foundation.tf_quiet import OnFirstUse

tf = OnFirstUse()


@functools.cache
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


@functools.cache
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


CPUINFO = '/proc/cpuinfo'
# Where the CPU has no native bfloat16 (none of CPU_BFLOAT16_CLASSES' flags),
# oneDNN emulates it on any AVX-512 CPU, slower than float32.

# Classes of CPU that compute in bfloat16 natively, most capable first, each
# named by the flag that marks it: AMX's tile multiplies (Intel Sapphire Rapids
# and later) and AVX-512's BF16 dot products (AMD Zen 4 and later, Intel Cooper
# Lake). They differ several-fold in bfloat16's gain over float32.
CPU_BFLOAT16_CLASSES = {'amx': 'amx_bf16', 'avx512_bf16': 'avx512_bf16'}

# Which networks (model, use_se) 'auto' trains in bfloat16, per class of CPU:
# those measured faster than float32 on such a CPU (bench/throughput.py) and as
# accurate (bench/bf16_accuracy.py, within float32's seed-to-seed range). A
# network not measured on a class stays float32 there. The figures behind each
# entry, with their machines, are in docs/devices.md, "bfloat16 on the CPU".
CPU_BFLOAT16_AUTO = {
    'amx': {
        ('custom_model', False): False,  # not measured on AMX
        ('custom_model', True): False,  # not measured on AMX
        ('resnet50', False): True,  # 1.51x float32 at 128 px
        ('resnet50', True): False,  # not measured on AMX in bfloat16
    },
    'avx512_bf16': {
        ('custom_model', False): False,  # slower than float32
        ('custom_model', True): False,  # no faster measured
        ('resnet50', False): True,  # 1.56x float32 at 128 px; accuracy within float32's range over seeds
        ('resnet50', True): True,  # 1.32x float32 at 128 px; MNIST accuracy within float32's range over 6 seeds
    },
}


# The ops mixed precision keeps in float32 (grappler's rewrite would run them in
# bfloat16 or float16 where their inputs are): reductions, whose sums over a
# feature map lose digits in an 8-bit mantissa (the SE squeeze, global average
# pooling, the gradients of broadcasts), the SE gate's sigmoid, and softmax,
# as Keras' mixed policies keep softmax and the loss in float32. The
# convolutions, matrix products, batch norm (whose statistics oneDNN keeps in
# float32) and element-wise ops are where the time goes, and stay in the
# faster precision (bench/step_profile.py).
FLOAT32_OPS = ('Mean', 'Sum', 'Sigmoid', 'SigmoidGrad', 'Softmax', 'LogSoftmax')
# Grappler's own knobs, read when a session's graph is rewritten: op types
# added to and removed from the lists of its mixed-precision rewrite. An op in
# two lists makes the rewrite fail, silently: all would stay float32.
LIST_VARIABLES = ('TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_DENYLIST_ADD',
                  'TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_INFERLIST_REMOVE')


def keep_in_float32(environ=os.environ):
    """Moves FLOAT32_OPS from grappler's mixed-precision infer list (run in
    the low precision where their inputs are) to its deny list, beside any
    op types the user named there."""
    for variable in LIST_VARIABLES:
        named = [op for op in environ.get(variable, '').split(',') if op]
        environ[variable] = ','.join(named + [op for op in FLOAT32_OPS if op not in named])


def cpu_name(cpuinfo=CPUINFO):
    """The CPU's model name from /proc/cpuinfo, else what platform says."""
    try:
        with open(cpuinfo, encoding='utf-8', errors='replace') as f:
            for line in f:
                key, sep, value = line.partition(':')
                if sep and key.strip() == 'model name':
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(cpuinfo_text):
    """The feature flags of the first processor in a /proc/cpuinfo text (x86's
    'flags' line); empty if there is none."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(':')
        if sep and key.strip() == 'flags':
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_bfloat16_class(path=CPUINFO):
    """The class of CPU_BFLOAT16_CLASSES this machine's CPU is in, read from
    its flags; None where it has none of them or they cannot be read (not
    Linux): nothing is guessed."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            flags = cpu_flags(f.read())
    except OSError:
        return None
    return next((name for name, flag in CPU_BFLOAT16_CLASSES.items() if flag in flags), None)


def cpu_native_bfloat16(path=CPUINFO):
    """Whether this machine's CPU computes in bfloat16 itself."""
    return cpu_bfloat16_class(path) is not None


def bfloat16_pays(cfg, cpu_class):
    """Whether 'auto' trains cfg's network in bfloat16 on a CPU of `cpu_class`."""
    return CPU_BFLOAT16_AUTO.get(cpu_class, {}).get((cfg['model'], cfg['use_se']), False)


def resolve_auto(cfg, on_gpu, cpu_class=None):
    """The 'auto' device options made concrete for the machine.

    On a GPU: float16 compute with loss scaling (tensor cores), XLA, and NCHW
    in float32 (cuDNN's fast layout) but NHWC in float16 (what tensor cores
    want). On the CPU: NHWC, no XLA (XLA and NCHW were slower there,
    bench/throughput.py), and float32 unless the CPU computes in bfloat16
    natively (`cpu_class`, of CPU_BFLOAT16_CLASSES) and the network is
    measured to gain by it on such a CPU (bfloat16_pays).
    """
    cfg = dict(cfg)
    if cfg['mixed_precision'] == 'auto':
        cfg['mixed_precision'] = on_gpu or bfloat16_pays(cfg, cpu_class)
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
    cfg = resolve_auto(cfg, on_gpu, None if on_gpu else cpu_bfloat16_class())
    if cfg['data_format'] == 'NCHW' and not on_gpu and not cpu_runs_nchw():
        print("warning: data_format='NCHW' needs a GPU or a CPU with oneDNN's kernels, and this "
              "machine has neither; training in NHWC, the same network", file=sys.stderr, flush=True)
        cfg['data_format'] = 'NHWC'
    return cfg


@dataclasses.dataclass(frozen=True)
class Devices:
    """Where and how a run computes: the device options of a config fitted to
    this machine (fit_to_machine), decided once (`decide`) and passed to what
    builds the graph and its session."""
    placement: str            # where a single-device network is built
    on_gpu: bool              # the configured device is a GPU this machine has
    cpu_bfloat16: bool        # the CPU computes in bfloat16 itself
    mixed_precision: bool
    xla: bool
    data_format: str
    num_gpus: int = 1
    log_device_placement: bool = False
    gpu_memory_growth: bool = True
    gpu_memory_fraction: float = None


def decide(cfg):
    """The Devices of a fitted config, the machine asked once."""
    on_gpu = gpu_found(cfg['device'])
    return Devices(
        placement=placement(cfg['device']), on_gpu=on_gpu,
        cpu_bfloat16=not on_gpu and cpu_native_bfloat16(),
        mixed_precision=bool(cfg['mixed_precision']), xla=bool(cfg['xla']),
        data_format=cfg['data_format'], num_gpus=cfg['num_gpus'],
        log_device_placement=cfg['log_device_placement'],
        gpu_memory_growth=cfg['gpu_memory_growth'], gpu_memory_fraction=cfg['gpu_memory_fraction'])


def precision_line(devices):
    """What the console says once per run: the precision the network computes in."""
    if not devices.mixed_precision:
        return 'precision: float32'
    if devices.on_gpu:
        return ('precision: float16 compute on the GPU, float32 weights, reductions, sigmoids and softmax, '
                'dynamic loss scaling')
    line = 'precision: bfloat16 compute on the CPU (oneDNN), float32 weights, reductions, sigmoids and softmax'
    if not devices.cpu_bfloat16:
        line += ('; this CPU has no native bfloat16 (avx512_bf16 or amx_bf16 in its flags): '
                 'expect no gain over float32')
    return line
