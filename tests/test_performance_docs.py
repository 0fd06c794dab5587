"""bench/performance_docs.py: a bench script's printed tables become its section of
docs/performance.md, headed by the machine, TensorFlow's version and the date."""
import datetime
import io
import sys

from bench import performance_docs as report

PRINTED = """warming up ...
ResNet50 128 px: 38.8 img/s
a caption
| network | img/s |
| --- | --- |
| custom | 5078 |

| precision | share |
| --- | --- |
| bfloat16 | 24 % |

### after a blank line

| dtype |
| --- |
done
"""


def test_the_tables_are_taken_with_their_captions():
    assert report.tables(PRINTED) == [
        ['a caption', '', '| network | img/s |', '| --- | --- |', '| custom | 5078 |'],
        ['| precision | share |', '| --- | --- |', '| bfloat16 | 24 % |'],
        ['### after a blank line', '', '| dtype |', '| --- |']]


def test_the_heading_names_the_cpu_its_flags_tensorflow_and_the_date(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n')
    line = report.machine_line('2.21.0', datetime.date(2026, 12, 6), str(cpuinfo))
    assert line.startswith('Measured on Intel Xeon (')
    assert line.endswith('cores; flags avx512f, amx_bf16, amx_tile), TensorFlow 2.21.0, 2026-12-06.')


def test_publishing_replaces_only_the_scripts_section(tmp_path):
    document = tmp_path / 'performance.md'
    document.write_text('# Performance\n\n<!-- bench/eval_pass.py: start -->\nold\n'
                        '<!-- bench/eval_pass.py: end -->\n\nprose kept\n')
    report.publish('bench/eval_pass.py', PRINTED, '2.21.0', str(document))
    text = document.read_text()
    assert 'old' not in text and text.endswith('<!-- bench/eval_pass.py: end -->\n\nprose kept\n')
    section = text.split('<!-- bench/eval_pass.py: start -->\n')[1].split('\n<!-- bench')[0]
    assert section.startswith('Measured on ') and '| custom | 5078 |' in section
    assert '| bfloat16 | 24 % |' in section and 'warming up' not in section


def test_a_script_without_a_section_gets_one_at_the_end(tmp_path):
    document = tmp_path / 'performance.md'
    document.write_text('# Performance\n')
    report.publish('bench/new.py', PRINTED, '2.21.0', str(document))
    assert document.read_text().startswith('# Performance\n\n## bench/new.py\n\n<!-- bench/new.py: start -->\n')


def test_publish_true_tees_the_output_and_leaves_the_other_arguments(tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(report, 'publish', lambda script, printed, version: written.update(printed=printed))
    console = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', console)
    argv = ['steps=3', 'publish=True']
    with report.published('bench/x.py', argv):
        print('| a |')
    assert argv == ['steps=3'] and written['printed'] == '| a |\n' and console.getvalue() == '| a |\n'
    with report.published('bench/x.py', argv):
        print('| b |')
    assert written['printed'] == '| a |\n'  # without publish=True nothing is written
