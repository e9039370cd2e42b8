"""`jetkiosk demo` end to end: with no broker answering it starts an embedded one, and the
events flow over MQTT to the listener it prints."""

from __future__ import annotations

from jetkiosk.edge.cli.main import main
from mosquitto import free_port


def test_demo_runs_on_an_embedded_broker_when_none_answers(models_dir, tmp_path, capsys):
    port = free_port()
    assert main(["demo", "--workdir", str(tmp_path), "--models", str(models_dir),
                 "--set", f"mqtt.broker=mqtt://127.0.0.1:{port}"]) == 0
    out = capsys.readouterr().out
    assert f"no MQTT broker at mqtt://127.0.0.1:{port}: started an embedded one" in out
    events = [line for line in out.splitlines() if line.startswith("mqtt> ") and "track" in line]
    assert len(events) == 8
    assert sum("eileen_collins (match" in line for line in events) == 4
    assert sum("grace_hopper (match" in line for line in events) == 2
    assert sum("unknown face (unknown" in line for line in events) == 2
    assert "# 225 frames processed" in out.splitlines()
    assert out.splitlines()[-2:].count("mqtt> jetkiosk/demo/availability: offline") == 1
