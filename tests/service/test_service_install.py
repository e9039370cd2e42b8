"""The systemd units checked by systemd itself, and `jetkiosk install` / `uninstall` into a
separate root with systemd's own sysusers, tmpfiles and systemctl."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jetkiosk.edge.core.config import load_config
from jetkiosk.edge.service.install import install, uninstall

JETKIOSK = str(Path(sys.executable).parent / "jetkiosk")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(SYSTEMD_ANALYZE is None and os.environ.get("CI") != "true",
                                reason="systemd-analyze not installed")


@pytest.fixture
def root(tmp_path):
    """A tree with this machine's users and groups, to install into."""
    tree = tmp_path / "root"
    (tree / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), tree / "etc" / name)
    return tree


def snapshot(tree: Path) -> dict:
    def entry(path: Path) -> tuple:
        info = path.lstat()
        content = (os.readlink(path) if path.is_symlink() else
                   path.read_bytes() if path.is_file() else b"")
        return info.st_mode, info.st_uid, info.st_gid, content

    return {str(p.relative_to(tree)): entry(p) for p in sorted(tree.rglob("*"))}


def ids(tree: Path, name: str, table: str) -> int:
    for line in (tree / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"{name} not in {table}")


def test_install_is_idempotent_and_uninstall_keeps_the_gallery(root):
    install(root, command=JETKIOSK)
    state = snapshot(root)
    uid, gid = ids(root, "jetkiosk", "passwd"), ids(root, "jetkiosk", "group")
    members = {line.split(":")[0]: line.split(":")[3].split(",")
               for line in (root / "etc/group").read_text().splitlines()}
    assert "jetkiosk" in members["video"] and "jetkiosk" in members["render"]
    for folder, mode, owner in (("var/lib/jetkiosk", 0o750, uid),
                                ("var/cache/jetkiosk", 0o750, uid),
                                ("etc/jetkiosk", 0o750, 0)):
        info = (root / folder).stat()
        assert (info.st_mode & 0o777, info.st_uid, info.st_gid) == (mode, owner, gid), folder
    config = root / "etc/jetkiosk/config.toml"
    assert config.stat().st_mode & 0o777 == 0o640 and config.stat().st_gid == gid
    key = (root / "etc/jetkiosk/gallery.key").stat()
    assert (key.st_mode & 0o777, key.st_uid, key.st_gid, key.st_size) == (0o400, uid, gid, 32)
    loaded = load_config(config)  # the installed file is valid and points at the daemon's dirs
    assert loaded.gallery_path == Path("/var/lib/jetkiosk/gallery.npz")
    assert loaded.gallery.key_file == "/etc/jetkiosk/gallery.key"
    assert loaded.models.engines == Path("/var/cache/jetkiosk/engines")
    assert loaded.run.sink == "mqtt" and loaded.log.level == "info"
    wants = root / "etc/systemd/system/multi-user.target.wants/jetkiosk.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/jetkiosk.service"
    unit = (root / "etc/systemd/system/jetkiosk.service").read_text()
    assert f"ExecStart={JETKIOSK} run --config /etc/jetkiosk/config.toml" in unit

    install(root, command=JETKIOSK)  # the second run changes nothing
    assert snapshot(root) == state

    config.write_text(config.read_text() + "\n# edited by the owner\n")
    (root / "var/lib/jetkiosk/gallery.npz").write_bytes(b"the people")
    install(root, command=JETKIOSK)
    assert config.read_text().endswith("# edited by the owner\n")  # never overwritten

    uninstall(root)
    assert not (root / "etc/systemd/system/jetkiosk.service").exists() and not wants.exists()
    assert not (root / "etc/sysusers.d/jetkiosk.conf").exists()
    assert (root / "var/lib/jetkiosk/gallery.npz").read_bytes() == b"the people"
    assert config.exists()
    uninstall(root, purge=True)
    assert not (root / "var/lib/jetkiosk").exists() and not (root / "etc/jetkiosk").exists()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tree = tmp_path_factory.mktemp("units") / "root"
    (tree / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        shutil.copy(Path("/etc", name), tree / "etc" / name)
    install(tree, command=JETKIOSK)
    return tree


@pytest.mark.parametrize("unit, user", [("etc/systemd/system/jetkiosk.service", False),
                                        ("etc/systemd/system/jetkiosk-build.service", False),
                                        ("etc/systemd/user/jetkiosk-kiosk.service", True)])
def test_systemd_analyze_verify_passes_on_every_installed_unit(installed, unit, user, tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))  # the user manager needs one
    tmp_path.chmod(0o700)
    result = subprocess.run([SYSTEMD_ANALYZE, *(["--user"] if user else []), "verify",
                             str(installed / unit)], capture_output=True, text=True, env=env,
                            check=False)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("unit, limit", [("jetkiosk.service", 4.0),
                                         ("jetkiosk-build.service", 4.0)])
def test_security_exposure_is_at_most_4(installed, unit, limit):
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
                             str(installed / "etc/systemd/system" / unit)],
                            capture_output=True, text=True, check=False)
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure, result.stdout + result.stderr
    assert float(exposure.group(1)) <= limit, result.stdout
    # the camera and the Tegra GPU nodes stay reachable
    text = (installed / "etc/systemd/system" / unit).read_text()
    assert not re.search(r"^(PrivateDevices=yes|DeviceAllow=|PrivateUsers=yes)", text, re.MULTILINE)


def test_the_daemon_unit_says_what_the_issue_asks(installed):
    text = (installed / "etc/systemd/system/jetkiosk.service").read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "User=jetkiosk",
                 "StateDirectory=jetkiosk", "CacheDirectory=jetkiosk", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "PrivateTmp=yes", "Wants=network-online.target",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert re.search(rf"^{re.escape(line)}", text, re.MULTILINE), line
    assert re.search(r"^After=.*network-online.target.*jetkiosk-build.service", text, re.MULTILINE)


def test_the_build_unit_has_nothing_to_do_where_the_backend_is_onnx_runtime(capsys):
    from jetkiosk.edge.cli.main import main

    assert main(["build", "--backend", "onnxruntime"]) == 0
    assert "no engines to build" in capsys.readouterr().err
