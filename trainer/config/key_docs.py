"""What each config key means, read from the comments beside it in
constant.py: the one place a user edits, so `--help` and the key table of
docs/configuration.md (both made here) never disagree with it.

    python -m trainer.config.key_docs    # rewrites docs/configuration.md's key table from constant.py
"""
import ast
import dataclasses
import io
import os
import re
import sys
import textwrap
import tokenize

import constant
from foundation import safe_io
from trainer.config import settings

CONSTANT_FILE = os.path.join(constant.PROJECT_DIR, 'constant.py')
KEY_TABLE_FILE = os.path.join(constant.PROJECT_DIR, 'docs', 'configuration.md')
TABLE_START = '<!-- keys: made from constant.py by `python -m trainer.config.key_docs`; edit them there -->'
TABLE_END = '<!-- end of keys -->'
LONG_DEFAULT = 70  # characters: a longer default (the menu of grids) is shown as 'see constant.py'


@dataclasses.dataclass
class KeyDoc:
    key: str
    default: str  # as constant.py writes it
    meaning: str
    fixed: bool   # a menu: edited in constant.py only


def comments_by_line(source):
    """{line number: comment text} of constant.py's source, without the '#'."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string.lstrip('#').strip() for t in tokens if t.type == tokenize.COMMENT}


def config_dict(tree):
    return next(node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(getattr(t, 'id', None) == 'config' for t in node.targets))


def meaning_of(key_node, value_node, comments, lines):
    """The comment on the key's line (or its value's last line), then the
    comment-only lines right after it (a meaning too long for one line)."""
    first = comments.get(key_node.lineno) or comments.get(value_node.end_lineno, '')
    parts, line = [first], value_node.end_lineno + 1
    while line in comments and lines[line - 1].lstrip().startswith('#') \
            and not comments[line].startswith('---'):
        parts.append(comments[line])
        line += 1
    return ' '.join(p for p in parts if p)


def key_docs(source=None):
    """A KeyDoc per key of constant.config, in its order."""
    source = source if source is not None else open(CONSTANT_FILE, encoding='utf-8').read()
    comments, lines = comments_by_line(source), source.splitlines()
    table = config_dict(ast.parse(source))
    docs = []
    for key_node, value_node in zip(table.keys, table.values):
        default = ast.get_source_segment(source, value_node)
        if key_node.value == 'datasets_root':
            default = "'<project>/datasets'"  # PROJECT_DIR: the folder of main.py
        elif len(default) > LONG_DEFAULT or '\n' in default:
            default = 'see constant.py'
        docs.append(KeyDoc(key_node.value, default, meaning_of(key_node, value_node, comments, lines),
                           key_node.value in settings.MENU_KEYS))
    return docs


def help_text(usage, width=100, column=34):
    """A command's --help: its usage, then every key a user can set, as
    key=default and its meaning."""
    rows = []
    for doc in key_docs():
        if doc.fixed:
            continue
        head = f'  {doc.key}={doc.default}'
        indent = ' ' * column
        if len(head) + 2 > column:  # the meaning starts on the next line
            rows.append(head)
            head = indent
        rows.append(textwrap.fill(doc.meaning, width, initial_indent=head.ljust(column),
                                  subsequent_indent=indent))
    return (f'{usage.strip()}\n\nKeys, as key=default and what they mean (set them on the command '
            f'line as key=value, or edit constant.py):\n' + '\n'.join(rows))


def key_table():
    """The key table of docs/configuration.md, as markdown lines."""
    rows = ['| key | default | meaning |', '| --- | --- | --- |']
    for doc in key_docs():
        fixed = ' (fixed: edit constant.py)' if doc.fixed else ''
        default = doc.default.replace('|', '\\|')
        rows.append(f"| `{doc.key}` | `{default}` | {doc.meaning.replace('|', '/')}{fixed} |")
    return '\n'.join(rows)


def with_key_table(text):
    """A markdown text with its key table made anew."""
    pattern = re.compile(re.escape(TABLE_START) + r'\n.*?\n' + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f'{KEY_TABLE_FILE} has no key table between {TABLE_START} and {TABLE_END}')
    return pattern.sub(lambda _: f'{TABLE_START}\n{key_table()}\n{TABLE_END}', text)


def main():
    with open(KEY_TABLE_FILE, encoding='utf-8') as f:
        text = f.read()
    safe_io.write_text(KEY_TABLE_FILE, with_key_table(text))
    print(f'{KEY_TABLE_FILE}: key table made from {CONSTANT_FILE}')


if __name__ == '__main__':
    sys.exit(main())
