"""``gaeservices smtpd``: a development SMTP server that prints what it receives.

What ``python -m smtpd -n -c DebuggingServer`` did before Python 3.12 removed
``smtpd``, on aiosmtpd (``pip install 'gaeservices[mail]'``)::

    gaeservices smtpd [--host 127.0.0.1] [--port 1025] [--save DIR]

Each message is printed readably: the envelope, the headers decoded, the text
part, the HTML part's size and each attachment's name, type and size.
``--save DIR`` also writes each one to ``DIR`` as a ``.eml`` file. Point an
application at it with ``GAESERVICES_MAIL=smtp://127.0.0.1:1025``.

:class:`SMTPServerThread` runs an aiosmtpd server on an event loop of its own,
in a thread, on a free port when given port 0. Tests (this project's, or
yours) use it to deliver to a real SMTP server: ``stop()`` and ``start()``
take it down and bring it back on the same port, closing the connections it
had, as a restarted server would.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from typing import Any, TextIO

from .message import Envelope

__all__ = ["SMTPServerThread", "PrintingHandler", "main"]


class SMTPServerThread:
    """An aiosmtpd server in a thread of its own; ``port=0`` picks a free port.

    ``handler`` is an aiosmtpd handler (an object with ``handle_DATA`` and the
    like). ``ssl_context`` makes it TLS from the first byte (smtps);
    ``tls_context`` offers STARTTLS. Other keyword arguments go to
    :class:`aiosmtpd.smtp.SMTP` (``authenticator``, ``auth_required``,
    ``auth_require_tls``, ``require_starttls`` ...).
    """

    def __init__(
        self,
        handler: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: Any = None,
        hostname: str = "localhost",
        sock: Any = None,
        **smtp_options: Any,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.hostname = hostname
        self.smtp_options = smtp_options
        self._sock = sock  # a socket already listening (the CLI binds before it starts anything)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._sessions: set[Any] = set()

    @property
    def running(self) -> bool:
        return self._server is not None

    def _factory(self) -> Any:
        from aiosmtpd.smtp import SMTP

        protocol = SMTP(self.handler, hostname=self.hostname, loop=self._loop, **self.smtp_options)
        self._sessions.add(protocol)
        return protocol

    def start(self) -> SMTPServerThread:
        """Listen (again, on the same port once it has one); returns self."""
        if self._server is not None:
            return self
        import aiosmtpd.smtp  # noqa: F401  (fail here, clearly, when it is missing)

        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        servers: list[Any] = []

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                try:
                    if self._sock is not None:
                        server = await loop.create_server(self._factory, sock=self._sock, ssl=self.ssl_context)
                    else:
                        server = await loop.create_server(
                            self._factory, self.host, self.port, ssl=self.ssl_context, reuse_address=True
                        )
                    servers.append(server)
                except BaseException as exc:
                    failure.append(exc)
                finally:
                    ready.set()

            loop.run_until_complete(serve())
            if not failure:
                loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="gaeservices-smtpd", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._loop = self._thread = None
            raise failure[0]
        self._server, self._sock = servers[0], None
        self.port = servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening and close every connection, as a server going down would."""
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None:
            return

        async def shut() -> None:
            server.close()
            for protocol in list(self._sessions):
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.close()
            self._sessions.clear()
            await server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shut(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            self._loop = self._thread = self._server = None

    @property
    def url(self) -> str:
        """``smtp://host:port`` (``smtps://`` with an ``ssl_context``)."""
        scheme = "smtps" if self.ssl_context is not None else "smtp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def __enter__(self) -> SMTPServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class PrintingHandler:
    """Prints each message readably to ``out``; with ``save``, also keeps it as a .eml file."""

    def __init__(self, out: TextIO | None = None, save: str | None = None) -> None:
        self.out = out
        self.save = save
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from .file import write_eml
        from .readable import readable

        self.count += 1
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        sent = Envelope(envelope.mail_from or "", envelope.rcpt_tos)
        title = f"message {self.count} from {session.peer[0] if session.peer else '?'}"
        if self.save:
            title += f", saved as {write_eml(self.save, raw, sent)}"
        out = self.out or sys.stdout
        out.write(readable(raw, sent, title=title))
        out.flush()
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> int:
    from ..cli import CommandError, listen

    parser = argparse.ArgumentParser(
        prog="gaeservices smtpd",
        description="A development SMTP server that prints each message it receives.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1025, help="port to listen on (default 1025; 0: any free one)")
    parser.add_argument("--save", metavar="DIR", help="also keep each message as a .eml file in DIR")
    options = parser.parse_args(argv)
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise CommandError("needs aiosmtpd: pip install 'gaeservices[mail]'", 2) from None
    sock = listen(options.host, options.port)  # a taken port is all that happens
    host, port = sock.getsockname()[:2]
    server = SMTPServerThread(PrintingHandler(save=options.save), host, port, sock=sock)
    server.start()
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"gaeservices smtpd listening on {server.url[len('smtp://'):]}"
        + (f", saving to {options.save}" if options.save else "")
        + f"; send with GAESERVICES_MAIL={server.url} (Ctrl-C stops)",
        flush=True,
    )
    while not stopping.wait(0.5):
        pass
    server.stop()
    print("gaeservices smtpd stopped", flush=True)
    return 0
