"""What each training recipe costs a training step: images/s with and
without it, on the custom model (28x28x1) and ResNet50 at 32 px.

    python -m bench.recipe_cost [windows=3] [steps_custom=40] [steps_resnet=3] [networks=custom_model,resnet50]
                                [publish=True] [key=value ...]

In one process, for each network: the plain step (constant.py's recipe,
float32 NHWC) and the step with each recipe key on, each in its own graph
and session as main.py builds them, fed synthetic images by the project's
input pipeline; their timed windows alternate (bench.throughput.interleaved),
so that the load of this shared machine falls on all alike, and the ratio
is the median of the per-round ratios. `deterministic=True` is timed with
TensorFlow's op determinism on during its windows only. Warmup,
reduce on plateau and early stopping change the rate or the epochs, not the
step, and cost nothing here; the table says so rather than timing them.

Prints a table; `publish=True` also writes it into docs/performance.md.
"""
import contextlib
import sys

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

from bench import performance_docs
from bench.throughput import interleaved, load_line, median_ratio, option, project_steps, synthetic_arrays, timed_rate
from trainer.config import settings
from trainer.training import training_graph

FIXED = ['mixed_precision=False', 'data_format=NHWC', 'xla=False']
NETWORKS = {'custom_model': ('mnist', (28, 28, 1)), 'resnet50': ('cifar_32', (32, 32, 3))}
RECIPES = {'plain': [], 'optimizer=adamw': ['optimizer=adamw', 'weight_decay=0.05'],
           'optimizer=nesterov': ['optimizer=nesterov'], 'clip_grad_norm=1': ['clip_grad_norm=1'],
           'ema_decay=0.999': ['ema_decay=0.999'], 'mixup_alpha=0.2': ['mixup_alpha=0.2'],
           'cutmix_alpha=1': ['cutmix_alpha=1'], 'deterministic=True': ['deterministic=True']}
FREE = 'warmup_epochs, plateau_patience, early_stopping_patience'


def window(run_step, batch_size, steps, deterministic):
    """A timed window of `steps` steps, with op determinism on for a deterministic contender."""
    with training_graph.determinism(deterministic):
        return timed_rate(run_step, batch_size, steps)


def network_rows(argv, network, windows, steps):
    dataset, shape = NETWORKS[network]
    data = synthetic_arrays(shape, 1000, 10, seed=0)
    configs = {name: settings.load_config([*argv, *FIXED, f'model={network}', f'dataset_name={dataset}', *keys])
               for name, keys in RECIPES.items()}
    with contextlib.ExitStack() as stack:
        contenders = {}
        for name, cfg in configs.items():
            with training_graph.determinism(cfg['deterministic']):  # its graph built as main.py would
                step, _ = stack.enter_context(project_steps(cfg, data))
            contenders[name] = (lambda s=step, c=cfg: lambda n=steps: window(s, c['batch_size'], n,
                                                                              c['deterministic']))()
        rates, rounds = interleaved(contenders, warmup=1, windows=windows)
    return [[network, name, f'{rates[name]:.1f}',
             '1.00x' if name == 'plain' else f"{median_ratio(rounds, name, 'plain'):.2f}x"] for name in RECIPES]


def run(argv):
    windows = int(option(argv, 'windows', 3))
    steps = {'custom_model': int(option(argv, 'steps_custom', 40)), 'resnet50': int(option(argv, 'steps_resnet', 3))}
    networks = option(argv, 'networks', 'custom_model,resnet50').split(',')
    with performance_docs.published('recipe_cost', argv):
        rows = [row for network in networks for row in network_rows(argv, network, windows, steps[network])]
        print(f'### What each training recipe costs a step ({load_line()})\n')
        print('| network | recipe | img/s | vs plain |')
        print('| --- | --- | --- | --- |')
        for row in rows:
            print('| ' + ' | '.join(row) + ' |')
        print(f'\nSynthetic images, batch 50, float32 NHWC, median of {windows} interleaved windows; '
              f'{FREE} change the rate or the epochs, not the step. TensorFlow {tf.__version__}.')


if __name__ == '__main__':
    run(sys.argv[1:])
