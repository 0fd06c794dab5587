"""The benchmark scripts can import the project: they put bench/ first on
sys.path, so a script named like a project module would hide it."""
import os

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(folder):
    return {name[:-3] for name in os.listdir(folder) if name.endswith('.py')}


def test_no_bench_script_is_named_like_a_project_module():
    bench = modules(os.path.join(PROJECT_DIR, 'bench'))
    assert bench and not bench & modules(PROJECT_DIR), sorted(bench & modules(PROJECT_DIR))
