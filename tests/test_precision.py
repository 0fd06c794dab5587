"""mixed_precision='auto' on the CPU: native bfloat16 read from the CPU's
flags (fixture /proc/cpuinfo texts of real processors), then decided per
network from machine.CPU_BFLOAT16_AUTO; the console line naming the precision."""
import pytest

import constant
from foundation import machine
from trainer.config import settings

# Excerpts of /proc/cpuinfo (first processor), flags shortened around the ones that matter.
AMD_GENOA = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu vme sse sse2 avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 clzero avx512vbmi avx512_vnni
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2
"""
INTEL_SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8
vmx flags\t: vnmi preemption_timer posted_intr invvpid ept_x_only
"""
INTEL_ICE_LAKE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme avx2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512vbmi avx512_vnni
vmx flags\t: vnmi preemption_timer avx512_bf16
"""
AMD_ROME = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 avx avx2 sha_ni clzero
"""
ARM_NEOVERSE_V1 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp sve bf16 i8mm
CPU implementer\t: 0x41
"""


@pytest.mark.parametrize('text, native', [
    (AMD_GENOA, True),  # AVX512_BF16
    (INTEL_SAPPHIRE_RAPIDS, True),  # AVX512_BF16 and AMX
    # AVX-512 without BF16; its 'vmx flags' line is given a bf16 word here: only 'flags' counts
    (INTEL_ICE_LAKE, False),
    (AMD_ROME, False),
    (ARM_NEOVERSE_V1, False),  # no x86 flags line: not oneDNN's x86 bfloat16
    ('', False),
])
def test_native_bfloat16_is_read_from_the_cpu_flags(text, native, tmp_path):
    path = tmp_path / 'cpuinfo'
    path.write_text(text)
    assert machine.cpu_native_bfloat16(str(path)) is native


def test_flags_are_whole_words_of_the_flags_line():
    flags = machine.cpu_flags(INTEL_SAPPHIRE_RAPIDS)
    assert {'amx_bf16', 'avx512_bf16', 'amx_tile'} <= flags
    assert 'vnmi' not in flags and 'flags' not in flags
    assert machine.cpu_flags('flags\t: avx512_bf16x xavx512_bf16\n') & \
        frozenset(machine.CPU_BFLOAT16_CLASSES.values()) == frozenset()


def test_an_unreadable_cpuinfo_means_no_bfloat16(tmp_path):
    assert machine.cpu_native_bfloat16(str(tmp_path / 'missing')) is False


def test_the_table_of_every_cpu_class_names_every_network():
    networks = {(model, se) for model in constant.config['models'] for se in (False, True)}
    assert set(machine.CPU_BFLOAT16_AUTO) == set(machine.CPU_BFLOAT16_CLASSES)
    assert all(set(table) == networks for table in machine.CPU_BFLOAT16_AUTO.values())


def cfg_of(model, use_se=False, **given):
    return {**constant.config, 'model': model, 'use_se': use_se, 'mixed_precision': 'auto',
            'data_format': 'auto', 'xla': 'auto', **given}


@pytest.fixture
def resnet50_measured(monkeypatch):
    """A table where ResNet50 (not SE, not the custom model) gains, whatever
    the measured one says."""
    monkeypatch.setattr(machine, 'CPU_BFLOAT16_AUTO', {
        cpu_class: {key: key == ('resnet50', False) for key in table}
        for cpu_class, table in machine.CPU_BFLOAT16_AUTO.items()})


@pytest.mark.parametrize('model, use_se, cpu_bfloat16, expected', [
    ('resnet50', False, 'avx512_bf16', True),
    ('resnet50', False, 'amx', True),
    ('resnet50', True, 'avx512_bf16', False),
    ('custom_model', False, 'amx', False),
    ('resnet50', False, None, False),  # no native bfloat16: float32 whatever the table says
])
def test_auto_on_the_cpu_follows_the_flags_and_the_table(resnet50_measured, model, use_se,
                                                         cpu_bfloat16, expected):
    resolved = machine.resolve_auto(cfg_of(model, use_se), False, cpu_bfloat16)
    assert (resolved['mixed_precision'], resolved['data_format'], resolved['xla']) == \
        (expected, 'NHWC', False)


@pytest.mark.parametrize('given', [True, False])
def test_an_explicit_mixed_precision_is_kept(resnet50_measured, given):
    for cpu_bfloat16 in ('amx', 'avx512_bf16', None):
        resolved = machine.resolve_auto(cfg_of('resnet50', mixed_precision=given), False, cpu_bfloat16)
        assert resolved['mixed_precision'] is given


def test_a_gpu_takes_float16_whatever_the_cpu(resnet50_measured):
    assert machine.resolve_auto(cfg_of('custom_model'), True, None)['mixed_precision'] is True


@pytest.mark.parametrize('native', [True, False])
def test_load_config_asks_the_cpu(resnet50_measured, monkeypatch, native):
    monkeypatch.setattr(machine, 'gpu_found', lambda device: False)
    monkeypatch.setattr(machine, 'cpu_bfloat16_class', lambda: 'avx512_bf16' if native else None)
    assert settings.load_config(['model=resnet50'])['mixed_precision'] is native
    assert settings.load_config(['model=custom_model'])['mixed_precision'] is False


@pytest.mark.parametrize('mixed, native, expected', [
    (False, True, 'precision: float32'),
    (True, True, 'precision: bfloat16 compute on the CPU (oneDNN), float32 weights, reductions, sigmoids '
                 'and softmax'),
    (True, False, 'precision: bfloat16 compute on the CPU (oneDNN), float32 weights, reductions, sigmoids '
                  'and softmax; this CPU has no native bfloat16 (avx512_bf16 or amx_bf16 in its '
                  'flags): expect no gain over float32'),
])
def test_precision_line_on_the_cpu(monkeypatch, mixed, native, expected):
    monkeypatch.setattr(machine, 'gpu_found', lambda device: False)
    monkeypatch.setattr(machine, 'cpu_native_bfloat16', lambda: native)
    assert machine.precision_line(machine.decide({**constant.config, 'mixed_precision': mixed})) == expected


def test_precision_line_on_a_gpu(monkeypatch):
    monkeypatch.setattr(machine, 'gpu_found', lambda device: True)
    assert machine.precision_line(machine.decide({**constant.config, 'mixed_precision': True})) == \
        ('precision: float16 compute on the GPU, float32 weights, reductions, sigmoids and softmax, '
         'dynamic loss scaling')


def test_auto_carries_a_measured_network_into_bfloat16_sessions(resnet50_measured, monkeypatch):
    # The whole path main.py takes once the integrator sets ResNet50's entry: the
    # resolved config, the session's oneDNN bfloat16 rewrite, the console line.
    from tensorflow.core.protobuf import rewriter_config_pb2

    from trainer.training import training_graph
    monkeypatch.setattr(machine, 'gpu_found', lambda device: False)
    monkeypatch.setattr(machine, 'cpu_native_bfloat16', lambda: True)
    monkeypatch.setattr(machine, 'cpu_bfloat16_class', lambda: 'avx512_bf16')
    on = rewriter_config_pb2.RewriterConfig.ON
    for model, bfloat16 in (('resnet50', True), ('custom_model', False)):
        cfg = settings.load_config([f'model={model}'])
        rewrites = training_graph.session_config(machine.decide(cfg)).graph_options.rewrite_options
        assert (rewrites.auto_mixed_precision_onednn_bfloat16 == on) is bfloat16
        assert rewrites.auto_mixed_precision != on  # float16 is the GPU's
        assert machine.precision_line(machine.decide(cfg)).startswith(
            'precision: bfloat16' if bfloat16 else 'precision: float32')
