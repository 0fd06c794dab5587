"""The GPU check, ready for the day a GPU is available: what 'auto'
turns on there (float16 with loss scaling, XLA, NCHW in float32) has never
run on one. Without a GPU it runs reduced on the CPU, skipping what needs a
GPU and saying so, so that the script itself is known to work.

    python -m bench.gpu_check [steps=N] [networks=custom_model,resnet50_se] [key=value ...]

For every network (custom model, ResNet50) with and without SE, ReLU and SELU,
on synthetic images (28x28x1 for the custom model, 32x32x3 for ResNet50; 128
px on a GPU), it trains `steps` steps (200 on a GPU, 6 on a CPU) with the
'auto' options and with float32 NHWC (no XLA), from equal seeds (equal
initial weights and batches), and checks:

  finite     every training loss of both is finite;
  agree      where both are float32, their first 3 losses agree within 0.1 %;
             in float16 or bfloat16 the first loss (equal weights, equal batch)
             within 5 %: after an update the two trajectories part by more than
             any fixed tolerance (8-bit mantissas: on a CPU's bfloat16 they part
             by a few per cent within three steps), so later steps are
             checked for finiteness only;
  images/s   of both, from the 4th step on (after XLA's compilation);
  replicas   for one network of each kind: num_gpus=1 through the replica path
             (a one-device MirroredStrategy, the path of num_gpus > 1)
             against the plain path, float32, first 3 losses within 0.1 %.

On a CPU with native bfloat16 it also trains bfloat16 (mixed_precision=True)
against float32, the CPU's mixed precision, where 'auto' does not already
choose it. Prints one line per check and
exits 1 if any failed. On one GPU it is meant to take a few minutes.
"""
import math
import sys
import time

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

from bench import performance_docs
from bench.throughput import option, project_steps, synthetic_arrays
from foundation import machine
from trainer.config import settings

v1 = tf.compat.v1

NETWORKS = {f"{model}{'_se' if se else ''}_{act}": (model, se, act)
            for model in ('custom_model', 'resnet50') for se in (False, True)
            for act in ('relu', 'selu')}
REPLICA_NETWORKS = ('custom_model_relu', 'resnet50_relu')
FLOAT32 = ['mixed_precision=False', 'data_format=NHWC', 'xla=False']
COMPARED_STEPS = 3
MIXED_RTOL, FLOAT32_RTOL = 0.05, 1e-3


class Checks:
    """One line per check, PASS / FAIL / SKIP; the exit status at the end."""

    def __init__(self):
        self.failed = 0

    def report(self, ok, name, detail):
        self.failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    @staticmethod
    def skip(name, why):
        print(f'SKIP {name}: {why}', flush=True)

    def status(self):
        print(f"\n{'all checks passed' if not self.failed else f'{self.failed} check(s) failed'}",
              flush=True)
        return 1 if self.failed else 0


def data_for(model, on_gpu):
    """(dataset_name, synthetic arrays) for the model: MNIST-shaped for the
    custom model, CIFAR-shaped for ResNet50 (128 px on a GPU)."""
    if model == 'custom_model':
        return 'mnist', synthetic_arrays((28, 28, 1), 2000, 10, seed=0)
    size = 128 if on_gpu else 32
    return 'cifar_32', synthetic_arrays((size, size, 3), 2000 if on_gpu else 500, 10, seed=0)


def train(cfg, data, steps, strategy=None):
    """(the losses of `steps` training steps, images/s from step 4 on)."""
    losses, started, images = [], None, 0
    with project_steps(cfg, data, strategy) as (step, _):
        for i in range(steps):
            if i == COMPARED_STEPS:
                started = time.perf_counter()
            loss, batch = step()
            losses.append(float(loss))
            images += batch if started else 0
    return losses, images / (time.perf_counter() - started) if started else float('nan')


def agree(first, second, rtol, steps=COMPARED_STEPS):
    """Whether the first `steps` losses agree within rtol."""
    return all(math.isclose(a, b, rel_tol=rtol) for a, b in zip(first[:steps], second[:steps]))


def shown(losses, steps=COMPARED_STEPS):
    return ', '.join(f'{x:.4f}' for x in losses[:steps])


def precision_of(cfg, on_gpu):
    kind = ('float16' if on_gpu else 'bfloat16') if cfg['mixed_precision'] else 'float32'
    return f"{kind}, {cfg['data_format']}{', XLA' if cfg['xla'] else ''}"


def contenders(base, on_gpu):
    """name -> config: 'auto', float32 NHWC, and bfloat16 on a CPU that has it."""
    configs = {'auto': settings.load_config(base), 'float32': settings.load_config(base + FLOAT32)}
    if not on_gpu and machine.cpu_native_bfloat16():
        configs['bfloat16'] = settings.load_config(base + ['mixed_precision=True', 'data_format=NHWC',
                                                           'xla=False'])
    return configs


def check_network(checks, name, argv, steps, on_gpu):
    """finite, agree and images/s of one network; returns the float32 losses."""
    model, se, act = NETWORKS[name]
    dataset, data = data_for(model, on_gpu)
    base = [f'dataset_name={dataset}', f'model={model}', f'use_se={se}', f'activation_fn={act}',
            *argv]
    configs, results = contenders(base, on_gpu), {}
    for label, same in (('auto', 'float32'), ('bfloat16', 'auto')):
        if label in configs and same in configs and configs[label] == configs[same]:
            checks.skip(f'{name} {label}', f'the same configuration as {same} on this machine')
            del configs[label]
    for label, cfg in configs.items():
        results[label] = train(cfg, data, steps)
    reference = results['float32'][0]
    for label, (losses, rate) in results.items():
        checks.report(all(map(math.isfinite, losses)), f'{name} {label} finite',
                      f'{len(losses)} losses, last {losses[-1]:.4f}; {rate:.1f} img/s '
                      f'({precision_of(configs[label], on_gpu)})')
        if label != 'float32':
            rtol, steps = ((MIXED_RTOL, 1) if configs[label]['mixed_precision']
                           else (FLOAT32_RTOL, COMPARED_STEPS))
            checks.report(agree(losses, reference, rtol, steps), f'{name} {label} agrees with float32',
                          f'first losses {shown(losses, steps)} against {shown(reference, steps)}')
    return dict(configs['float32']), data, reference


def check_replicas(checks, name, cfg, data, reference, on_gpu):
    """num_gpus=1 through a one-device MirroredStrategy against the plain path."""
    device = '/device:GPU:0' if on_gpu else '/device:CPU:0'
    strategy = v1.distribute.MirroredStrategy([device])
    losses, _ = train(cfg, data, COMPARED_STEPS, strategy)
    checks.report(agree(losses, reference, FLOAT32_RTOL), f'{name} replica path on {device}',
                  f'first losses {shown(losses)} against the plain path {shown(reference)}')


def run(argv):
    argv = list(argv)
    on_gpu = machine.gpu_found('/device:GPU:0')
    steps = int(option(argv, 'steps', '200' if on_gpu else '6'))
    names = option(argv, 'networks', ','.join(NETWORKS)).split(',')
    checks, started = Checks(), time.perf_counter()
    if on_gpu:
        print(f"GPU: {tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0])}")
    else:
        print('no GPU found: a reduced run on the CPU', flush=True)
        checks.skip('float16, XLA and NCHW', "they need a GPU; on a CPU 'auto' is NHWC without "
                    'XLA, in bfloat16 where the CPU has it and the network gains (foundation/machine.py)')
    for name in names:
        cfg, data, reference = check_network(checks, name, argv, steps, on_gpu)
        if name in REPLICA_NETWORKS:
            check_replicas(checks, name, cfg, data, reference, on_gpu)
    print(f'{time.perf_counter() - started:.0f} s in all', flush=True)
    return checks.status()


if __name__ == '__main__':
    v1.disable_eager_execution()  # as main.py runs
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        status = run(argv)
    sys.exit(status)
