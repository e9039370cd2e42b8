"""`jetkiosk install` / `uninstall`: the systemd units, the service user and its directories,
the gallery key (``/etc/jetkiosk/gallery.key``, mode 0400, the service user's; made once).

Idempotent: a second install changes nothing. The user and directories come from sysusers.d
and tmpfiles.d files run by systemd's own tools, so they are made again at every boot if
lost. ``root`` installs into another tree (an image being built, a test) with systemd's
``--root``; on the running system the manager is reloaded and the daemon enabled.
Uninstalling keeps the gallery, its key, the configuration and the user unless ``purge``
(which deletes the key with /etc/jetkiosk: the gallery can then never be opened again).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..core.config_toml import template
from ..core.errors import JetkioskError
from ..core.sealing import Key, write_key

log = logging.getLogger(__name__)

DAEMON = "jetkiosk.service"
BUILD = "jetkiosk-build.service"
KIOSK = "jetkiosk-kiosk.service"
SHIPPED_EXECUTABLE = "/usr/local/bin/jetkiosk"
CONFIG = Path("/etc/jetkiosk/config.toml")
GALLERY_KEY = Path("/etc/jetkiosk/gallery.key")  # the gallery's key, off the state directory
STATE = Path("/var/lib/jetkiosk")
CACHE = Path("/var/cache/jetkiosk")
# What the installed configuration sets (the rest is left at its documented default), so
# that `jetkiosk ... --config /etc/jetkiosk/config.toml` run by hand uses the daemon's files.
INSTALLED_SETTINGS = {
    "models.dir": str(STATE / "models"), "models.engine_dir": str(CACHE / "engines"),
    "gallery.path": str(STATE / "gallery.npz"), "gallery.key_file": str(GALLERY_KEY),
    "mqtt.outbox": str(STATE / "outbox.db"),
    "run.source": "v4l2:///dev/video0", "run.sink": "mqtt", "log.level": "info",
}


class InstallError(JetkioskError):
    """A step of the installation failed; the message says which and why."""


def shipped(name: str) -> Path:
    """A file of the package's systemd folder."""
    import jetkiosk.systemd

    return Path(jetkiosk.systemd.__file__).parent / name


def executable() -> str:
    """The `jetkiosk` command of this installation (a venv's, or /usr/local/bin's)."""
    found = Path(sys.executable).parent / "jetkiosk"
    return str(found) if found.exists() else shutil.which("jetkiosk") or SHIPPED_EXECUTABLE


@dataclass
class Layout:
    """Where each file goes under ``root``."""

    root: Path

    def at(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    @property
    def live(self) -> bool:
        """Installing into the running system with systemd as its manager."""
        return self.root == Path("/") and Path("/run/systemd/system").is_dir()

    @property
    def root_option(self) -> List[str]:
        """``--root=DIR`` for systemd's tools, when not installing into the running system."""
        return [] if self.root == Path("/") else [f"--root={self.root}"]

    @property
    def units(self) -> List[Path]:
        system = self.at(Path("/etc/systemd/system"))
        return [system / DAEMON, system / BUILD, self.at(Path("/etc/systemd/user")) / KIOSK]

    @property
    def sysusers(self) -> Path:
        return self.at(Path("/etc/sysusers.d/jetkiosk.conf"))

    @property
    def tmpfiles(self) -> Path:
        return self.at(Path("/etc/tmpfiles.d/jetkiosk.conf"))


def _run(*command: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise InstallError(f"{command[0]}: cannot run it ({exc}); is this a systemd system?")
    if result.returncode != 0:
        raise InstallError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def _write(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` unless the file already holds it; True when it changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    log.info("wrote %s", path)
    return True


def _systemctl(layout: Layout, *args: str) -> None:
    _run("systemctl", *layout.root_option, *args)


def install(root: Path = Path("/"), command: Optional[str] = None, start: bool = False) -> None:
    """Put the units, sysusers/tmpfiles files and a configuration in place; make the user
    and directories; enable the daemon (and start it with ``start``)."""
    layout = Layout(root)
    command = command or executable()
    changed = False
    for unit in layout.units:
        text = shipped(unit.name).read_text().replace(SHIPPED_EXECUTABLE, command)
        changed |= _write(unit, text)
    _write(layout.sysusers, shipped("jetkiosk.sysusers").read_text())
    _write(layout.tmpfiles, shipped("jetkiosk.tmpfiles").read_text())
    _run("systemd-sysusers", *layout.root_option, str(layout.sysusers))
    _run("systemd-tmpfiles", "--create", *layout.root_option, str(layout.tmpfiles))
    config = layout.at(CONFIG)
    if not config.exists():  # an edited configuration is never overwritten
        _write(config, template(INSTALLED_SETTINGS), 0o640)
        os.chown(config, 0, _id(root, "group"))
    key = layout.at(GALLERY_KEY)
    if not key.exists():  # a key is never replaced: it alone opens the gallery
        write_key(key, Key.generate(str(GALLERY_KEY)))
        os.chown(key, _id(root, "passwd"), _id(root, "group"))
        log.info("wrote %s (the gallery key)", key)
    if layout.live and changed:
        _systemctl(layout, "daemon-reload")
    _systemctl(layout, "enable", *(["--now"] if start and layout.live else []), DAEMON)


def _id(root: Path, table: str) -> int:
    """The jetkiosk user's (``passwd``) or group's (``group``) id in ``root``'s /etc
    (made by systemd-sysusers)."""
    for line in (root / "etc" / table).read_text().splitlines():
        name, _, number, *_ = line.split(":")
        if name == "jetkiosk":
            return int(number)
    raise InstallError(f"{root / 'etc' / table}: no jetkiosk entry after systemd-sysusers")


def uninstall(root: Path = Path("/"), purge: bool = False) -> None:
    """Disable and remove the units and the sysusers/tmpfiles files. The gallery, the
    configuration, the engines and the user stay unless ``purge`` (the user always stays:
    sysusers never removes users, as files may still be owned by it)."""
    layout = Layout(root)
    if layout.units[0].exists():
        _systemctl(layout, "disable", *(["--now"] if layout.live else []), DAEMON)
    for path in (*layout.units, layout.sysusers, layout.tmpfiles):
        if path.exists():
            path.unlink()
            log.info("removed %s", path)
    if layout.live:
        _systemctl(layout, "daemon-reload")
    if purge:
        for folder in (STATE, CACHE, CONFIG.parent):
            shutil.rmtree(layout.at(folder), ignore_errors=True)
            log.info("removed %s", layout.at(folder))
