"""A bench script's figures kept in docs/performance.md: run with
`publish=True`, a script writes the markdown tables it printed between its
markers there (`<!-- bench/NAME.py: start -->` ... `end -->`), headed by one
line that names the machine, the TensorFlow version and the date.

    python -m bench.throughput publish=True
"""
import contextlib
import datetime
import io
import os
import sys

from foundation import machine, safe_io

PERFORMANCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs',
                           'performance.md')
SHOWN_FLAGS = ('avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile')  # what decides the CPU's speed here


def machine_line(tf_version, today=None, cpuinfo=machine.CPUINFO):
    """'Measured on AMD EPYC (2 cores; flags avx512f, avx512_bf16), TensorFlow 2.21.0, 2026-12-06.'"""
    try:
        with open(cpuinfo, encoding='utf-8', errors='replace') as f:
            flags = machine.cpu_flags(f.read())
    except OSError:
        flags = frozenset()
    shown = ', '.join(flag for flag in SHOWN_FLAGS if flag in flags) or 'none of ' + ', '.join(SHOWN_FLAGS)
    day = (today or datetime.date.today()).isoformat()
    return (f'Measured on {machine.cpu_name(cpuinfo)} ({os.cpu_count()} cores; flags {shown}), '
            f'TensorFlow {tf_version}, {day}.')


def tables(printed):
    """The markdown tables of a script's printed text, each with the line
    just before it (its caption, a blank line between them or not) where
    there is one, as blocks of lines."""
    blocks, lines = [], printed.splitlines()
    for number, line in enumerate(lines):
        if not line.startswith('|') or (number and lines[number - 1].startswith('|')):
            continue
        end = number
        while end < len(lines) and lines[end].startswith('|'):
            end += 1
        before = [line.strip() for line in lines[max(number - 2, 0):number] if line.strip()]
        caption = before[-1] if before and not before[-1].startswith('|') else None
        blocks.append(([caption, ''] if caption else []) + lines[number:end])
    return blocks


def markers(script):
    name = os.path.basename(script)
    return f'<!-- bench/{name}: start -->', f'<!-- bench/{name}: end -->'


def with_section(document, script, heading, blocks):
    """`document` with the section of `script` made of `heading` and `blocks`
    (a new section at its end where it has none)."""
    start, end = markers(script)
    body = '\n\n'.join([heading, *('\n'.join(block) for block in blocks)])
    section = f'{start}\n{body}\n{end}'
    if start in document and end in document:
        before, rest = document.split(start, 1)
        return before + section + rest.split(end, 1)[1]
    return document.rstrip('\n') + f'\n\n## bench/{os.path.basename(script)}\n\n{section}\n'


def publish(script, printed, tf_version, path=PERFORMANCE):
    """Writes the tables of `printed` as the section of `script` in `path`."""
    blocks = tables(printed)
    if not blocks:
        print(f'nothing to publish: {os.path.basename(script)} printed no table', file=sys.stderr)
        return
    with open(path, encoding='utf-8') as f:
        document = f.read()
    safe_io.write_text(path, with_section(document, script, machine_line(tf_version), blocks))
    print(f'Tables written into {os.path.relpath(path)}')


class Tee(io.TextIOBase):
    """Writes to the console and keeps a copy."""

    def __init__(self, console):
        self.console, self.copy = console, io.StringIO()

    def write(self, text):
        self.copy.write(text)
        return self.console.write(text)

    def flush(self):
        self.console.flush()


@contextlib.contextmanager
def published(script, argv):
    """Runs the block; with `publish=True` in argv (taken out of it), then
    writes what it printed into docs/performance.md."""
    wanted = 'publish=True' in argv
    while 'publish=True' in argv:
        argv.remove('publish=True')
    if not wanted:
        yield
        return
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    import tensorflow as tf  # loaded by every bench by now
    publish(script, tee.copy.getvalue(), tf.__version__)
