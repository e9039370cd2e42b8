"""systemd units, sysusers.d and tmpfiles.d files; `jetkiosk install` puts them in place."""
