"""A stand-in for the HIS's MLLP receiver: records every framed message and answers with a chosen ACK code.

Plain sockets and MLLP framing (<VT> message <FS><CR>), no HL7 library, so it
checks what filmless puts on the wire independently of python-hl7. ``answer``
picks MSA-1 (AA, AE, AR) or ``"close"`` to drop the connection unanswered.
"""

from __future__ import annotations

import socket
import socketserver
import threading

__all__ = ["MllpReceiver"]


class MllpReceiver:
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.answer = "AA"
        self.got_one = threading.Event()
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(10)
                buf = b""
                while True:
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                    while b"\x1c\r" in buf:
                        frame, buf = buf.split(b"\x1c\r", 1)
                        message = frame.lstrip(b"\x0b")
                        receiver.received.append(message)
                        receiver.got_one.set()
                        if receiver.answer == "close":
                            return
                        sock.sendall(b"\x0b" + receiver.ack(message) + b"\x1c\r")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def ack(self, message: bytes) -> bytes:
        msh = message.split(b"\r", 1)[0].split(b"|")
        control = msh[9] if len(msh) > 9 else b""
        err = b"" if self.answer == "AA" else b"\rERR||OBR^1^3|204^unknown order^HL70357|E"
        return (b"MSH|^~\\&|HIS|BV01|FILMLESS|00000|20261207080000||ACK^R01^ACK|A" + control + b"|P|2.5\r"
                b"MSA|" + self.answer.encode() + b"|" + control + err)

    def __enter__(self) -> MllpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
