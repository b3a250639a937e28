"""The writer of a container's log: the size cap holds at every moment.

``python -S -I logshim.py LOG MAX_BYTES BACKUPS`` reads the container's stdout/stderr from
its standard input (a pipe the runtime hands to ``runc create``, see :mod:`.logwriter`) and
appends it to ``LOG``. Before a write would take ``LOG`` past ``MAX_BYTES`` it writes what of
it fits up to its last line end, moves ``LOG`` to ``LOG.1`` (older backups shift up to
``LOG.<BACKUPS>``) and goes on in a new ``LOG``; a line longer than the cap is split. So no
burst ever makes the files larger than ``(BACKUPS + 1) * MAX_BYTES``, and nothing is lost
between checks. It runs in its own session, outlives daemon restarts, blocks the
container's writes when it falls behind (the pipe fills), and ends when every writer has
closed the pipe (the container is gone).

One runs per container, so it imports nothing but ``os`` and ``sys`` and runs without
``site`` (about 3 MiB of private memory each); the backup naming is
:mod:`.logrotate`'s (``LOG.<n>``).
"""

from __future__ import annotations

import os
import sys

CHUNK = 65536


class CappedLog:
    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        while data:
            room = self.max_bytes - self.size
            if self.max_bytes <= 0 or len(data) <= room:
                self._append(data)
                return
            cut = data.rfind(b"\n", 0, max(room, 0)) + 1 if room > 0 else 0
            if cut == 0 and self.size == 0:
                cut = room  # one line longer than the whole file: split it
            if cut:
                self._append(data[:cut])
                data = data[cut:]
            self.rotate()

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
            self.size += written

    def rotate(self) -> None:
        os.close(self.fd)
        if self.backups > 0:
            for index in range(self.backups - 1, 0, -1):
                if os.path.exists(f"{self.path}.{index}"):  # this process is the only writer
                    os.replace(f"{self.path}.{index}", f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.truncate(self.path, 0)
        self.fd = self._open()
        self.size = 0


def run(source: int, log: CappedLog) -> None:
    while True:
        data = os.read(source, CHUNK)
        if not data:
            return
        log.write(data)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        sys.stderr.write("usage: logshim LOG MAX_BYTES BACKUPS\n")
        return 2
    log = CappedLog(argv[1], int(argv[2]), int(argv[3]))
    if log.max_bytes > 0 and log.size > log.max_bytes:  # left by an older writer
        log.rotate()
    run(0, log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
