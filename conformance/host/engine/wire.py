"""gRPC's unary calls over HTTP/2 on a unix socket, and protobuf's wire format: the standard library only.

The harness talks to its private containerd through containerd's own API
(``ctr`` has no verb that creates a task without starting it, and every
``ctr`` process costs a Go start-up).  The agent ships to other hosts with
the standard library alone, so the little of gRPC a client needs is written
here: one HTTP/2 connection per call (RFC 9113: preface, SETTINGS, one
HEADERS and DATA out; HEADERS, DATA and trailers back, flow control
answered), header blocks decoded with HPACK (RFC 7541, its Huffman code
included: Go's encoder uses it for most strings), and protobuf messages
built and read field by field (``Message``, ``fields``).

A call that the server answers with a gRPC status other than OK raises
``RpcError`` carrying the code and the server's message (containerd's
words: "container "x" in namespace "y": not found").
"""
from __future__ import annotations

import socket
import struct
from typing import Dict, List, Tuple, Union

# -- protobuf wire format -------------------------------------------------------------------
Field = Union[int, bytes]


def varint(value: int) -> bytes:
    """A base-128 varint (negative numbers as their 64-bit two's complement, as protobuf does)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class Message:
    """A protobuf message being built: fields appended in the order given, zero values left out."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def number(self, number: int, value: int | bool) -> Message:
        if value:
            self.buf += varint(number << 3) + varint(int(value))
        return self

    def data(self, number: int, value: bytes | str | Message) -> Message:
        data = value.buf if isinstance(value, Message) else value.encode() if isinstance(value, str) else value
        if data or isinstance(value, Message):  # an empty sub-message is still set
            self.buf += varint(number << 3 | 2) + varint(len(data)) + data
        return self

    def strings(self, number: int, values: List[str] | List[bytes]) -> Message:
        for value in values:
            self.buf += varint(number << 3 | 2) + varint(len(value)) + (value.encode() if isinstance(value, str)
                                                                       else value)
        return self

    def entries(self, number: int, entries: Dict[str, str]) -> Message:
        for key, value in entries.items():
            self.data(number, Message().data(1, key).data(2, value))
        return self

    def done(self) -> bytes:
        return bytes(self.buf)


def any_message(type_url: str, value: bytes) -> Message:
    """google.protobuf.Any: the type's name and the encoded value."""
    return Message().data(1, type_url).data(2, value)


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("a protobuf varint runs past the end of its message")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def fields(data: bytes) -> Dict[int, List[Field]]:
    """A message's fields: number -> values in order (varints as int, length-delimited as bytes)."""
    out: Dict[int, List[Field]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, kind = key >> 3, key & 7
        value: Field
        if kind == 0:
            value, pos = _read_varint(data, pos)
        elif kind == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif kind in (1, 5):
            width = 8 if kind == 1 else 4
            value, pos = int.from_bytes(data[pos:pos + width], "little"), pos + width
        else:
            raise WireError(f"protobuf wire type {kind} (field {number}) is not read here")
        out.setdefault(number, []).append(value)
    return out


def first_int(found: Dict[int, List[Field]], number: int) -> int:
    value = found.get(number, [0])[0]
    return value if isinstance(value, int) else 0


def first_bytes(found: Dict[int, List[Field]], number: int) -> bytes:
    value = found.get(number, [b""])[0]
    return value if isinstance(value, bytes) else b""


def first_str(found: Dict[int, List[Field]], number: int) -> str:
    return first_bytes(found, number).decode(errors="replace")


# -- HPACK (RFC 7541): what a client needs to read the server's header blocks --------------------
#: the static table (Appendix A), index 1 first
STATIC_TABLE: List[Tuple[str, str]] = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
]

#: the Huffman code's length in bits for each symbol 0..256 (Appendix B; 256 is EOS).  The code is
#: canonical: ordered by (length, symbol), each code is the previous one plus one, shifted left
#: by the growth in length, so these lengths determine every code.
_HUFFMAN_LENGTHS = bytes([
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28,
    28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6,
    6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7,
    8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7,
    15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24,
    23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23,
    23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26,
    26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20,
    21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27,
    27, 27, 26, 30,
])


def _huffman_codes() -> Dict[Tuple[int, int], int]:
    """(bit length, code) -> symbol, built from the canonical lengths."""
    order = sorted(range(257), key=lambda s: (_HUFFMAN_LENGTHS[s], s))
    table: Dict[Tuple[int, int], int] = {}
    code, previous = 0, _HUFFMAN_LENGTHS[order[0]]
    for i, symbol in enumerate(order):
        length = _HUFFMAN_LENGTHS[symbol]
        if i:
            code = (code + 1) << (length - previous)
            previous = length
        table[(length, code)] = symbol
    return table


_HUFFMAN = _huffman_codes()


def huffman_decode(data: bytes) -> bytes:
    """A Huffman-coded HPACK string; the padding (at most 7 one-bits) is dropped."""
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code, length = (code << 1) | ((byte >> shift) & 1), length + 1
            symbol = _HUFFMAN.get((length, code))
            if symbol is not None:
                if symbol == 256:
                    raise WireError("HPACK: EOS inside a Huffman string")
                out.append(symbol)
                code = length = 0
            elif length > 30:
                raise WireError("HPACK: not a Huffman code")
    if length > 7 or code != (1 << length) - 1:
        raise WireError("HPACK: bad Huffman padding")
    return bytes(out)


class HeaderDecoder:
    """One connection's HPACK decoding context (its dynamic table)."""

    def __init__(self, max_size: int = 4096) -> None:
        self.dynamic: List[Tuple[str, str]] = []  # newest first
        self.max_size = max_size

    def _size(self) -> int:
        return sum(len(n) + len(v) + 32 for n, v in self.dynamic)

    def _add(self, name: str, value: str) -> None:
        self.dynamic.insert(0, (name, value))
        while self.dynamic and self._size() > self.max_size:
            self.dynamic.pop()

    def _entry(self, index: int) -> Tuple[str, str]:
        if 1 <= index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        if 0 <= index - len(STATIC_TABLE) - 1 < len(self.dynamic):
            return self.dynamic[index - len(STATIC_TABLE) - 1]
        raise WireError(f"HPACK: header table index {index} does not exist")

    @staticmethod
    def _int(data: bytes, pos: int, prefix: int) -> Tuple[int, int]:
        mask = (1 << prefix) - 1
        value = data[pos] & mask
        pos += 1
        if value < mask:
            return value, pos
        shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, pos

    def _str(self, data: bytes, pos: int) -> Tuple[str, int]:
        huffman = bool(data[pos] & 0x80)
        size, pos = self._int(data, pos, 7)
        raw = data[pos:pos + size]
        return (huffman_decode(raw) if huffman else raw).decode(errors="replace"), pos + size

    def decode(self, block: bytes) -> List[Tuple[str, str]]:
        headers: List[Tuple[str, str]] = []
        pos = 0
        while pos < len(block):
            byte = block[pos]
            if byte & 0x80:  # indexed field
                index, pos = self._int(block, pos, 7)
                headers.append(self._entry(index))
                continue
            if byte & 0xE0 == 0x20:  # dynamic table size update
                self.max_size, pos = self._int(block, pos, 5)
                while self.dynamic and self._size() > self.max_size:
                    self.dynamic.pop()
                continue
            indexing = bool(byte & 0x40)
            index, pos = self._int(block, pos, 6 if indexing else 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, pos = self._str(block, pos)
            value, pos = self._str(block, pos)
            if indexing:
                self._add(name, value)
            headers.append((name, value))
        return headers


def _hpack_literal(name: str, value: str) -> bytes:
    """A literal field without indexing and a new name, strings not Huffman-coded (always valid)."""
    def string(text: str) -> bytes:
        data = text.encode()
        return _hpack_int(len(data), 7, 0) + data
    return b"\x00" + string(name) + string(value)


def _hpack_int(value: int, prefix: int, flags: int) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([flags | value])
    out = bytearray([flags | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# -- HTTP/2 framing and one unary gRPC call ---------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
MAX_FRAME = 16384
#: what the client lets the server send before a WINDOW_UPDATE (set in SETTINGS, answered as it reads)
WINDOW = 1 << 24

#: gRPC status codes this client names (https://grpc.github.io/grpc/core/md_doc_statuscodes.html)
NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, DEADLINE_EXCEEDED, UNAVAILABLE = 5, 6, 9, 4, 14


class WireError(OSError):
    """The connection or a frame was not what HTTP/2, HPACK or protobuf says it must be."""


class RpcError(Exception):
    """The server answered a call with a gRPC status other than OK."""

    def __init__(self, method: str, code: int, message: str) -> None:
        self.method, self.code, self.message = method, code, message
        super().__init__(f"{method.rpartition('/')[2]}: {message or 'status ' + str(code)} (gRPC code {code})")


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class _Connection:
    """One HTTP/2 connection on a unix socket, carrying one call on stream 1."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buffer = b""
        self.send_window = 65535  # the server's, until its SETTINGS and WINDOW_UPDATEs say more
        self.stream_window = 65535
        self.decoder = HeaderDecoder()
        self.received = 0

    def close(self) -> None:
        self.sock.close()

    def _recv_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WireError("containerd closed the connection in the middle of a call")
            self.buffer += chunk
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def read_frame(self) -> Tuple[int, int, int, bytes]:
        head = self._recv_exact(9)
        size = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF
        return kind, flags, stream, self._recv_exact(size)

    def handle_control(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        """SETTINGS, PING, WINDOW_UPDATE, GOAWAY: the frames that are about the connection."""
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                ident, value = struct.unpack(">HI", payload[i:i + 6])
                if ident == 4:  # SETTINGS_INITIAL_WINDOW_SIZE: this stream's window
                    self.stream_window += value - 65535
            self.sock.sendall(_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self.sock.sendall(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            grown = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream == 0:
                self.send_window += grown
            else:
                self.stream_window += grown
        elif kind == GOAWAY and stream == 0:
            code = int.from_bytes(payload[4:8], "big")
            if code:
                raise WireError(f"containerd sent GOAWAY (code {code}): {payload[8:].decode(errors='replace')}")

    def send_data(self, body: bytes) -> None:
        """The request's DATA frames, within the server's flow-control windows."""
        pos = 0
        while True:
            room = min(MAX_FRAME, self.send_window, self.stream_window, len(body) - pos)
            if room <= 0 and pos < len(body):
                self.handle_control(*self.read_frame())  # wait for a WINDOW_UPDATE
                continue
            chunk = body[pos:pos + room]
            pos += len(chunk)
            self.send_window -= len(chunk)
            self.stream_window -= len(chunk)
            self.sock.sendall(_frame(DATA, END_STREAM if pos >= len(body) else 0, 1, chunk))
            if pos >= len(body):
                return

    def credit(self, size: int) -> None:
        """Give back what a DATA frame used, so a long answer is never stalled."""
        self.received += size
        if self.received > WINDOW // 2:
            grant = struct.pack(">I", self.received)
            self.sock.sendall(_frame(WINDOW_UPDATE, 0, 0, grant) + _frame(WINDOW_UPDATE, 0, 1, grant))
            self.received = 0


def call(path: str, method: str, request: bytes, metadata: Dict[str, str], timeout: float | None) -> bytes:
    """One unary gRPC call on the unix socket ``path``: the response message, or RpcError.

    ``timeout`` bounds every wait on the socket (None: a call that may block
    as long as the server does, e.g. a task's Wait); socket.timeout past it.
    """
    conn = _Connection(path, timeout)
    try:
        settings = struct.pack(">HI", 4, WINDOW) + struct.pack(">HI", 2, 0)  # window; no server push
        headers = (b"\x83\x86"  # :method POST, :scheme http (static table)
                   + b"\x04" + _hpack_int(len(method.encode()), 7, 0) + method.encode()  # :path, indexed name
                   + _hpack_literal(":authority", "localhost")
                   + b"\x0f\x10" + _hpack_int(16, 7, 0) + b"application/grpc"  # content-type (index 31)
                   + _hpack_literal("te", "trailers")
                   + b"".join(_hpack_literal(k, v) for k, v in metadata.items()))
        conn.sock.sendall(PREFACE + _frame(SETTINGS, 0, 0, settings)
                          + _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", WINDOW - 65535))
                          + _frame(HEADERS, END_HEADERS, 1, headers))
        conn.send_data(b"\x00" + struct.pack(">I", len(request)) + request)
        return _response(conn, method)
    finally:
        conn.close()


def _response(conn: _Connection, method: str) -> bytes:
    """Read frames until the stream ends: the message, then the status in the trailers."""
    body = b""
    headers: List[Tuple[str, str]] = []
    block = b""
    ended = False
    while not ended or block:
        kind, flags, stream, payload = conn.read_frame()
        if stream == 0 or kind not in (DATA, HEADERS, CONTINUATION, RST_STREAM):
            conn.handle_control(kind, flags, stream, payload)
            continue
        if kind == RST_STREAM:
            raise WireError(f"{method}: containerd reset the stream (code {int.from_bytes(payload[:4], 'big')})")
        if flags & PADDED and kind in (DATA, HEADERS):
            payload = payload[1:len(payload) - payload[0]]
        if kind == DATA:
            body += payload
            conn.credit(len(payload))
        else:
            if kind == HEADERS and flags & PRIORITY:
                payload = payload[5:]
            block += payload
            if flags & END_HEADERS:
                headers += conn.decoder.decode(block)
                block = b""
        ended = ended or bool(flags & END_STREAM and kind in (DATA, HEADERS))
    found = dict(headers)
    status = int(found.get("grpc-status", "2") or 2)
    if status:
        raise RpcError(method, status, _percent_decode(found.get("grpc-message", "")))
    if len(body) < 5:
        raise WireError(f"{method}: no response message")
    size = int.from_bytes(body[1:5], "big")
    return body[5:5 + size]


def _percent_decode(text: str) -> str:
    """grpc-message is percent-encoded (the gRPC-over-HTTP/2 protocol)."""
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        if raw[i] == 0x25 and i + 2 < len(raw) and all(c in b"0123456789abcdefABCDEF" for c in raw[i + 1:i + 3]):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="replace")
