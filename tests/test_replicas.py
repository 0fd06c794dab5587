"""num_gpus: data-parallel replicas under MirroredStrategy, tested on a CPU
split into two logical devices (in a child process: the split must come
before TensorFlow starts its runtime)."""
import json
import os
import subprocess
import sys

import pytest

from tests.fixtures import TWO_CPU_SCRIPT

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPLIT_CPU = TWO_CPU_SCRIPT + """from trainer.config import settings
from trainer.training import training_graph
"""

EQUIVALENCE = SPLIT_CPU + """
def variables_after_one_step(num_gpus, initial=None):
    cfg = settings.load_config(['num_gpus=%d' % num_gpus, 'learning_rate=0.05'] + sys.argv[1:])
    rng = np.random.default_rng(0)
    images = rng.normal(size=(10, 8, 8, 1)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 10)]
    with tf.Graph().as_default():
        v1.set_random_seed(0)
        model = training_graph.build_model(cfg, (8, 8, 1), tf.constant(images), tf.constant(labels), 10)
        variables = v1.global_variables()
        names = [v.name for v in variables]
        loads = [v.assign(initial[v.name]) for v in variables] if initial else []
        trainable = v1.trainable_variables()
        gradients = tf.gradients(model.objective, trainable) if num_gpus == 1 else []
        with v1.Session(config=v1.ConfigProto(allow_soft_placement=True)) as session:
            session.run(v1.global_variables_initializer())
            session.run(loads)
            before = dict(zip(names, session.run(variables)))
            grads = dict(zip([v.name for v in trainable], session.run(gradients)))
            loss, _ = session.run([model.train_loss, model.train_op])
            return (before, dict(zip(names, session.run(variables))), float(loss),
                    model.replica_count, grads)

before, one, loss_one, n_one, grads = variables_after_one_step(1)
_, two, loss_two, n_two, _ = variables_after_one_step(2, before)
moved = max(float(np.abs(one[k] - before[k]).max()) for k in one if 'global_step' not in k)
# Adam's first step is lr * g / (|g| + 3.2e-7) (its epsilon over sqrt(1 - beta2)):
# where |g| is near that, round-off of the sums (1e-9 of the largest gradient
# here) changes the step by up to 1e-4 of its size. Compared where |g| is at
# least 1e-5 of the largest; exact zeros of inactive ReLUs, which the other
# run's sums may leave at 1e-12, are left out with the rest.
largest = max(float(np.abs(g).max()) for g in grads.values())
def compared(name):
    return np.abs(grads[name]) >= 1e-5 * largest if name in grads else slice(None)
print(json.dumps({'replicas': [n_one, n_two], 'same_names': sorted(one) == sorted(two),
                  'max_difference': max(float(np.abs(np.atleast_1d(one[k] - two[k]))[compared(k)].max(initial=0))
                                        for k in one),
                  'round_off_gradients': sum(int((~compared(k) & (grads[k] != 0)).sum())
                                             for k in grads),
                  'moved': moved, 'losses': [loss_one, loss_two]}))
"""


def run_child(script, *args):
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': ''}
    result = subprocess.run([sys.executable, '-c', script.replace('{project!r}', repr(PROJECT_DIR)), *args],
                            capture_output=True, text=True, timeout=300, env=env, cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize('options', [[], ['optimizer=momentum', 'use_se=True', 'weight_decay=0.01']])
def test_one_step_on_two_replicas_equals_one_step_on_one_device(options):
    """Same global batch (10 images, split 5 + 5), same initial weights: the
    variables after one step agree within float tolerance."""
    result = json.loads(run_child(EQUIVALENCE, *options).stdout.strip().splitlines()[-1])
    print(f"{options}: largest difference {result['max_difference']:.1e}, "
          f"largest change of a weight {result['moved']:.1e}, "
          f"{result['round_off_gradients']} weights left out whose gradient is near zero "
          f"(below 1e-5 of the largest), and those whose gradient is 0")
    assert result['replicas'] == [1, 2] and result['same_names']
    assert result['moved'] > 1e-3  # the step did change the weights
    # Float sums in another order; weights whose gradient is near zero are left
    # out (Adam divides a gradient by its own size: see EQUIVALENCE).
    assert result['max_difference'] < 1e-3 * result['moved'], result
    assert result['losses'][0] == pytest.approx(result['losses'][1], rel=1e-5)


TRAIN_AND_RESUME = SPLIT_CPU + """
import main
root = sys.argv[1]
statuses = [main.train(settings.load_config(['num_gpus=%d' % gpus, 'max_epochs=%d' % epochs,
                                             'resume=%s' % (epochs > 1), 'datasets_root=' + root]))
            for gpus, epochs in ((2, 1), (1, 2), (2, 3))]  # checkpoints move between counts
print(json.dumps(statuses))
"""


def test_main_trains_on_two_replicas_and_resumes_from_their_checkpoint(tmp_path):
    result = run_child(TRAIN_AND_RESUME, str(tmp_path))
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [0, 0, 0]
    assert '1 epoch(s) done' in result.stdout and '2 epoch(s) done' in result.stdout
    record = json.loads((tmp_path / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu' /
                         'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1, 2, 3]
    assert record['epochs'][-1]['valid_accuracy'] > 0.8  # two replicas learn like one
