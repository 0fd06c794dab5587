"""The shape of the code: imports run one way (commands -> trainer/ -> the
user's files -> foundation/), folders stay small enough to read, and the
product speaks of what it does, not of how it was made."""
import ast
import collections
import os
import re

import pytest

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS_FILES = {'constant', 'layers', 'util', 'Model', 'TFRecordsReader'}  # what trainer/ stands on
COMMANDS = {'main', 'experiments', 'evaluate', 'predict', 'export', 'instruments', 'ImageResizer',
            'TFRecordsWriter'}
MAX_MODULES = 12  # per folder


def product_files():
    """Paths (relative) of the product's Python files: top level, foundation/, trainer/."""
    found = [name for name in os.listdir(PROJECT_DIR) if name.endswith('.py')]
    for package in ('foundation', 'trainer'):
        for root, _, names in os.walk(os.path.join(PROJECT_DIR, package)):
            found += [os.path.relpath(os.path.join(root, n), PROJECT_DIR) for n in names if n.endswith('.py')]
    return sorted(found)


def room(path):
    """What the import graph is drawn between: a top-level file ('Model'), or a
    folder ('foundation', 'foundation/data', 'trainer/runs')."""
    parts = path[:-3].split(os.sep)
    if len(parts) == 1:
        return parts[0]
    return '/'.join(parts[:-1])


def room_of_module(module):
    """The room a dotted module name lives in; None for one outside the project."""
    parts = module.split('.')
    if parts[0] in ('foundation', 'trainer'):
        path = os.path.join(PROJECT_DIR, *parts)
        if os.path.isdir(path):
            return '/'.join(parts)
        return '/'.join(parts[:-1]) if len(parts) > 1 else parts[0]
    if os.path.exists(os.path.join(PROJECT_DIR, parts[0] + '.py')):
        return parts[0]
    return None


def imports(path):
    """The rooms that the file at `path` imports, other than its own."""
    tree = ast.parse(open(os.path.join(PROJECT_DIR, path), encoding='utf-8').read())
    named = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            named += [f'{node.module}.{alias.name}' for alias in node.names]
    rooms = {room_of_module(name) for name in named} - {None, room(path)}
    return rooms


def graph():
    edges = collections.defaultdict(set)
    for path in product_files():
        edges[room(path)] |= imports(path)
    return edges


def test_foundation_imports_nothing_above_it():
    for path in product_files():
        if path.startswith('foundation'):
            assert {r for r in imports(path) if not r.startswith('foundation')} == set(), path


def test_the_users_files_import_nothing_of_trainer_or_the_commands():
    for name in USERS_FILES:
        above = {r for r in imports(f'{name}.py') if r.startswith('trainer') or r in COMMANDS}
        assert above == set(), name


def test_the_import_graph_of_folders_and_top_level_files_has_no_cycle():
    edges = graph()
    state = {}

    def visit(node, trail):
        state[node] = 'open'
        for target in sorted(edges.get(node, ())):
            assert state.get(target) != 'open', ' -> '.join([*trail, node, target])
            if target not in state:
                visit(target, [*trail, node])
        state[node] = 'done'

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_no_folder_holds_more_than_a_dozen_modules():
    counts = collections.Counter(room(p) for p in product_files() if os.sep in p
                                 and not p.endswith('__init__.py'))
    assert {folder: n for folder, n in counts.items() if n > MAX_MODULES} == {}


# What the user cannot look up: our internal documents and work items, and
# the project's history told as "the seed's". The grid named 'seed' and random
# seeds are not meant.
PROCESS_WORDS = re.compile(r"\bSPEC ?\d|\(SPEC\b|\b[Ii]ssue \d|\bthe seed's|\bthe seed\b(?!-to-| spread| of| is| \d)")


def text_files():
    found = ['README.md', 'CHANGELOG.md', *(os.path.join('docs', n) for n in
                                            os.listdir(os.path.join(PROJECT_DIR, 'docs')))]
    found += product_files() + [os.path.join('bench', n) for n in
                                os.listdir(os.path.join(PROJECT_DIR, 'bench')) if n.endswith('.py')]
    return sorted(found)


@pytest.mark.parametrize('path', text_files())
def test_the_product_speaks_of_what_it_does_not_of_how_it_was_made(path):
    with open(os.path.join(PROJECT_DIR, path), encoding='utf-8') as f:
        said = [f'{number}: {line.strip()}' for number, line in enumerate(f, 1)
                if PROCESS_WORDS.search(line)]
    assert said == []


def test_the_readme_stays_a_start():
    """Reference goes to docs/, changes to CHANGELOG.md."""
    with open(os.path.join(PROJECT_DIR, 'README.md'), encoding='utf-8') as f:
        assert len(f.read().splitlines()) <= 250
