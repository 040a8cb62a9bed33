"""TLS and mutual TLS: the right certificates connect, every other client is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from availability_api.client import ApiError, AvailabilityClient
from availability_api.credentials import TlsError, server_tls
from availability_contracts.topics import TopicNames

from .conftest import Certs, SnapshotPublisher, channel_record

pytestmark = pytest.mark.kafka


def refused(client: AvailabilityClient) -> ApiError:
    with client, pytest.raises(ApiError) as caught:
        client.get("web", "SKU-1", timeout=5)
    return caught.value


def test_tls_and_mutual_tls(topics: TopicNames, snapshots: SnapshotPublisher, certs: Certs,
                            api_factory: Callable[..., Any]) -> None:
    snapshots.publish(topics, channels=[channel_record("web", "SKU-1", 8, 1)])
    tls = api_factory(topics, tls=server_tls(certs.server_cert, certs.server_key, None))
    mutual = api_factory(topics, tls=server_tls(certs.server_cert, certs.server_key,
                                                certs.ca))
    assert mutual.settings.tls is not None and mutual.settings.tls.mutual
    tls.wait_caught_up()
    mutual.wait_caught_up()

    with AvailabilityClient(tls.target, tls_ca=certs.ca) as client:
        assert client.get("web", "SKU-1").availability.ats == 8
    # a plaintext client, and one that does not trust the server's CA, get nothing
    assert refused(AvailabilityClient(tls.target)).code == grpc.StatusCode.UNAVAILABLE
    assert refused(AvailabilityClient(tls.target, tls=True)).code == (
        grpc.StatusCode.UNAVAILABLE)

    with AvailabilityClient(mutual.target, tls_ca=certs.ca, tls_cert=certs.client_cert,
                            tls_key=certs.client_key) as client:
        assert client.get("web", "SKU-1").availability.ats == 8
        assert client.health() == "SERVING"
    # without a client certificate, or with one from another CA: refused
    assert refused(AvailabilityClient(mutual.target, tls_ca=certs.ca)).code == (
        grpc.StatusCode.UNAVAILABLE)
    assert refused(AvailabilityClient(mutual.target, tls_ca=certs.ca,
                                      tls_cert=certs.rogue_cert,
                                      tls_key=certs.rogue_key)).code == (
        grpc.StatusCode.UNAVAILABLE)


def test_incoherent_tls_settings_are_refused(certs: Certs) -> None:
    with pytest.raises(TlsError, match="both a certificate and its private key"):
        server_tls(certs.server_cert, None, None)
    with pytest.raises(TlsError, match="needs the server's certificate"):
        server_tls(None, None, certs.ca)
    with pytest.raises(TlsError, match="client certificate needs its private key"):
        AvailabilityClient("127.0.0.1:1", tls_ca=certs.ca, tls_cert=certs.client_cert)
    with pytest.raises(TlsError, match="cannot read CA certificate"):
        AvailabilityClient("127.0.0.1:1", tls_ca=certs.ca.with_name("missing.pem"))
