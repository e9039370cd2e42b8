"""Hostile image files: each one is refused with a one-line ImageError naming it, before it is
read past the byte limit or decoded past the pixel limit; never another exception."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jetkiosk.edge.capture.sources import open_source
from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import ImagesConfig
from jetkiosk.edge.core.errors import ImageError, SourceError
from jetkiosk.edge.core.images import image_size, load_image

JETKIOSK = str(Path(sys.executable).parent / "jetkiosk")
PEAK_RSS = """import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)"""  # the command's peak resident size (KiB), after its own output
ADDRESS_SPACE = 2 << 30  # a safety net: a regression fails here instead of eating the machine
SMALL = ImagesConfig(max_bytes=1 << 20, max_pixels=1 << 20)
FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, idat: bytes) -> bytes:
    """An 8-bit greyscale PNG with this header and image data."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                                  0, 0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def zero_rows(side: int, rows_per_segment: int = 1000) -> bytes:
    """The zlib stream of ``side`` black rows of ``side`` grey pixels (each with its filter
    byte): one compressed segment, flushed to stand alone, repeated; Adler-32 by formula."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = raw.compress(bytes((side + 1) * rows_per_segment)) + raw.flush(zlib.Z_FULL_FLUSH)
    total = (side + 1) * side
    return (b"\x78\xda" + segment * (side // rows_per_segment)
            + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
            + struct.pack(">I", (total % 65521) << 16 | 1))


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A valid 30000x30000 PNG of under 1 MB that decodes to 900 MB (2.7 GB as BGR)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png(30000, 30000, zero_rows(30000)))
    assert path.stat().st_size < 1 << 20
    return path


def photo_bytes(ext: str = ".jpg", image=None, params=()) -> bytes:
    if image is None:
        image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def refused(path: Path, match: str, **kwargs) -> str:
    """The one-line ImageError for ``path``, which names it and says ``match``."""
    with pytest.raises(ImageError, match=match) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


GREY = np.random.default_rng(1).integers(0, 255, (48, 64), np.uint8)
BGRA = np.random.default_rng(2).integers(0, 255, (48, 64, 4), np.uint8)


@pytest.mark.parametrize("name, data, kind", [
    ("a.jpg", photo_bytes(), "JPEG"),
    ("progressive.jpg", photo_bytes(params=(cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), "JPEG"),
    ("grey.jpg", photo_bytes(image=GREY), "JPEG"),
    ("a.png", photo_bytes(".png"), "PNG"),
    ("bgra.png", photo_bytes(".png", BGRA), "PNG"),
    ("grey16.png", photo_bytes(".png", GREY.astype(np.uint16) * 257), "PNG"),
    ("a.bmp", photo_bytes(".bmp"), "BMP"),
    ("a.pgm", photo_bytes(".pgm", GREY), "PNM"),
    ("a.ppm", photo_bytes(".ppm"), "PNM"),
    ("a.pbm", photo_bytes(".pbm", GREY), "PNM"),
    ("text.pgm", photo_bytes(".pgm", GREY, (cv2.IMWRITE_PXM_BINARY, 0)), "PNM"),
    ("text.ppm", photo_bytes(".ppm", params=(cv2.IMWRITE_PXM_BINARY, 0)), "PNM"),
    ("comments.pgm", b"P5 #w\n64\r#h\n48\t255\n" + GREY.tobytes(), "PNM"),
    ("lossy.webp", photo_bytes(".webp"), "WebP"),
    ("lossless.webp", photo_bytes(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101)), "WebP"),
    ("alpha.webp", photo_bytes(".webp", BGRA, (cv2.IMWRITE_WEBP_QUALITY, 90)), "WebP"),
    ("a.tiff", photo_bytes(".tiff"), "TIFF"),
    ("grey16.tiff", photo_bytes(".tiff", GREY.astype(np.uint16) * 257), "TIFF"),
])
def test_every_format_loads_as_bgr_with_the_size_its_header_says(tmp_path, name, data, kind):
    path = tmp_path / name
    path.write_bytes(data)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    assert image_size(data) == (kind, 64, 48)


def test_a_decompression_bomb_is_refused_from_its_header(bomb):
    start = time.monotonic()
    message = refused(bomb, "PNG of 30000x30000 is over images.max_pixels .40000000.; "
                            "refused before decoding")
    assert time.monotonic() - start < 1.0, message


def test_a_header_claiming_50000x50000_is_refused_and_opencvs_own_guard_is_an_image_error(
        tmp_path):
    path = tmp_path / "claims.png"
    path.write_bytes(png(50000, 50000, zlib.compress(bytes(100))))
    refused(path, "PNG of 50000x50000 is over images.max_pixels")
    # past our limit, OpenCV's own (2^30 pixels) refuses: a cv2.error, turned into ours
    refused(path, "not a readable image .PNG decoder: .*CV_IO_MAX_IMAGE_PIXELS",
            limits=ImagesConfig(max_pixels=1 << 32))


LYING_PNM = [
    (b"P5\n6000 6000\n255\n" + bytes(100), "PNM header says 6000x6000 but the file is too short"),
    (b"P6\n30000 30000\n255\n" + bytes(100), "PNM header says 30000x30000 but"),
    (b"P5 64 48 65535\n" + bytes(64 * 48), "PNM header says 64x48 but"),  # 16-bit: 2 B/pixel
    (b"P4 6000 6000\n" + bytes(100), "PNM header says 6000x6000 but"),
    (b"P2 6000 6000 255\n1 2 3\n", "PNM header says 6000x6000 but"),
    (b"P5 1#999999999\n1 255\n" + bytes(100), "PNM header says 1x999999999 but"),  # as OpenCV
    (b"P5 99999999999 1 255\n", "PNM header is truncated, too long or not numbers"),
    (b"P5 64 48 0\n" + bytes(64 * 48), "PNM header numbers are out of range"),
    (b"P5 64 48", "PNM header is truncated"),
    (b"P5 0 48 255\n", "PNM header says 0x48"),
]
BAD_HEADERS = [
    (b"GIF89a" + bytes(100), "not a JPEG, PNG, BMP, PNM, WebP or TIFF file"),
    (b"\xff\xd8\xff\xe0 definitely not a jpeg", "JPEG header is truncated"),
    (b"\xff\xd8\xff\xda\x00\x02", "JPEG scan before its frame header"),
    (b"\xff\xd8\xff\xc3\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00",
     "JPEG marker 0xC3 is not one libjpeg"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0", "its header is truncated"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\x04gAMA", "PNG whose first chunk is not IHDR"),
    (b"BM" + bytes(12) + struct.pack("<iii", 40, 64, 0), "BMP header says 64x0"),
    (b"BM" + bytes(12) + struct.pack("<i", 20), "BMP with a 20-byte info header"),
    (b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0" + bytes(16), "WebP lossy stream without a key frame"),
    (b"RIFF\0\0\0\0WEBPALPH" + bytes(16), "WebP whose first chunk is not"),
    (b"II*\0\x08\0\0\0\x01\0" + struct.pack("<HHII", 256, 3, 1, 64), "TIFF without an image"),
    (b"MM\0*\0\0\0\x08\0\x02" + struct.pack(">HHII", 256, 4, 1, 64) * 2, "size is repeated"),
]


@pytest.mark.parametrize("data, match", LYING_PNM, ids=[repr(d[:12]) for d, _ in LYING_PNM])
def test_a_pnm_header_that_lies_is_refused_before_decoding(tmp_path, data, match):
    path = tmp_path / "liar.pgm"
    path.write_bytes(data)
    refused(path, f"not a readable image \\(.*{match}")


@pytest.mark.parametrize("data, match", BAD_HEADERS, ids=[m for _, m in BAD_HEADERS])
def test_a_bad_header_of_each_format_is_one_line(tmp_path, data, match):
    path = tmp_path / "bad"
    path.write_bytes(data)
    refused(path, f"not a readable image \\(.*{match}")


@pytest.mark.parametrize("data, match", [
    (b"P5" + b" " * (16 << 20) + b"64 48 255\n", "PNM header is truncated, too long"),
    (b"P5 64 48" + b"#" * (16 << 20) + b"\n255\n", "PNM header is truncated, too long"),
    (b"\xff\xd8" + b"\xff\xfe\x00\x02" * (4 << 20), "JPEG with over 1000 markers"),
    (b"\xff\xd8" + b"\xff\x00" * (8 << 20), "JPEG header is truncated"),
    (b"\xff\xd8" + b"\xff" * (16 << 20), "JPEG header is truncated"),
], ids=["pnm spaces", "pnm comment", "jpeg segments", "jpeg stuffing", "jpeg fill"])
def test_a_header_built_to_be_slow_to_read_is_refused_quickly(tmp_path, data, match):
    path = tmp_path / "slow"
    path.write_bytes(data)
    start = time.monotonic()
    refused(path, f"not a readable image \\({match}")
    assert time.monotonic() - start < 2.0


def test_a_truncated_jpeg_is_refused(tmp_path):
    data = photo_bytes(image=np.random.default_rng(3).integers(0, 255, (480, 640, 3), np.uint8))
    for cut in (len(data) - 2, len(data) // 2, 700):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(data[:cut])
        refused(path, "JPEG is truncated: no end-of-image marker")
    path.write_bytes(data[:200])
    refused(path, "JPEG header is truncated")


def test_what_is_not_a_regular_file_gets_its_own_error(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    refused(tmp_path / "dir.jpg", "is a directory, not an image file")
    (tmp_path / "loop1.jpg").symlink_to("loop2.jpg")
    (tmp_path / "loop2.jpg").symlink_to("loop1.jpg")
    refused(tmp_path / "loop1.jpg", "symbolic link loop")
    refused(tmp_path / "missing.jpg", "no such file")
    (tmp_path / "empty.jpg").write_bytes(b"")
    refused(tmp_path / "empty.jpg", "file is empty")
    for device in (Path("/dev/zero"), Path("/dev/null")):
        refused(device, "is a character device, not an image file")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "socket.jpg"))
        refused(tmp_path / "socket.jpg", "is a socket, not an image file")


def test_a_larger_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.jpg"
    with open(path, "wb") as big:  # sparse: nothing to read
        big.truncate(SMALL.max_bytes + 1)
    refused(path, r"1048577 bytes is over images.max_bytes \(1048576\); refused unread",
            limits=SMALL)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path):
    path = tmp_path / "secret.jpg"
    path.write_bytes(photo_bytes())
    path.chmod(0)
    refused(path, "permission denied")


def write_later(path: Path, data: bytes) -> threading.Thread:
    """A writer thread for a FIFO; the reader may close it early."""
    def write() -> None:
        with contextlib.suppress(BrokenPipeError), open(path, "wb") as fifo:
            fifo.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_a_fifo_is_refused_unless_allowed_then_read_up_to_the_limit(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    start = time.monotonic()
    refused(fifo, r"is a pipe \(FIFO\), not an image file")  # without waiting for a writer
    assert time.monotonic() - start < 1.0
    writer = write_later(fifo, photo_bytes())
    assert load_image(fifo, allow_fifo=True).shape == (48, 64, 3)
    writer.join(5)
    writer = write_later(fifo, bytes(SMALL.max_bytes + 100))
    refused(fifo, r"more than images.max_bytes \(1048576\) bytes; refused", limits=SMALL,
            allow_fifo=True)
    writer.join(5)
    assert not writer.is_alive()  # its pipe broke when the reader stopped at the limit


def test_an_image_folder_source_reads_within_its_limits_and_waits_for_a_fifo(tmp_path):
    (tmp_path / "0.png").write_bytes(photo_bytes(".png"))
    os.mkfifo(tmp_path / "1.jpg")
    (tmp_path / "2.png").write_bytes(png(2000, 2000, zlib.compress(bytes(2001 * 2000))))
    source = open_source(f"file://{tmp_path}", images=SMALL)
    frames = source.frames()
    assert next(frames)[0].shape == (48, 64, 3)
    writer = write_later(tmp_path / "1.jpg", photo_bytes())
    assert next(frames)[0].shape == (48, 64, 3)
    writer.join(5)
    with pytest.raises(SourceError, match="2.png: PNG of 2000x2000 is over images.max_pixels"):
        next(frames)


def test_the_style_reader_uses_the_loader(bomb):
    read_rgb = pytest.importorskip("jetkiosk.export.style.images").read_rgb
    with pytest.raises(ImageError, match="/dev/zero: is a character device"):
        read_rgb(Path("/dev/zero"))
    with pytest.raises(ImageError, match="30000x30000 is over images.max_pixels"):
        read_rgb(bomb)


def test_the_cli_passes_the_configured_limits(config, people_gallery, shared, capsys):
    people_gallery.save(config.gallery_path)
    photo = shared / "faces/people/probes/obama1.jpg"
    args = ["--models", str(config.models_dir), "--gallery", str(config.gallery_path)]
    assert main(["identify", str(photo), *args, "--set", "images.max_pixels=1024"]) == 2
    assert "is over images.max_pixels (1024); refused before decoding" in capsys.readouterr().err
    assert main(["verify", str(photo), "--as", "obama", *args,
                 "--set", "images.max_bytes=1024"]) == 2
    assert "is over images.max_bytes (1024); refused unread" in capsys.readouterr().err


def limit_address_space() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.parametrize("name, message", [
    ("/dev/zero", "is a character device, not an image file"),
    ("bomb.png", "PNG of 30000x30000 is over images.max_pixels"),
    ("claims.png", "PNG of 50000x50000 is over images.max_pixels"),
])
def test_identify_refuses_in_a_real_process_without_using_memory(
        config, people_gallery, bomb, tmp_path, name, message):
    """``jetkiosk identify /dev/zero`` used to read until the OOM killer came."""
    people_gallery.save(config.gallery_path)
    (tmp_path / "bomb.png").symlink_to(bomb)
    (tmp_path / "claims.png").write_bytes(png(50000, 50000, zlib.compress(bytes(100))))
    path = name if name.startswith("/") else str(tmp_path / name)
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, JETKIOSK, "identify", path, "--models",
         str(config.models_dir), "--gallery", str(config.gallery_path)],
        capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=limit_address_space)
    *lines, peak_kib = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    (line,) = lines
    assert line.startswith(f"jetkiosk: error: {path}: {message}")
    assert int(peak_kib) < 1 << 20, f"peak resident size {int(peak_kib) >> 10} MiB"


def size_fields(data: bytes):
    """Where the seed's width (64) or height (48) may be written: (offset, struct format) in
    binary headers, (offset, digits) in a PNM's text header."""
    fields = [(at, fmt) for fmt in (">H", "<H", ">I", "<I") for value in (64, 48)
              for at in range(len(data) - 3) if data.startswith(struct.pack(fmt, value), at)]
    return fields + [(data.index(digits), digits.decode()) for digits in (b"64", b"48")
                     if data.startswith(b"P") and digits in data[:32]]


def mutated(data: bytes, draw) -> bytes:
    """``data`` with header bytes overwritten or inserted, cut short, or its width or height
    replaced by a number that does not fit."""
    how = draw(st.sampled_from(["overwrite", "insert", "truncate", "size"]))
    at = draw(st.integers(0, 64))
    if how == "overwrite":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at + 8:]
    if how == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "truncate" or not SIZE_FIELDS[data]:
        return data[:draw(st.integers(0, len(data)))]
    at, fmt = draw(st.sampled_from(SIZE_FIELDS[data]))
    number = draw(st.sampled_from([0, 1, 47, 65, 4000, 65535, 2 ** 31 - 1, 2 ** 32 - 1]))
    if fmt.isdigit():
        return data[:at] + str(number).encode() + data[at + len(fmt):]
    size = struct.calcsize(fmt)
    return data[:at] + struct.pack(fmt, number % (1 << 8 * size)) + data[at + size:]


SEEDS = {ext: photo_bytes(ext) for ext in (".jpg", ".png", ".bmp", ".ppm", ".webp", ".tiff")}
SEEDS.update({"grey.pgm": photo_bytes(".pgm", GREY), "lossy.webp": photo_bytes(
    ".webp", GREY, (cv2.IMWRITE_WEBP_QUALITY, 90)), "alpha.webp": photo_bytes(
    ".webp", BGRA, (cv2.IMWRITE_WEBP_QUALITY, 90)),
    "text.pgm": photo_bytes(".pgm", GREY, (cv2.IMWRITE_PXM_BINARY, 0))})
SIZE_FIELDS = {data: size_fields(data) for data in SEEDS.values()}


@FUZZ
@given(st.data())
def test_any_file_is_a_bgr_image_or_an_image_error(tmp_path, data):
    source = data.draw(st.sampled_from(["random"] + sorted(SEEDS)))
    content = (data.draw(st.binary(max_size=512)) if source == "random"
               else mutated(SEEDS[source], data.draw))
    path = tmp_path / "fuzzed"
    path.write_bytes(content)
    try:
        image = load_image(path, min_side=1, limits=SMALL)
    except ImageError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    _, width, height = image_size(content)
    assert image.shape[:2] == (height, width)  # the header read as the decoder reads it


def test_a_phone_photo_is_turned_upright_as_its_exif_orientation_says(tmp_path):
    from PIL import Image

    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: show it turned 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "phone.jpg")
    assert image.shape == (60, 40, 3)
    assert image[:10].mean() > 200 and image[-10:].mean() < 50  # the band is now on top
