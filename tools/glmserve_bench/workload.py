"""The workload: image + question chat requests, the same for every server
given the same seed.

Each request gets its own image (drawn from (seed, request index), so no
two requests share an image and a server's prefix or encoder cache cannot
serve one request from another's work), a size picked from --image-sizes,
and a question picked from QUESTIONS. Images are JPEG when Pillow can be
imported (it comes with matplotlib), PNG (a small stdlib writer) otherwise,
or files read from --images DIR."""
from __future__ import annotations

import base64
import dataclasses
import pathlib
import struct
import zlib
from typing import Optional

import numpy as np

QUESTIONS = [
    "What is in this image?",
    "Describe this picture in detail.",
    "What colours dominate this image?",
    "Is there any text in the image? If so, what does it say?",
    "Count the shapes you can see.",
    "What is in the top left corner?",
    "Write a short caption for this image.",
    "What would be a good title for this picture?",
]


@dataclasses.dataclass
class Image:
    data: bytes
    mime: str  # "image/png" or "image/jpeg"
    width: int
    height: int

    def data_url(self) -> str:
        return f"data:{self.mime};base64," + base64.b64encode(self.data).decode()


@dataclasses.dataclass
class Request:
    index: int
    question: str
    image: Image
    seed: int  # the sampling seed sent with the request


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"112x112,448x336" -> [(112, 112), (448, 336)] (width x height)."""
    out = []
    for part in text.split(","):
        w, h = part.strip().lower().split("x")
        out.append((int(w), int(h)))
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an [h, w, 3] uint8 array (filter 0, zlib level 6)."""
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + chunk(b"IEND", b""))


def draw(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth synthetic content: two gradients, a few rectangles and
    discs, a little noise. [height, width, 3] uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 90 * np.sin(a * x / 23 + b * y / 31 + 6 * p)
    for _ in range(int(rng.integers(2, 6))):
        colour = rng.integers(0, 256, 3)
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(4, max(5, min(width, height) // 3)))
        if rng.random() < 0.5:
            img[max(0, y0 - r):y0 + r, max(0, x0 - r):x0 + r] = colour
        else:
            img[(x - x0) ** 2 + (y - y0) ** 2 < r * r] = colour
    img += 6 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str) -> Image:
    h, w, _ = rgb.shape
    if fmt == "jpeg":
        import io

        from PIL import Image as PILImage
        buf = io.BytesIO()
        PILImage.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=90)
        return Image(buf.getvalue(), "image/jpeg", w, h)
    return Image(png_bytes(rgb), "image/png", w, h)


def default_format() -> str:
    try:
        import PIL.Image  # noqa: F401
        return "jpeg"
    except ImportError:
        return "png"


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG or baseline/progressive JPEG, (0, 0) if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    i = 2
    while i + 9 < len(data) and data[:2] == b"\xff\xd8":
        if data[i] != 0xFF:
            break
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return 0, 0


def load_dir(folder: pathlib.Path) -> list[Image]:
    images = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        data = p.read_bytes()
        mime = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
        images.append(Image(data, mime, *image_size(data)))
    if not images:
        raise SystemExit(f"glmserve-bench: no .png/.jpg files in {folder}")
    return images


def warmup(seed: int, sizes: list[tuple[int, int]], fmt: str,
           folder: Optional[list[Image]] = None) -> list[Request]:
    """One request per image size (or per file), outside the measured
    workload: a server may pay once per image shape (tables cached by
    grid size), which is not what the measured levels are about."""
    if folder:
        return [Request(-1 - k, QUESTIONS[0], image, seed) for k, image in enumerate(folder)]
    rng = np.random.default_rng([seed, 2**31])
    return [Request(-1 - k, QUESTIONS[0], encode(draw(w, h, rng), fmt), seed)
            for k, (w, h) in enumerate(sizes)]


def build(n: int, first: int, seed: int, sizes: list[tuple[int, int]], fmt: str,
          folder: Optional[list[Image]] = None) -> list[Request]:
    """Requests first .. first+n-1 of the workload of this seed. Request i
    depends only on (seed, i), so a sweep's levels each get fresh requests
    and two runs with the same seed send the same ones."""
    out = []
    for i in range(first, first + n):
        rng = np.random.default_rng([seed, i])
        question = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
        if folder:
            image = folder[int(rng.integers(len(folder)))]
        else:
            w, h = sizes[int(rng.integers(len(sizes)))]
            image = encode(draw(w, h, rng), fmt)
        out.append(Request(i, question, image, seed * 1_000_003 + i))
    return out
