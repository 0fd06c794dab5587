"""bench/gpu_check.py, reduced to the custom model: it runs where there is no
GPU, passes on healthy training and fails (exit status 1) on a diverging one."""
import tensorflow as tf

from bench import gpu_check

NO_GPU = not tf.config.list_physical_devices('GPU')


def test_the_reduced_check_passes_and_says_what_it_skipped(capsys):
    assert gpu_check.run(['networks=custom_model_relu,custom_model_se_selu', 'steps=4']) == 0
    out = capsys.readouterr().out
    for network in ('custom_model_relu', 'custom_model_se_selu'):
        assert f'PASS {network} float32 finite: 4 losses' in out
    assert 'PASS custom_model_relu replica path on /device:' in out
    assert 'FAIL' not in out and out.rstrip().endswith('all checks passed')
    if NO_GPU:
        assert 'no GPU found: a reduced run on the CPU' in out
        assert 'SKIP float16, XLA and NCHW: they need a GPU' in out


def test_non_finite_losses_fail_the_check(capsys):
    # A step of 1e30 per weight overflows the logits: the losses become NaN.
    assert gpu_check.run(['networks=custom_model_relu', 'steps=4', 'learning_rate=1e30']) == 1
    out = capsys.readouterr().out
    assert 'FAIL custom_model_relu float32 finite: 4 losses, last nan' in out


def test_mixed_precision_is_held_to_its_first_loss_and_float32_to_three():
    reference = [2.30, 2.10, 1.90]
    parted_after_the_update = [2.32, 2.20, 2.08]  # 1 %, then 5 % and 9 % apart
    assert gpu_check.agree(parted_after_the_update, reference, gpu_check.MIXED_RTOL, steps=1)
    assert not gpu_check.agree([2.45, 2.10, 1.90], reference, gpu_check.MIXED_RTOL, steps=1)
    assert not gpu_check.agree(parted_after_the_update, reference, gpu_check.FLOAT32_RTOL)
    assert not gpu_check.agree([2.30, 2.10, 1.91], reference, gpu_check.FLOAT32_RTOL)
