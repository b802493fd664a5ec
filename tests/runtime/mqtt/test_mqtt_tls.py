"""TLS with a throwaway CA, a server certificate and a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("cryptography", reason="the TLS tests generate certificates with cryptography")

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mqtt_testkit import make_decision, recording_subscriber, settings_for, wait_until
from spikecast.ext.core.errors import PublishError
from spikecast.runtime.mqtt import MqttPublisher, MqttSettings
from spikecast.runtime.mqtt.topics import decision_topic

if TYPE_CHECKING:
    from conftest import MosquittoBroker

    BrokerFactory = Callable[..., MosquittoBroker]

DECISIONS = decision_topic("cam0", "s0")
CA_NAME = "spikecast test CA"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(CA_NAME))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        ).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    if server:
        # Hostname checking needs the address the client dials in the certificate.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _write(
    folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """ca.crt, server.crt/.key (for 127.0.0.1) and client.crt/.key in one folder."""
    folder = tmp_path / "pki"
    folder.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "ca", _issue(CA_NAME, ca_key, ca_key, ca=True), ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "server", _issue("127.0.0.1", server_key, ca_key, server=True), server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "client", _issue("edge-device", client_key, ca_key), client_key)
    return folder


@pytest.fixture
def tls_broker(mosquitto_factory: BrokerFactory, pki: Path) -> MosquittoBroker:
    return mosquitto_factory(
        [
            f"cafile {pki / 'ca.crt'}",
            f"certfile {pki / 'server.crt'}",
            f"keyfile {pki / 'server.key'}",
            "require_certificate true",
        ]
    )


async def test_publishes_over_tls_with_client_certificate(
    tls_broker: MosquittoBroker, pki: Path
) -> None:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    settings = MqttSettings.from_url(
        f"mqtts://{tls_broker.host}:{tls_broker.port}",
        device="cam0",
        ca_file=str(pki / "ca.crt"),
        cert_file=str(pki / "client.crt"),
        key_file=str(pki / "client.key"),
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
    )
    host, port = tls_broker.host, tls_broker.port
    async with recording_subscriber(host, port, DECISIONS, tls_context=context) as sub:
        async with MqttPublisher(settings) as pub:
            await pub.wait_connected(5)
            await pub.publish(DECISIONS, make_decision(2).to_dict())
            assert await pub.flush(5)
        await sub.wait_count(1, 5)
    assert sub.payloads == [make_decision(2).to_json().encode()]


async def test_untrusted_broker_certificate_is_refused(tls_broker: MosquittoBroker) -> None:
    # The system CAs do not know the test CA.
    settings = settings_for(tls_broker, tls=True, timeout_s=1.0)
    async with MqttPublisher(settings, flush_timeout_s=0) as pub:
        await wait_until(lambda: pub.stats().last_error is not None, 5, "a TLS failure")
        assert "certificate" in (pub.stats().last_error or "").lower()
        assert not pub.stats().connected


async def test_missing_client_certificate_is_refused(
    tls_broker: MosquittoBroker, pki: Path
) -> None:
    settings = settings_for(tls_broker, tls=True, ca_file=str(pki / "ca.crt"), timeout_s=1.0)
    async with MqttPublisher(settings, flush_timeout_s=0) as pub:
        with pytest.raises(PublishError, match="not connected"):
            await pub.wait_connected(1.5)


async def test_unreadable_tls_files_fail_at_start(tmp_path: Path) -> None:
    settings = MqttSettings(device="cam0", tls=True, ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(PublishError, match="TLS"):
        async with MqttPublisher(settings):
            pass
