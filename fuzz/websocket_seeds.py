#!/usr/bin/python3
"""Writes the seeds of kws_websocket_fuzz to fuzz/corpus/websocket/: masked client frames, then the parameter
bytes that websocket_fuzz.cpp takes from the end of its input (chunk sizes, eight operation bytes, flags)."""
import os
import struct

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])
KAFKA = bytes.fromhex("00000004deadbeef")  # size 4, body de ad be ef

# Operation bits, as in websocket_fuzz.cpp.
TRY_READ, TRY_WRITE, CORK, CLOSE_ON_ERROR, CLOSE_AFTER_ECHO = 0x01, 0x02, 0x04, 0x08, 0x70


def frame(op, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | op])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + KEY + bytes(b ^ KEY[i % 4] for i, b in enumerate(payload))


def seed(stream, ops, chunks=(), max_frame=0, small_buffers=False):
    """max_frame: 0 or 1 for 4096, 2 for 64 KiB, 3 for 100. Chunk sizes 1..4096."""
    assert len(ops) == 8 and len(chunks) <= 7
    flags = max_frame | (4 if small_buffers else 0) | (len(chunks) << 3)
    tail = bytearray([flags]) + bytes(ops)  # consumed from the end: flags first, then the ops
    for c in chunks:  # each taken as two bytes from the end, the first one taken being the high byte
        v = c - 1
        tail += bytes([v >> 8, v & 0xFF])
    return stream + bytes(reversed(tail))


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "websocket")
    os.makedirs(out, exist_ok=True)
    close_1000 = frame(0x8, struct.pack(">H", 1000))
    seeds = {
        "binary_kafka_frame": seed(frame(0x2, KAFKA) + close_1000, [0] * 8),
        # A ping between two fragments, cut into 1- and 7-byte chunks; try_ calls and corking.
        "fragmented_with_ping": seed(
            frame(0x2, KAFKA[:3], fin=False) + frame(0x9, b"hi") + frame(0x0, KAFKA[3:]) + close_1000,
            [TRY_READ | TRY_WRITE | CORK, TRY_READ, 0, TRY_WRITE, CORK, 0, 0, 0],
            chunks=(1, 7),
        ),
        "close_1000": seed(close_1000, [CLOSE_ON_ERROR] * 8),
        # Three frames in one write, all taken without waiting; the kws side closes after the second.
        "pipelined_then_close": seed(
            frame(0x2, KAFKA) * 3,
            [TRY_READ | TRY_WRITE | CORK, TRY_READ | TRY_WRITE | CLOSE_AFTER_ECHO] + [0] * 6,
        ),
        # 5000 bytes announced with a 4096 limit: refused at its header with close 1009.
        "too_big": seed(frame(0x2, struct.pack(">i", 4996) + bytes(4996)) + close_1000, [CLOSE_ON_ERROR] * 8),
        # A 20000-byte frame under the 64 KiB limit, through small socket buffers.
        "large_frame": seed(
            frame(0x2, struct.pack(">i", 19996) + bytes(19996)) + close_1000,
            [TRY_WRITE] * 8,
            chunks=(4096, 100),
            max_frame=2,
            small_buffers=True,
        ),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
