"""Recipe for files/linux_tweet_app/linux.png: a 64x64 penguin badge, drawn pixel
by pixel and written as a PNG with zlib and struct (nothing downloaded).

    python labs/courses/content/custom-app/make_linux_png.py
"""
import struct
import zlib
from pathlib import Path


def pixel(x: int, y: int) -> tuple:
    dx, dy = x - 31.5, y - 31.5
    if dx * dx + dy * dy >= 28 * 28:
        return (36, 150, 237)  # Docker blue
    if dy > 20 and abs(dx) < 16:
        return (245, 180, 30)  # feet
    if (dx * dx) / (14 * 14) + ((dy - 6) ** 2) / (18 * 18) < 1:
        return (250, 250, 250)  # belly
    return (30, 30, 40)  # body


def png(width: int = 64, height: int = 64) -> bytes:
    raw = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width))
                   for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


if __name__ == "__main__":
    target = Path(__file__).with_name("files") / "linux_tweet_app" / "linux.png"
    target.write_bytes(png())
    print(f"wrote {target} ({target.stat().st_size} bytes)")
