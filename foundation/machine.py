"""What this machine can do, and the 'auto' device options decided for it:
a GPU or not, NCHW kernels on its CPU or not, native bfloat16 on its CPU or not."""
import dataclasses
import functools
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
# The flags Linux lists for a CPU that computes in bfloat16 itself: AVX-512's
# BF16 instructions, AMX's tiles. Elsewhere TensorFlow lets oneDNN emulate
# bfloat16 (on any AVX-512 CPU), which is slower than float32.
NATIVE_BFLOAT16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16'})

# Which networks (model, use_se) 'auto' trains in bfloat16 on a CPU with native
# bfloat16: those measured faster than float32 (bench/throughput.py) and as
# accurate (bench/bf16_accuracy.py, within the seed-to-seed spread). The
# figures behind each entry are in docs/devices.md, "bfloat16 on the CPU".
CPU_BFLOAT16_AUTO = {
    ('custom_model', False): False,  # slower than float32
    ('custom_model', True): False,  # no faster measured
    # faster than float32 at 128 and 32 px; MNIST accuracy within the seed spread
    ('resnet50', False): True,
    # faster than float32 at 128 px, but MNIST accuracy falls short: with ReLU one
    # bfloat16 seed of two validated well below both float32 seeds
    ('resnet50', True): False,
}


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
def cpu_native_bfloat16(path=CPUINFO):
    """Whether this machine's CPU computes in bfloat16 itself, read from its
    flags; False where they cannot be read (not Linux): nothing is guessed."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return bool(cpu_flags(f.read()) & NATIVE_BFLOAT16_FLAGS)
    except OSError:
        return False


def bfloat16_pays(cfg):
    """Whether 'auto' trains cfg's network in bfloat16 on a CPU that has it."""
    return CPU_BFLOAT16_AUTO.get((cfg['model'], cfg['use_se']), False)


def resolve_auto(cfg, on_gpu, cpu_bfloat16=False):
    """The 'auto' device options made concrete for the machine.

    On a GPU: float16 compute with loss scaling (tensor cores), XLA, and NCHW
    in float32 (cuDNN's fast layout) but NHWC in float16 (what tensor cores
    want). On the CPU: NHWC, no XLA (XLA and NCHW were slower there,
    bench/throughput.py), and float32 unless the CPU has native bfloat16
    (`cpu_bfloat16`) and the network is measured to gain by it (bfloat16_pays).
    """
    cfg = dict(cfg)
    if cfg['mixed_precision'] == 'auto':
        cfg['mixed_precision'] = on_gpu or (cpu_bfloat16 and bfloat16_pays(cfg))
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
    cfg = resolve_auto(cfg, on_gpu, not on_gpu and cpu_native_bfloat16())
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
        return 'precision: float16 compute on the GPU, float32 weights, dynamic loss scaling'
    line = 'precision: bfloat16 compute on the CPU (oneDNN), float32 weights, dynamic loss scaling'
    if not devices.cpu_bfloat16:
        line += ('; this CPU has no native bfloat16 (avx512_bf16 or amx_bf16 in its flags): '
                 'expect no gain over float32')
    return line
