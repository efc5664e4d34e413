"""`adkd data download mvtec` against archives served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adkd.errors import ConfigError, DataError, ServiceError
from adkd.pipelines.data.download import (
    MVTEC_ARCHIVES,
    MVTEC_CATEGORIES,
    download_mvtec,
    read_checksums,
    resolve_archives,
    safe_extract,
)
from tests.cli_process import run_adkd
from tests.integration.conftest import FileServer, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _png(seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (64, 64, 3) if mode == "RGB" else (64, 64)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


def _category_files(category: str) -> dict[str, bytes]:
    """A tiny MVTec-layout category; noise images so the archive does not compress to nothing."""
    files = {f"{category}/train/good/{i:03d}.png": _png(i) for i in range(6)}
    files[f"{category}/test/good/000.png"] = _png(100)
    files[f"{category}/test/crack/000.png"] = _png(101)
    files[f"{category}/ground_truth/crack/000_mask.png"] = _png(102, "L")
    files[f"{category}/license.txt"] = b"CC BY-NC-SA 4.0\n"
    return files


def _write_tar(path: Path, files: dict[str, bytes], extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> str:
    with tarfile.open(path, "w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _serve_category(server: FileServer, category: str = "bottle") -> tuple[dict[str, bytes], str]:
    files = _category_files(category)
    return files, _write_tar(server.root / f"{category}.tar.xz", files)


def _assert_extracted(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (root / name).read_bytes() == data, name


def test_official_table_has_all_15_categories_with_sha256() -> None:
    assert len(MVTEC_CATEGORIES) == 15
    specs = resolve_archives()
    assert [s.category for s in specs] == list(MVTEC_CATEGORIES)
    for spec in specs:
        assert spec.url.startswith("https://www.mydrive.ch/shares/")
        assert spec.url.endswith(f"/{spec.category}.tar.xz")
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
    assert len({s.sha256 for s in specs}) == 15
    assert resolve_archives(["grid"])[0].sha256 == MVTEC_ARCHIVES["grid"][1]


def test_url_base_from_flag_and_env(file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The library takes the mirror as an argument; the command reads the flag or ADKD_MVTEC_URL.
    assert resolve_archives(["screw"], url_base="http://other/")[0].url == "http://other/screw.tar.xz"
    monkeypatch.setenv("ADKD_MVTEC_URL", "http://mirror.example/mvtec/")
    assert resolve_archives(["screw"])[0].url != "http://mirror.example/mvtec/screw.tar.xz"
    _, digest = _serve_category(file_server)
    sums = tmp_path / "sums.txt"
    sums.write_text(f"{digest}  bottle.tar.xz\n")
    env = {**os.environ, "ADKD_MVTEC_URL": file_server.url}
    args = ["data", "download", "mvtec", str(tmp_path / "m"), "--categories", "bottle", "--checksums", str(sums)]
    done = run_adkd(args, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m" / "bottle" / "train" / "good").is_dir()
    assert [e["status"] for e in file_server.log] == [200]


def test_unknown_category_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown MVTec AD category 'bottel'"):
        resolve_archives(["bottel"])


def test_download_verifies_extracts_and_skips_second_time(file_server: FileServer, tmp_path: Path) -> None:
    files, digest = _serve_category(file_server)
    root = tmp_path / "mvtec"
    report = download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest})
    assert report.categories == {"bottle": "downloaded"}
    _assert_extracted(root, files)
    assert sorted(p.name for p in root.iterdir()) == ["bottle"]  # no archive, .part or staging left
    assert [e["status"] for e in file_server.log] == [200]

    again = download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest})
    assert again.categories == {"bottle": "skipped"}
    assert len(file_server.log) == 1


def test_checksum_mismatch_is_refused_and_nothing_extracted(file_server: FileServer, tmp_path: Path) -> None:
    _serve_category(file_server)
    root = tmp_path / "mvtec"
    wrong = "0" * 64
    with pytest.raises(DataError, match=r"checksum mismatch for bottle\.tar\.xz"):
        download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": wrong})
    assert not root.exists()  # nothing extracted, no empty folder left


def test_official_checksum_rejects_a_mirror_with_other_bytes(file_server: FileServer, tmp_path: Path) -> None:
    _serve_category(file_server)
    with pytest.raises(DataError, match=MVTEC_ARCHIVES["bottle"][1]):
        download_mvtec(tmp_path / "mvtec", ["bottle"], url_base=file_server.url)


def test_interrupted_download_resumes_with_range(file_server: FileServer, tmp_path: Path) -> None:
    files, digest = _serve_category(file_server)
    size = (file_server.root / "bottle.tar.xz").stat().st_size
    half = size // 2
    root = tmp_path / "mvtec"
    file_server.cut_after["bottle.tar.xz"] = half

    with pytest.raises(ServiceError, match="interrupted") as err:
        download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest}, retries=0)
    assert "run the same command again to resume" in str(err.value)
    part = root / ".downloads" / "bottle.tar.xz.part"
    assert part.stat().st_size == half
    assert not (root / "bottle").exists()

    report = download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest})
    assert report.categories == {"bottle": "downloaded"}
    first, second = file_server.log
    assert (first["range"], first["status"], first["sent"]) == (None, 200, half)
    assert (second["range"], second["status"], second["sent"]) == (f"bytes={half}-", 206, size - half)
    _assert_extracted(root, files)
    assert not part.exists()


def test_dropped_connection_is_resumed_automatically(file_server: FileServer, tmp_path: Path) -> None:
    files, digest = _serve_category(file_server)
    size = (file_server.root / "bottle.tar.xz").stat().st_size
    file_server.cut_after["bottle.tar.xz"] = 1000
    root = tmp_path / "mvtec"
    download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest}, retries=2)
    assert [(e["range"], e["sent"]) for e in file_server.log] == [(None, 1000), ("bytes=1000-", size - 1000)]
    _assert_extracted(root, files)


def test_complete_part_file_is_verified_without_refetching_bytes(file_server: FileServer, tmp_path: Path) -> None:
    files, digest = _serve_category(file_server)
    root = tmp_path / "mvtec"
    (root / ".downloads").mkdir(parents=True)
    data = (file_server.root / "bottle.tar.xz").read_bytes()
    (root / ".downloads" / "bottle.tar.xz.part").write_bytes(data)
    download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest})
    assert [(e["range"], e["status"], e["sent"]) for e in file_server.log] == [(f"bytes={len(data)}-", 416, 0)]
    _assert_extracted(root, files)


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceError, match="unreachable or you are offline"):
        download_mvtec(tmp_path / "mvtec", ["bottle"], url_base=url)
    assert not (tmp_path / "mvtec").exists()


def test_http_404_is_a_service_error(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="HTTP 404"):
        download_mvtec(tmp_path / "mvtec", ["bottle"], url_base=file_server.url)


def test_corrupt_archive_with_matching_checksum_is_a_data_error(file_server: FileServer, tmp_path: Path) -> None:
    junk = b"not an archive at all" * 100
    (file_server.root / "bottle.tar.xz").write_bytes(junk)
    sums = {"bottle": hashlib.sha256(junk).hexdigest()}
    with pytest.raises(DataError, match="corrupt or not a tar archive"):
        download_mvtec(tmp_path / "mvtec", ["bottle"], url_base=file_server.url, checksums=sums)


def _info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = size
    return info


MALICIOUS = {
    "absolute path": ([(_info("/tmp/adkd-evil.txt", size=4), b"evil")], "absolute path"),
    "dot-dot": ([(_info("bottle/../../evil.txt", size=4), b"evil")], "contains '..'"),
    "leading dot-dot": ([(_info("../evil.txt", size=4), b"evil")], "contains '..'"),
    "symlink out (relative)": ([(_info("bottle/link", tarfile.SYMTYPE, "../../outside"), None)], "symlink"),
    "symlink out (absolute)": ([(_info("bottle/passwd", tarfile.SYMTYPE, "/etc/passwd"), None)], "symlink"),
    "hard link out": ([(_info("bottle/hard", tarfile.LNKTYPE, "../outside/secret"), None)], "hard link"),
    "char device": ([(_info("bottle/null", tarfile.CHRTYPE), None)], "device or FIFO"),
    "fifo": ([(_info("bottle/pipe", tarfile.FIFOTYPE), None)], "device or FIFO"),
    "write through outward symlink": (
        [(_info("bottle/up", tarfile.SYMTYPE, "../.."), None), (_info("bottle/up/evil.txt", size=4), b"evil")],
        "symlink",
    ),
}


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_archive_is_refused_and_writes_nothing(case: str, tmp_path: Path) -> None:
    extra, message = MALICIOUS[case]
    archive = tmp_path / "bottle.tar.xz"
    _write_tar(archive, _category_files("bottle"), extra)
    root = tmp_path / "target" / "root"
    (tmp_path / "outside").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError, match=message) as err:
        safe_extract(archive, root)
    assert extra[-1][0].name in str(err.value) or extra[0][0].name in str(err.value)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before] == [Path("target"), Path("target/root")]
    assert not Path("/tmp/adkd-evil.txt").exists()


def test_malicious_archive_over_http_is_refused(file_server: FileServer, tmp_path: Path) -> None:
    digest = _write_tar(
        file_server.root / "bottle.tar.xz",
        _category_files("bottle"),
        [(_info("bottle/../../../escaped.txt", size=4), b"evil")],
    )
    root = tmp_path / "a" / "b" / "mvtec"
    with pytest.raises(DataError, match="refusing to extract"):
        download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest})
    assert not (tmp_path / "escaped.txt").exists()
    assert not (root / "bottle").exists()
    assert not list(tmp_path.rglob("escaped.txt"))


def test_archive_without_the_category_writes_nothing(file_server: FileServer, tmp_path: Path) -> None:
    digest = _write_tar(file_server.root / "bottle.tar.xz", _category_files("cable"))
    root = tmp_path / "mvtec"
    with pytest.raises(DataError, match="does not contain bottle/train/good"):
        download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest})
    assert not root.exists()  # nothing extracted, no empty folder left


def test_inward_links_are_extracted(tmp_path: Path) -> None:
    archive = tmp_path / "bottle.tar.xz"
    files = _category_files("bottle")
    inward = [(_info("bottle/train/alias.png", tarfile.SYMTYPE, "good/000.png"), None)]
    _write_tar(archive, files, inward)
    safe_extract(archive, tmp_path / "root")
    alias = tmp_path / "root" / "bottle" / "train" / "alias.png"
    assert alias.is_symlink() and alias.read_bytes() == files["bottle/train/good/000.png"]


def test_read_checksums_parses_sha256sum_format(tmp_path: Path) -> None:
    path = tmp_path / "SHA256SUMS"
    path.write_text(f"# mirror\n{'a' * 64}  bottle.tar.xz\n{'B' * 64} *grid.tar.xz\n")
    assert read_checksums(path) == {"bottle": "a" * 64, "grid": "b" * 64}
    path.write_text("xyz bottle.tar.xz\n")
    with pytest.raises(ConfigError, match="SHA256SUMS:1"):
        read_checksums(path)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_adkd(args, cwd=REPO, env={**os.environ, **(env or {})}, timeout=120)


def test_cli_downloads_from_env_mirror_with_checksums_file(file_server: FileServer, tmp_path: Path) -> None:
    files, digest = _serve_category(file_server)
    grid_files, grid_digest = _serve_category(file_server, "grid")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{digest}  bottle.tar.xz\n{grid_digest}  grid.tar.xz\n")
    root = tmp_path / "mvtec"
    proc = _cli(
        "data", "download", "mvtec", str(root), "--categories", "bottle,grid", "--checksums", str(sums),
        env={"ADKD_MVTEC_URL": file_server.url},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "downloaded" in proc.stdout
    _assert_extracted(root, files | grid_files)


def test_cli_offline_is_one_line_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = _cli("data", "download", "mvtec", str(tmp_path / "m"), "--categories", "bottle", "--url-base", url)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot download") and "ADKD_MVTEC_URL" in lines[0]


SHARED_BOTTLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mvtec_ad_256" / "bottle"


@pytest.mark.skipif(not SHARED_BOTTLE.is_dir(), reason="shared MVTec AD bottle (../shared/data) not present")
def test_real_bottle_archive_survives_a_cut_and_round_trips(file_server: FileServer, tmp_path: Path) -> None:
    # All test images and masks plus 40 training images: the real files, at a packing cost a 2-core CI can pay.
    train = sorted((SHARED_BOTTLE / "train" / "good").glob("*.png"))[:40]
    keep = [p for p in SHARED_BOTTLE.rglob("*") if p.is_file() and "train" not in p.relative_to(SHARED_BOTTLE).parts]
    keep += train
    archive = file_server.root / "bottle.tar.xz"
    with tarfile.open(archive, "w:xz", preset=0) as tar:
        for path in sorted(keep):
            tar.add(path, arcname=f"bottle/{path.relative_to(SHARED_BOTTLE).as_posix()}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    size = archive.stat().st_size
    file_server.cut_after["bottle.tar.xz"] = size * 2 // 5
    root = tmp_path / "mvtec"
    download_mvtec(root, ["bottle"], url_base=file_server.url, checksums={"bottle": digest}, retries=1)
    assert [e["status"] for e in file_server.log] == [200, 206]
    original = {p.relative_to(SHARED_BOTTLE): p for p in keep}
    copied = {p.relative_to(root / "bottle"): p for p in (root / "bottle").rglob("*") if p.is_file()}
    assert sorted(copied) == sorted(original) and len(copied) > 150
    assert all(copied[k].read_bytes() == original[k].read_bytes() for k in original)
