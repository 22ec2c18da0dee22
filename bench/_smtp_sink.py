"""An SMTP server that only counts: ``python -m bench._smtp_sink EVERY``.

aiosmtpd on a free loopback port, in a process of its own so that it does not
share an interpreter lock with the clients under test. It prints ``port N``
once listening, then a line ``count C`` each time C messages (a multiple of
EVERY) have been received, and exits when its standard input closes.
"""

from __future__ import annotations

import sys
from typing import Any

from gaeservices.mail.devserver import SMTPServerThread


class Counter:
    def __init__(self, every: int) -> None:
        self.every = every
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        if self.count % self.every == 0:
            sys.stdout.write(f"count {self.count}\n")
            sys.stdout.flush()
        return "250 OK"


def main() -> int:
    every = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    server = SMTPServerThread(Counter(every)).start()
    sys.stdout.write(f"port {server.port}\n")
    sys.stdout.flush()
    sys.stdin.read()  # until the benchmark closes it
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
