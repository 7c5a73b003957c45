"""Reading one tile: an 8-bit RGB image file as a (3, H, W) float tensor in [0, 1].

Refuses, with the reason in the message, what a tile classifier cannot take: other modes, more
than 8 bits per channel, sizes outside [MIN_SIDE, MAX_SIDE]. Depends on numpy, Pillow and torch only.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class TileError(ValueError):
    """A tile file that cannot be used: the message says why."""


MIN_SIDE = 32
MAX_SIDE = 4096


GREY_MODES = ("1", "L", "LA", "La", "I", "F")


def read_tile(path: str | Path, notes: list[str] | None = None) -> torch.Tensor:
    """Read an 8-bit RGB image as a (3, H, W) float tensor in [0, 1], refusing what does not fit.

    An RGBA (or palette) image whose every pixel is opaque is read as RGB, and a note saying so is
    appended to ``notes``; one with a transparent or translucent pixel is refused, as is greyscale
    (H&E is colour).
    """
    path = Path(path)
    if path.is_dir():
        raise TileError(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise TileError(f"{path}: no such file")
    Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
    try:
        with Image.open(path) as im:
            im.load()
            mode, size, fmt = im.mode, im.size, im.format
            bits = _bit_depth(im, path)
            if mode == "P":  # a palette: its colours (and transparency) decide
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            data = np.array(im)
    except Image.DecompressionBombError:
        raise TileError(f"{path}: image is too large (more than {MAX_SIDE}x{MAX_SIDE} pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise TileError(f"{path}: cannot read the image ({exc})") from None
    if bits is not None and bits > 8:
        raise TileError(f"{path}: {bits}-bit images are not supported; convert to 8-bit RGB")
    if mode in GREY_MODES:
        raise TileError(f"{path}: image mode is {mode} ({fmt}, greyscale); H&E tiles are colour: an 8-bit RGB tile is needed")
    if mode == "RGBA":
        seen = int((data[..., 3] < 255).sum())
        if seen:
            raise TileError(f"{path}: image mode is RGBA with {seen} transparent or translucent pixel(s); an opaque RGB tile "
                            "is needed (flatten it onto its background first if that is what you mean)")
        data = np.ascontiguousarray(data[..., :3])
        if notes is not None:
            notes.append(f"{path.name}: RGBA with a fully opaque alpha channel, read as RGB")
        mode = "RGB"
    if mode != "RGB":
        raise TileError(f"{path}: image mode is {mode} ({fmt}); an 8-bit RGB tile is needed")
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise TileError(f"{path}: image is {w}x{h}; tiles must be at least {MIN_SIDE} pixels a side")
    if max(w, h) > MAX_SIDE:
        raise TileError(f"{path}: image is {w}x{h}; tiles must be at most {MAX_SIDE} pixels a side")
    return torch.from_numpy(data).permute(2, 0, 1).float().div_(255.0)


def _bit_depth(im: Image.Image, path: Path) -> int | None:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return 16
    if im.format == "PNG":
        # Pillow silently reads 16-bit-per-channel RGB PNGs as 8-bit RGB: read the IHDR's bit depth
        with path.open("rb") as fh:
            head = fh.read(25)
        if len(head) == 25 and head[12:16] == b"IHDR":
            return head[24]
    if im.format == "TIFF":
        bps = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
        if bps:
            return max(bps) if isinstance(bps, tuple) else int(bps)
    return None




def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid a PNG can hold (the result is what a saved tile really contains)."""
    return (x * 255).round().clamp(0, 255) / 255


def to_image(x: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [0, 1] as an 8-bit RGB image."""
    arr = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def png_bytes(x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    to_image(x).save(buf, format="PNG")
    return buf.getvalue()


def from_png_bytes(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def save_png(x: torch.Tensor, path: Path) -> None:
    to_image(x).save(path, format="PNG")
