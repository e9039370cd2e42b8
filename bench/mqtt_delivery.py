"""MQTT delivery: jetkiosk's outbox publisher against plain paho-mqtt QoS 1, side by side.

The peer is what most device integrations do: ``client.publish(topic, payload, qos=1)`` on
a client running ``loop_start()``, its unacknowledged messages only in memory. On one real
Mosquitto (random port) this measures, for each:

* the caller's time per publish (the capture loop's cost), p50 and p99;
* the time until N events are acknowledged by the broker (throughput);
* events lost when the publisher process is SIGKILLed while the broker is not acknowledging,
  then started again;
* events lost when the broker is SIGKILLed mid-stream and restarted.

Usage: python bench/mqtt_delivery.py [--events 3000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from common import machine, parse
from mosquitto import Mosquitto, Subscriber

TOPIC = "bench/cam0/faces/events"

PUBLISHER = r"""
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
kind, port, outbox, start, count, pace = sys.argv[1:7]
port, start, count, pace = int(port), int(start), int(count), float(pace)
topic = "bench/cam0/faces/events"
if kind == "jetkiosk":
    from jetkiosk.edge.core.config import MqttConfig
    from jetkiosk.edge.mqtt.client import BrokerSettings
    from jetkiosk.edge.mqtt.link import MqttLink
    from jetkiosk.edge.mqtt.outbox import Outbox
    link = MqttLink(BrokerSettings.from_config(MqttConfig(broker=f"mqtt://127.0.0.1:{port}",
                    keepalive=5)), "bench-pub", Outbox(outbox), "bench/availability",
                    reconnect=(0.1, 1.0)).start()
    link.wait_connected(10)
    publish = lambda payload: link.put(topic, payload)
    pending = lambda: link.outbox.depth
else:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.reconnect_delay_set(0.1, 1.0)
    client.connect("127.0.0.1", port, keepalive=5)
    client.loop_start()
    infos = []
    publish = lambda payload: infos.append(client.publish(topic, payload, qos=1))
    # is_published() raises for messages queued while disconnected; paho still sends them.
    pending = lambda: sum(not i._published for i in infos)
costs = []
t0 = time.perf_counter()
for i in range(start, start + count):
    payload = json.dumps({"event_id": "%032x" % i, "n": i}).encode()
    t = time.perf_counter()
    publish(payload)
    costs.append(time.perf_counter() - t)
    print(i, flush=True)
    if pace:
        time.sleep(pace)
while pending():
    time.sleep(0.001)
elapsed = time.perf_counter() - t0
costs.sort()
print("RESULT", json.dumps({"elapsed": elapsed, "p50": costs[len(costs) // 2],
                            "p99": costs[int(len(costs) * 0.99)]}), flush=True)
"""


def publisher(kind: str, broker: Mosquitto, outbox: Path, start: int, count: int,
              pace: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, kind, str(broker.port),
                             str(outbox), str(start), str(count), str(pace)],
                            stdout=subprocess.PIPE, text=True)


def received(sub: Subscriber) -> set:
    return {json.loads(p)["n"] for p in sub.payloads("/faces/events")}


def throughput(kind: str, work: Path, events: int) -> dict:
    broker = Mosquitto(work / f"{kind}-tp").start()
    try:
        proc = publisher(kind, broker, work / f"{kind}-tp.db", 0, events)
        out, _ = proc.communicate(timeout=600)
        return json.loads(out.splitlines()[-1].split(" ", 1)[1])
    finally:
        broker.stop()


def publisher_kill(kind: str, work: Path, events: int = 400) -> int:
    """Committed events lost when the publisher dies while the broker is not acking (the
    broker pauses after half the ``events``; the restarted publisher adds an eighth more)."""
    broker = Mosquitto(work / f"{kind}-pk").start()
    sub = Subscriber(broker.port, TOPIC, client_id=f"{kind}-pk-sub")
    outbox = work / f"{kind}-pk.db"
    first = publisher(kind, broker, outbox, 0, 100_000, pace=0.002)
    committed = []
    for line in first.stdout:
        committed.append(int(line))
        if len(committed) == events // 2:
            broker.pause()
        if len(committed) == events:
            first.send_signal(signal.SIGKILL)
            break
    first.wait()
    broker.resume()
    more = events // 8
    second = publisher(kind, broker, outbox, 1_000_000, more)
    second.communicate(timeout=120)
    wanted = set(committed) | set(range(1_000_000, 1_000_000 + more))
    sub.wait(lambda: received(sub) >= wanted, 20)
    lost = len(wanted - received(sub))
    sub.close()
    broker.stop()
    return lost


def broker_kill(kind: str, work: Path, events: int = 1000) -> int:
    broker = Mosquitto(work / f"{kind}-bk").start()
    sub = Subscriber(broker.port, TOPIC, client_id=f"{kind}-bk-sub")
    proc = publisher(kind, broker, work / f"{kind}-bk.db", 0, events, pace=0.002)
    for n, _ in enumerate(proc.stdout):
        if n == events * 2 // 5:
            broker.kill()
        if n == events * 3 // 5:
            broker.start()
        if n == events - 1:
            break
    proc.communicate(timeout=120)
    sub.wait(lambda: received(sub) >= set(range(events)), 30)
    lost = len(set(range(events)) - received(sub))
    sub.close()
    broker.stop()
    return lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    args = parse(parser, "100 events per figure")
    events = 100 if args.quick else args.events
    kill_events = (100, 100) if args.quick else (400, 1000)  # publisher kill, broker kill
    print(f"# MQTT delivery, jetkiosk outbox vs paho QoS 1, one Mosquitto; {machine()}")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmp:
        work = Path(tmp)
        for kind in ("jetkiosk", "paho"):
            rows[kind] = {**throughput(kind, work, events),
                          "lost_publisher_kill": publisher_kill(kind, work, kill_events[0]),
                          "lost_broker_kill": broker_kill(kind, work, kill_events[1])}
    print(f"{'':28}{'jetkiosk':>12}{'paho QoS 1':>12}")
    ours, peer = rows["jetkiosk"], rows["paho"]
    print(f"{'publish call p50 (ms)':28}{ours['p50'] * 1e3:12.3f}{peer['p50'] * 1e3:12.3f}")
    print(f"{'publish call p99 (ms)':28}{ours['p99'] * 1e3:12.3f}{peer['p99'] * 1e3:12.3f}")
    print(f"{f'{events} events acked (s)':28}{ours['elapsed']:12.2f}{peer['elapsed']:12.2f}")
    print(f"{'lost, publisher SIGKILL':28}{ours['lost_publisher_kill']:12d}"
          f"{peer['lost_publisher_kill']:12d}")
    print(f"{'lost, broker SIGKILL':28}{ours['lost_broker_kill']:12d}"
          f"{peer['lost_broker_kill']:12d}")
    print(f"throughput ratio (paho / jetkiosk time): {peer['elapsed'] / ours['elapsed']:.2f}")


if __name__ == "__main__":
    main()
