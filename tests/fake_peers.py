"""Listeners on loopback that hold a worker's address without being
TensorFlow: each accepts connections in a thread and answers them with
`answer` (None: nothing, ever; b'': closes them at once)."""
import contextlib
import socket
import threading

# The first 9 bytes a gRPC server sends: the header of an (empty) HTTP/2 SETTINGS frame.
SETTINGS_FRAME = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


@contextlib.contextmanager
def fake_peer(answer=None):
    """Yields the "127.0.0.1:port" of a listener answering `answer`."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    held = []

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed at the end of the block
                return
            if answer is None:
                held.append(connection)  # open, silent
                continue
            with contextlib.suppress(OSError), connection:
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f'127.0.0.1:{listener.getsockname()[1]}'
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        for connection in held:
            connection.close()
        thread.join(timeout=5)
