"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage, DICOM PS3.3 A.32.8) written with wsidicom.

A DICOM WSI is a folder of .dcm files, one per pyramid level, tiled in full (TILED_FULL). OpenSlide 4 reads it back
through libdicom (``openslide-bin`` includes it) from any one of its files. Tiles come from a ``read_level(k, x, y,
w, h)`` callback, as for the pyramidal TIFF writer in :mod:`.slides`, and are encoded one at a time: JPEG 2000
lossless (reversible, RGB; DICOM transfer syntax 1.2.840.10008.1.2.4.90) by default, or uncompressed (explicit VR
little endian), so that level 0 reads back bit for bit. Depends on wsidicom (pydicom), the ``dicom`` extra.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .slides import SlideError, pyramid_dims

ReadLevel = Callable[[int, int, int, int, int], np.ndarray]
COMPRESSIONS = ("jpeg2000", "none")


def _wsidicom() -> Any:
    try:
        import wsidicom
    except ImportError:  # pragma: no cover - an optional dependency
        raise SlideError("writing a DICOM WSI needs wsidicom (pip install 'medfool[dicom]' or pip install wsidicom)") from None
    return wsidicom


def write_dicom(folder: str | Path, *, width: int, height: int, mpp: float, read_level: ReadLevel, tile: int = 256,
                description: str = "", compression: str = "jpeg2000", seed: str = "") -> list[tuple[int, int]]:
    """Write a DICOM WSI into ``folder`` (created; it must not exist or be empty): level k is level 0 halved k times, its
    pixels given by ``read_level``; pixel spacing ``mpp`` um at level 0. UIDs of the study, series and pyramid derive
    from ``seed`` (the same seed, the same UIDs); instance UIDs are new on every write. Returns the level sizes."""
    _wsidicom()
    from pydicom.uid import generate_uid
    from wsidicom import WsiDicom
    from wsidicom.codec import Encoder
    from wsidicom.codec.settings import Channels, Jpeg2kSettings, NumpySettings
    from wsidicom.geometry import Size, SizeMm
    from wsidicom.instance import ImageData, WsiInstance
    from wsidicom.instance.dataset import WsiDataset
    from wsidicom.metadata import Equipment, Image, Label, OpticalPath, Patient, Pyramid, Series, Study, WsiMetadata
    from wsidicom.metadata import Slide as SlideMeta
    from wsidicom.metadata.image import ImageType
    from wsidicom.metadata.sample import SlideSample
    from wsidicom.metadata.schema.dicom.wsi import WsiMetadataDicomSchema
    from wsidicom.source import Source

    if compression not in COMPRESSIONS:
        raise SlideError(f"DICOM compression {compression!r}: expected {' or '.join(COMPRESSIONS)}")
    if tile % 16:
        raise SlideError(f"DICOM tile size {tile}: must be a multiple of 16")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise SlideError(f"{folder}: exists and is not an empty folder; a DICOM WSI is written into a folder of its own")
    settings = Jpeg2kSettings(levels=0, channels=Channels.RGB) if compression == "jpeg2000" else NumpySettings(8, Channels.RGB)
    encoder = Encoder.create_for_settings(settings)

    class Level(ImageData):
        """One pyramid level's tiles, read on demand and padded with white at the right and bottom edges."""

        def __init__(self, k: int, w: int, h: int) -> None:
            super().__init__(encoder)
            self.k, self.w, self.h = k, w, h

        transfer_syntax = property(lambda self: self.encoder.transfer_syntax)
        image_size = property(lambda self: Size(self.w, self.h))
        tile_size = property(lambda self: Size(tile, tile))
        pixel_spacing = property(lambda self: SizeMm(mpp * 2**self.k / 1000, mpp * 2**self.k / 1000))
        imaged_size = property(lambda self: None)
        samples_per_pixel = property(lambda self: 3)
        photometric_interpretation = property(lambda self: self.encoder.photometric_interpretation)
        bits = property(lambda self: 8)
        image_coordinate_system = property(lambda self: None)
        thread_safe = property(lambda self: True)
        lossy_compression = property(lambda self: None)
        transcoder = property(lambda self: None)

        def get_decoded_tile(self, tile_point: Any, z: float, path: str, cache: bool = True) -> np.ndarray:
            x, y = tile_point.x * tile, tile_point.y * tile
            tw, th = min(tile, self.w - x), min(tile, self.h - y)
            a = read_level(self.k, x, y, tw, th)
            if (tw, th) == (tile, tile):
                return a
            full = np.full((tile, tile, 3), 255, np.uint8)
            full[:th, :tw] = a
            return full

        def get_encoded_tile(self, tile_point: Any, z: float, path: str) -> bytes:
            return self.encoder.encode(self.get_decoded_tile(tile_point, z, path))

    def uid(part: str) -> Any:
        return generate_uid(entropy_srcs=[seed, part]) if seed else generate_uid()

    spacing = SizeMm(mpp / 1000, mpp / 1000)
    meta = WsiMetadata(
        study=Study(uid=uid("study")), series=Series(uid=uid("series"), description="medfool"),
        patient=Patient(), equipment=Equipment(manufacturer="medfool", software_versions=["medfool"]),
        slide=SlideMeta(identifier="medfool", samples=[SlideSample(identifier="medfool", uid=uid("sample"))]),
        pyramid=Pyramid(image=Image(pixel_spacing=spacing), optical_paths=[OpticalPath()], uid=uid("pyramid"),
                        description=(description[:61] + "...") if len(description) > 64 else description or None,
                        comments=description[:10240] or None),
        label=Label(), frame_of_reference_uid=uid("frame"), dimension_organization_uids=[uid("dimension")])
    base = WsiMetadataDicomSchema().dump(meta, ImageType.VOLUME)
    dims = pyramid_dims(width, height, tile)
    # create_instance_dataset writes into the dataset it is given: each level gets its own copy
    levels = [WsiInstance.create_instance(Level(k, w, h), copy.deepcopy(base), ImageType.VOLUME, k) for k, (w, h) in enumerate(dims)]

    class Levels(Source):
        base_dataset = property(lambda self: WsiDataset(base))
        level_instances = property(lambda self: levels)
        label_instances = overview_instances = thumbnail_instances = annotation_instances = property(lambda self: [])

        def close(self) -> None:
            pass

    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with WsiDicom(Levels()) as wsi:
            wsi.save(folder)
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for f in folder.iterdir():
                f.unlink()
        raise
    return dims



def slide_to_dicom(path: str | Path, folder: str | Path, *, compression: str = "jpeg2000", tile: int = 256) -> list[tuple[int, int]]:
    """Any slide OpenSlide reads written as a DICOM WSI: level 0 its decoded level-0 pixels (transparency on white), each
    lower level level 0 halved (box filter, read from the source's best level). The tests make their DICOM WSI so."""
    from PIL import Image as PILImage

    from .slides import Slide, slide_sha256

    with Slide(path) as slide:
        W, H = slide.dimensions
        mpp = slide.resolve_mpp(None)

        def read_level(k: int, x: int, y: int, w: int, h: int) -> np.ndarray:
            f = 2**k
            if k == 0:
                return slide.read_box(x, y, w, h, w, h, level=0)
            return slide.read_box(x * f, y * f, min(w * f, W - x * f), min(h * f, H - y * f), w, h, resample=PILImage.Resampling.BOX)

        return write_dicom(folder, width=W, height=H, mpp=mpp, read_level=read_level, tile=tile, compression=compression,
                           description=f"medfool: {Path(path).name} as a DICOM WSI", seed=slide_sha256(path))
