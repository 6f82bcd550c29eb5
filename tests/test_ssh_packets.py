"""Channel data written as whole packets, several to a write (ssh_packets.py), against the real
sshd: it checks every packet (AES-GCM's tag, the sequence), so a wrong byte ends the
connection. Each test has a server of its own where it needs sshd's settings."""

import hashlib
import logging
import os

import pytest

from caseflow import casefolder
from caseflow.config import TransportConfig
from caseflow.transports import ssh_packets
from caseflow.transports.local import local_manifest
from caseflow.transports.ssh import SSHTransport
from caseflow.transports.ssh_connection import transport_of
from sshd import SSHServer, transport_settings


@pytest.fixture
def case(tmp_path):
    d = tmp_path / "case"
    for i in range(200):
        sub = d / f"d{i % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03d}.bin").write_bytes(os.urandom(700 + i * 131))
    with open(d / "big.raw", "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
    return d


@pytest.fixture
def writes(monkeypatch):
    """How many writes went out as packets built here, and how many bytes of data in them."""
    seen = {"writes": 0, "bytes": 0}
    write = ssh_packets._write

    def counting(packetizer, channel, view, step):
        seen["writes"] += 1
        seen["bytes"] += len(view)
        return write(packetizer, channel, view, step)

    monkeypatch.setattr(ssh_packets, "_write", counting)
    return seen


def server(tmp_path, *lines) -> SSHServer:
    return SSHServer(tmp_path / "sshd", extra_config=lines).start()


def upload(srv, tmp_path, case) -> tuple[SSHTransport, object]:
    (tmp_path / "remote").mkdir(exist_ok=True)
    t = SSHTransport(TransportConfig(**transport_settings(
        srv, tmp_path / "remote", large_file_bytes=4 << 20)))
    target = tmp_path / "remote" / "1-case"
    m = casefolder.scan(case)
    assert t.upload_dir(case, str(target), m) is True
    assert local_manifest(target) == m.as_set()
    for f in m.entries:
        if f.kind == "f":
            assert digest(target / f.path) == digest(case / f.path), f.path
    return t, target


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_upload_goes_as_batched_packets_that_sshd_accepts(sshd, tmp_path, case, writes):
    t, _ = upload(sshd, tmp_path, case)
    try:
        size = sum(f.size for f in casefolder.scan(case).entries if f.kind == "f")
        assert writes["bytes"] >= size  # the files and their tar headers: all of it here
        assert writes["writes"] < writes["bytes"] / 32768  # several packets to a write
        # the bytes count towards the next key re-exchange, as paramiko's own sends do
        packetizer = transport_of(t.channels.conn.client()).packetizer
        assert packetizer._Packetizer__sent_bytes > size
        # and the connection still carries paramiko's own packets after ours
        assert t.run(["echo", "still here"]).stdout.strip() == "still here"
    finally:
        t.close()


def test_keys_renewed_by_the_server_in_the_middle_of_an_upload(tmp_path, case, writes, caplog):
    srv = server(tmp_path, "RekeyLimit 1M")  # sshd starts a re-exchange after each MiB
    caplog.set_level(logging.DEBUG, logger="paramiko.transport")
    try:
        t, _ = upload(srv, tmp_path, case)
        t.close()
    finally:
        srv.stop()
    exchanges = [r for r in caplog.records if "End of kex handshake" in r.getMessage()]
    assert len(exchanges) >= 4  # the first, and renewals between the packets (7 seen for ~25 MiB)
    assert writes["writes"] > 0


def test_another_cipher_goes_through_paramikos_own_send(tmp_path, case, writes):
    srv = server(tmp_path, "Ciphers aes128-ctr")
    try:
        t, _ = upload(srv, tmp_path, case)
        try:
            assert transport_of(t.channels.conn.client()).remote_cipher == "aes128-ctr"
        finally:
            t.close()
    finally:
        srv.stop()
    assert writes["writes"] == 0


def test_without_it_paramikos_send_carries_the_upload(sshd, tmp_path, case, writes,
                                                      monkeypatch):
    monkeypatch.setattr(ssh_packets, "ENABLED", False)  # bench/upload_bench.py's comparison
    upload(sshd, tmp_path, case)[0].close()
    assert writes["writes"] == 0
