from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from conftest import SHARED_DATA, he_like
from mastctl import imaging
from mastctl.errors import InputError


def test_png_rgb_with_physical_scale(tmp_path):
    px = he_like()
    path = tmp_path / "tile.png"
    PILImage.fromarray(px).save(path, dpi=(25400 / 0.5, 25400 / 0.5))  # 0.5 um/px
    img = imaging.load(path)
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == (64, 80, 3)
    assert np.array_equal(img.pixels, px)
    assert img.mpp == pytest.approx(0.5, rel=1e-3) and img.mpp_source == "png"
    assert (img.width, img.height) == (80, 64)
    assert img.info.area_mm2 == pytest.approx(80 * 64 * 0.25e-6, rel=1e-3)


def test_editor_dpi_is_not_a_microscope_scale(tmp_path):
    path = tmp_path / "screenshot.png"
    PILImage.fromarray(he_like()).save(path, dpi=(72, 72))
    assert imaging.load(path).mpp is None


def test_mpp_option_overrides_the_file(tmp_path):
    path = tmp_path / "tile.png"
    PILImage.fromarray(he_like()).save(path, dpi=(50800, 50800))
    img = imaging.load(path, mpp=0.25)
    assert img.mpp == 0.25 and img.mpp_source == "option"
    with pytest.raises(InputError, match="not a plausible microscope scale"):
        imaging.load(path, mpp=-1)


def test_png_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 0, 0)
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half transparent
    path = tmp_path / "alpha.png"
    PILImage.fromarray(rgba, "RGBA").save(path)
    px = imaging.load(path).pixels
    assert tuple(px[0, 0]) == (200, 0, 0)
    assert tuple(px[9, 9]) == (255, 255, 255)


def test_png_grayscale_and_16_bit(tmp_path):
    gray = (np.arange(100, dtype=np.uint8).reshape(10, 10) * 2).astype(np.uint8)
    PILImage.fromarray(gray, "L").save(tmp_path / "g8.png")
    px = imaging.load(tmp_path / "g8.png").pixels
    assert px.shape == (10, 10, 3) and np.array_equal(px[..., 0], gray) and np.array_equal(px[..., 2], gray)

    g16 = np.full((8, 8), 65535, dtype=np.uint16)
    g16[0, 0] = 0
    g16[1, 1] = 32896  # 128 * 257
    PILImage.fromarray(g16).save(tmp_path / "g16.png")
    px = imaging.load(tmp_path / "g16.png").pixels
    assert px.dtype == np.uint8 and tuple(px[0, 0]) == (0, 0, 0) and px[1, 1, 0] == 128 and px[5, 5, 1] == 255


def test_png_palette_with_and_without_transparency(tmp_path):
    pal = PILImage.new("P", (6, 6))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.save(tmp_path / "p.png")
    px = imaging.load(tmp_path / "p.png").pixels
    assert tuple(px[0, 0]) == (0, 0, 255) and tuple(px[3, 3]) == (255, 0, 0)

    pal.save(tmp_path / "pt.png", transparency=0)  # index 0 transparent
    px = imaging.load(tmp_path / "pt.png").pixels
    assert tuple(px[3, 3]) == (255, 255, 255) and tuple(px[0, 0]) == (0, 0, 255)


def test_jpeg_rgb_gray_and_cmyk(tmp_path):
    px = he_like()
    PILImage.fromarray(px).save(tmp_path / "a.jpg", quality=95)
    img = imaging.load(tmp_path / "a.jpg")
    assert img.pixels.shape == px.shape and np.abs(img.pixels.astype(int) - px).mean() < 6
    PILImage.fromarray(px[..., 0]).save(tmp_path / "g.jpeg")
    assert imaging.load(tmp_path / "g.jpeg").pixels.shape == (64, 80, 3)
    PILImage.fromarray(px).convert("CMYK").save(tmp_path / "c.jpg")
    assert imaging.load(tmp_path / "c.jpg").pixels.shape == (64, 80, 3)


def test_format_is_read_from_content_not_extension(tmp_path):
    path = tmp_path / "really_a_png.tif"
    PILImage.fromarray(he_like()).save(path, format="PNG")
    assert imaging.load(path).pixels.shape == (64, 80, 3)


def test_tiff_8bit_with_resolution_tags(tmp_path):
    px = he_like()
    tifffile.imwrite(tmp_path / "cm.tif", px, photometric="rgb", resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    img = imaging.load(tmp_path / "cm.tif")
    assert np.array_equal(img.pixels, px) and img.mpp == pytest.approx(0.25) and img.mpp_source == "tiff"
    tifffile.imwrite(tmp_path / "inch.tif", px, photometric="rgb", resolution=(25400 / 0.5, 25400 / 0.5), resolutionunit="INCH")
    assert imaging.load(tmp_path / "inch.tif").mpp == pytest.approx(0.5)


def test_tiff_16bit_rgb_and_gray(tmp_path):
    px16 = (he_like().astype(np.uint16) * 257)
    tifffile.imwrite(tmp_path / "rgb16.tif", px16, photometric="rgb", compression="zlib")
    assert np.array_equal(imaging.load(tmp_path / "rgb16.tif").pixels, he_like())
    g16 = np.linspace(0, 65535, 64 * 80).reshape(64, 80).astype(np.uint16)
    tifffile.imwrite(tmp_path / "g16.tif", g16, photometric="minisblack")
    px = imaging.load(tmp_path / "g16.tif").pixels
    assert px.shape == (64, 80, 3) and px[0, 0, 0] == 0 and px[-1, -1, 0] == 255


def test_tiff_rgba_lzw_and_miniswhite(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 1] = 100
    rgba[:4, :, 3] = 255
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"], compression="lzw")
    px = imaging.load(tmp_path / "rgba.tif").pixels
    assert tuple(px[0, 0]) == (0, 100, 0) and tuple(px[7, 7]) == (255, 255, 255)
    g = np.zeros((4, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "white.tif", g, photometric="miniswhite")
    assert tuple(imaging.load(tmp_path / "white.tif").pixels[0, 0]) == (255, 255, 255)


def test_tiff_palette(tmp_path):
    idx = np.zeros((5, 5), dtype=np.uint8)
    idx[2, 2] = 1
    cmap = np.zeros((3, 256), dtype=np.uint16)
    cmap[:, 0] = (65535, 65535, 0)  # yellow
    cmap[:, 1] = (0, 0, 65535)  # blue
    tifffile.imwrite(tmp_path / "pal.tif", idx, photometric="palette", colormap=cmap)
    px = imaging.load(tmp_path / "pal.tif").pixels
    assert tuple(px[0, 0]) == (255, 255, 0) and tuple(px[2, 2]) == (0, 0, 255)


def test_ome_tiff_physical_size_and_units(tmp_path):
    px = he_like()
    tifffile.imwrite(tmp_path / "a.ome.tif", px, photometric="rgb", metadata={"axes": "YXS", "PhysicalSizeX": 0.2271, "PhysicalSizeY": 0.2271})
    img = imaging.load(tmp_path / "a.ome.tif")
    assert img.mpp == pytest.approx(0.2271) and img.mpp_source == "ome" and np.array_equal(img.pixels, px)
    tifffile.imwrite(tmp_path / "nm.ome.tif", px, photometric="rgb",
                     metadata={"axes": "YXS", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm"})
    assert imaging.load(tmp_path / "nm.ome.tif").mpp == pytest.approx(0.5)


def test_ome_tiff_channel_first_and_pyramid(tmp_path):
    chw = np.moveaxis(he_like(), 2, 0).copy()  # C, Y, X planar
    path = tmp_path / "pyr.ome.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(chw, subifds=1, metadata={"axes": "CYX", "PhysicalSizeX": 0.5}, photometric="minisblack")
        tif.write(chw[:, ::2, ::2], subfiletype=1, photometric="minisblack")
    img = imaging.load(path)
    assert img.pixels.shape == (64, 80, 3) and np.array_equal(img.pixels, he_like()) and img.mpp == pytest.approx(0.5)


def test_aperio_description_mpp(tmp_path):
    tifffile.imwrite(tmp_path / "ap.tif", he_like(), photometric="rgb",
                     description="Aperio Image Library v12\n80x64 [0,0 80x64] JPEG/RGB Q=70|AppMag = 20|MPP = 0.4990")
    assert imaging.load(tmp_path / "ap.tif").mpp == pytest.approx(0.499)


@pytest.mark.skipif(not (SHARED_DATA / "openslide_crops").exists(), reason="../shared/data not present")
def test_real_ome_crop_and_svs_scales():
    ome = imaging.load(SHARED_DATA / "openslide_crops" / "images-OS-2-vsi.ome.tif")
    assert ome.mpp == pytest.approx(0.3461, abs=1e-4) and ome.pixels.shape == (1445, 1445, 3)
    svs = imaging.load(SHARED_DATA / "wsi" / "cmu_small_region.svs")
    assert svs.mpp == pytest.approx(0.499) and svs.mpp_source == "aperio" and svs.pixels.shape == (2967, 2220, 3)


def test_decompression_bomb_guard_and_override(tmp_path):
    path = tmp_path / "big.png"
    PILImage.fromarray(he_like(100, 100)).save(path)
    with pytest.raises(InputError, match=r"10,000 pixels exceeds the decompression-bomb limit of 5,000.*--max-pixels"):
        imaging.load(path, max_pixels=5000)
    assert imaging.load(path, max_pixels=0).width == 100
    tifffile.imwrite(tmp_path / "big.tif", he_like(100, 100), photometric="rgb")
    with pytest.raises(InputError, match="decompression-bomb"):
        imaging.load(tmp_path / "big.tif", max_pixels=5000)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_text("x,y\n1,2\n"), "not a supported image format"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), "cannot decode PNG image"),
        (lambda p: p.write_bytes(b"II*\x00" + b"\xff" * 30), "cannot decode TIFF image"),
        (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10), "cannot decode JPEG image"),
    ],
    ids=["missing", "empty", "unsupported", "corrupt-png", "corrupt-tiff", "corrupt-jpeg"],
)
def test_bad_files_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "input.img"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        imaging.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_png_and_directory(tmp_path):
    good = tmp_path / "good.png"
    PILImage.fromarray(he_like(200, 200)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:400])
    with pytest.raises(InputError, match="cannot decode PNG"):
        imaging.load(cut)
    with pytest.raises(InputError, match="is a directory"):
        imaging.load(tmp_path)
