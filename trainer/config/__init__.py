"""The config: every key's check (settings), what each key means
(key_docs, read from constant.py) and what every command shares (command)."""
