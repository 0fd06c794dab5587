"""The reason a TensorFlow (or Python) error gives, in one line."""


def error_reason(error):
    """The line of a TensorFlow or Python error that says what went wrong:
    its last line that is not indented, since TensorFlow wraps the reason of
    an error in a graph in lines of where it happened ('Graph execution
    error:', 'Node: ...', '\t [[{{node ...}}]]')."""
    lines = str(getattr(error, 'message', error)).strip().split('\n')
    said = [line for line in lines if line.strip() and not line[0].isspace()]
    return (said or lines)[-1].strip()
