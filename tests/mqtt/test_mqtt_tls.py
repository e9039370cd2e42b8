"""TLS and passwords against a real Mosquitto: the right credentials connect, wrong ones fail
with a clear error, and bad settings are caught before connecting."""

from __future__ import annotations

import subprocess

import pytest

from jetkiosk.edge.cli.main import main
from jetkiosk.edge.core.config import MqttConfig
from jetkiosk.edge.core.errors import ConfigError
from jetkiosk.edge.mqtt.client import BrokerSettings, MqttError
from jetkiosk.edge.mqtt.link import MqttLink
from jetkiosk.edge.mqtt.outbox import Outbox
from mosquitto import Mosquitto


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(folder, name: str):
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
            str(crt), "-subj", f"/CN={name}", "-days", "2")
    return key, crt


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca = make_ca(folder, "test-ca")
    _, other_ca = make_ca(folder, "other-ca")
    key, csr, crt = folder / "server.key", folder / "server.csr", folder / "server.crt"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile",
            str(folder / "san.ext"))
    client_key, client_csr = folder / "client.key", folder / "client.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(client_key), "-out",
            str(client_csr), "-subj", "/CN=kiosk1")
    openssl("x509", "-req", "-in", str(client_csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(folder / "client.crt"), "-days", "2")
    passwords = folder / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "kiosk", "s3cret"],
                   check=True, capture_output=True)
    passwords.chmod(0o600)
    broker = Mosquitto(folder / "broker", tls={"ca": ca, "cert": crt, "key": key},
                       password_file=passwords).start()
    yield broker, ca, other_ca, folder
    broker.stop()


def connect(broker, tmp_path, protocol="3.1.1", **settings) -> MqttLink:
    config = MqttConfig(broker=broker.uri, protocol=protocol, **settings)
    return MqttLink(BrokerSettings.from_config(config), "tls-test", Outbox(tmp_path / "ob.db"),
                    "jetkiosk/tls/availability", reconnect=(0.1, 0.5)).start()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_right_credentials_over_tls_connect_and_deliver(tls_broker, tmp_path, protocol):
    broker, ca, _, folder = tls_broker
    (folder / "password.txt").write_text("s3cret\n")
    link = connect(broker, tmp_path, protocol, username="kiosk", ca=str(ca),
                   password_file=str(folder / "password.txt"))
    assert link.wait_connected(15), link.last_error
    link.put("jetkiosk/tls/cam0/faces/events", b'{"n": 1}')
    link.close(flush_timeout=10)
    assert link.outbox.depth == 0  # acknowledged by the broker over TLS


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_wrong_password_fails_with_a_clear_error(tls_broker, tmp_path, protocol):
    broker, ca, _, _ = tls_broker
    link = connect(broker, tmp_path, protocol, username="kiosk", password="wrong", ca=str(ca))
    with pytest.raises(MqttError, match=r"broker refused the connection: "
                       r"(Not authorized|Bad user name or password); check mqtt.username"):
        link.wait_connected(15)
    link.close(0)


def test_unknown_certificate_authority_is_named(tls_broker, tmp_path):
    broker, _, other_ca, _ = tls_broker
    link = connect(broker, tmp_path, username="kiosk", password="s3cret", ca=str(other_ca))
    with pytest.raises(MqttError, match="TLS certificate verification failed.*check mqtt.ca"):
        link.wait_connected(15)
    link.close(0)


def test_plain_client_on_a_tls_port_and_bad_settings(tls_broker, tmp_path):
    broker, ca, _, _ = tls_broker
    plain = broker.uri.replace("mqtts://", "mqtt://")
    link = MqttLink(BrokerSettings.from_config(MqttConfig(broker=plain)), "plain",
                    Outbox(tmp_path / "ob.db"), "x/availability").start()
    assert not link.wait_connected(2)  # retried, never fatal: the broker may be fixed
    assert link.last_error and "127.0.0.1" in link.last_error
    link.close(0)
    for bad, message in [
        (MqttConfig(broker="http://x"), "mqtt.broker: 'http://x': scheme must be"),
        (MqttConfig(broker="mqtts://x", ca="/missing/ca.pem"), "mqtt.ca: /missing/ca.pem"),
        (MqttConfig(broker="mqtt://x", ca=str(ca)), "use mqtts://"),
        (MqttConfig(protocol="4"), "mqtt.protocol: '4'"),
        (MqttConfig(password_file="/missing"), "mqtt.password_file"),
    ]:
        with pytest.raises(ConfigError, match=message):
            BrokerSettings.from_config(bad)


def test_listen_with_a_wrong_password_exits_with_the_reason(tls_broker, capsys):
    broker, ca, _, _ = tls_broker
    uri = broker.uri.replace("mqtts://", "mqtts://kiosk:nope@")
    assert main(["listen", "--broker", uri, "--set", f"mqtt.ca={ca}", "--timeout", "10"]) == 2
    err = capsys.readouterr().err
    assert "broker refused the connection" in err and "mqtt.password" in err


def test_mutual_tls_needs_the_client_certificate(tls_broker, tmp_path):
    _, ca, _, folder = tls_broker
    broker = Mosquitto(tmp_path / "mtls", tls={"ca": ca, "cert": folder / "server.crt",
                                               "key": folder / "server.key",
                                               "require_certificate": True}).start()
    try:
        link = connect(broker, tmp_path, ca=str(ca), cert=str(folder / "client.crt"),
                       key=str(folder / "client.key"))
        assert link.wait_connected(15), link.last_error
        link.close(0)
        (tmp_path / "ob.db").unlink()
        without = connect(broker, tmp_path, ca=str(ca))
        assert not without.wait_connected(3)  # the broker hangs up during the handshake
        assert "require a client certificate (mqtt.cert and mqtt.key)" in without.last_error
        without.close(0)
    finally:
        broker.stop()
