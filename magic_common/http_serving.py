"""Starting and stopping our small HTTP servers (the inbox, the fleet page) the same way.

Both run as `make run` processes next to each other, so a busy port must say which setting
moves it, and `honcho`'s SIGTERM must stop a server cleanly (socket closed, "stopped" logged)
rather than kill it mid-answer.

>>> import errno
>>> listen_failure(OSError(errno.EADDRINUSE, "in use"), "127.0.0.1", 5006, "INBOX_PORT")
'port 5006 on 127.0.0.1 is already in use: stop what is using it, or choose another port with INBOX_PORT (or --port)'
>>> listen_failure(OSError(errno.EACCES, "denied"), "127.0.0.1", 80, "INBOX_PORT")
'cannot listen on 127.0.0.1:80: [Errno 13] denied'
"""

from __future__ import annotations

import errno
import signal
import socketserver
import threading
from collections.abc import Callable


def listen_failure(error: OSError, host: str, port: int, setting: str) -> str:
    """What to tell the user when binding `host:port` failed; `setting` names the port's
    environment variable (the command line's `--port` overrides it)."""
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use: stop what is using it, or choose "
            f"another port with {setting} (or --port)"
        )
    return f"cannot listen on {host}:{port}: {error}"


def serve_until_stopped(
    server: socketserver.BaseServer, ready: Callable[[], None] = lambda: None
) -> None:
    """Serve until SIGTERM or Ctrl-C, then close the socket.

    The SIGTERM handler is installed before `ready()` runs (it announces the server), so a
    supervisor that stops the server as soon as it reads that line gets a clean stop. Call
    from the main thread (signal handlers can only be set there).
    """

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever to return, so it cannot run on the serving thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    ready()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
