"""The embedded SeaweedFS answers data only with credentials (ADR 0017, issue #20).

Every port `weed mini` opens is on loopback, where any local process reaches it. Before,
`curl` on the master, volume and filer ports listed the buckets, read objects in clear, and
wrote and deleted them; the master handed a volume JWT to whoever asked. Here each port is
asked, raw and unauthenticated, to list, read, write and delete an object just written
through S3 (by its real file id and filer path): it gives no byte of it and changes nothing.
The positive controls (a volume JWT signed with the server's key reads the file id; our
client certificate opens every gRPC port) show the probes would see a leak.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import secrets
import socket
import stat
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from minio import Minio
from minio.commonconfig import Tags
from minio.error import S3Error

from gbadz import storage
from gbadz.config import S3Settings
from gbadz.embedded import (
    SECURITY_VERSION,
    EmbeddedServices,
    S3State,
    grpc_certificates,
    pid_alive,
)
from tests.conftest import TEST_BUCKETS, TEST_LANDING_RETENTION_DAYS

BUCKET = TEST_BUCKETS["delivery_bucket"]  # not versioned: the filer path is the object key


@dataclass
class Server:
    services: EmbeddedServices
    state: S3State
    settings: S3Settings
    client: Minio

    @property
    def config_dir(self) -> Path:
        return self.services.home / "s3" / "config"

    def security(self) -> dict[str, Any]:
        return tomllib.loads((self.config_dir / "security.toml").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real SeaweedFS of this module's own, started the way `gbadz services up` starts it."""
    services = EmbeddedServices(
        tmp_path_factory.mktemp("hardened") / "home",
        bucket_settings=S3Settings(landing_retention_days=TEST_LANDING_RETENTION_DAYS, **TEST_BUCKETS),
        preferred_s3_port=None,
    )
    state, _ = services.up(with_database=False)
    assert state.s3 is not None
    settings = services.s3_settings(state.s3)
    try:
        yield Server(services, state.s3, settings, storage.make_client(settings))
    finally:
        services.down()


# -- a few bytes of protobuf and gRPC, enough to ask the filer where an object's bytes are ----
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _fields(buf: bytes) -> dict[int, list[Any]]:
    """Decode one protobuf message into {field number: [values]} (length-delimited as bytes)."""

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = buf[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, i

    out: dict[int, list[Any]] = {}
    i = 0
    while i < len(buf):
        key, i = varint(i)
        kind = key & 7
        value: Any
        if kind == 0:
            value, i = varint(i)
        elif kind == 2:
            size, i = varint(i)
            value, i = buf[i : i + size], i + size
        else:
            size = {1: 8, 5: 4}[kind]
            value, i = buf[i : i + size], i + size
        out.setdefault(key >> 3, []).append(value)
    return out


def _our_credentials(server: Server) -> grpc.ChannelCredentials:
    return _credentials(server.config_dir)


def _credentials(
    folder: Path, *, with_client_cert: bool = True, ca: Path | None = None
) -> grpc.ChannelCredentials:
    root = (ca or folder / "grpc-ca.crt").read_bytes()
    if not with_client_cert:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=(folder / "grpc.key").read_bytes(),
        certificate_chain=(folder / "grpc.crt").read_bytes(),
    )


def _call(port: int, method: str, request: bytes, credentials: grpc.ChannelCredentials | None) -> bytes:
    target = f"127.0.0.1:{port}"
    options = [("grpc.ssl_target_name_override", "localhost")]
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials, options)
    )
    with channel:
        return bytes(channel.unary_unary(method)(request, timeout=5))


LOOKUP = "/filer_pb.SeaweedFiler/LookupDirectoryEntry"


def _file_ids(server: Server, key: str) -> list[str]:
    """The volume file ids of an object, asked of the filer over gRPC with our certificate."""
    directory, name = f"/buckets/{BUCKET}/{key}".rsplit("/", 1)
    answer = _call(
        server.state.ports["filer_grpc"],
        LOOKUP,
        _field(1, directory.encode()) + _field(2, name.encode()),
        _our_credentials(server),
    )
    entry = _fields(_fields(answer)[1][0])
    return [_fields(chunk)[1][0].decode() for chunk in entry.get(3, [])]


def _volume_jwt(key: str, fid: str, expires_in: int = 60) -> str:
    """A volume JWT the way SeaweedFS signs one (HS256, claim ``fid``)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"fid": fid, "exp": int(time.time()) + expires_in}).encode())
    signature = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def _raw_requests(fid: str, key: str) -> list[tuple[str, str, bytes | None]]:
    """Listing, reading, writing and deleting, in the dialects of every SeaweedFS server."""
    volume_id, needle = fid.split(",")
    path = f"/buckets/{BUCKET}/{key}"
    return [
        # list
        ("GET", "/", None),
        ("GET", "/?pretty=y", None),
        ("GET", "/buckets/", None),
        ("GET", f"/buckets/{BUCKET}/", None),
        ("GET", f"/{BUCKET}", None),
        ("GET", f"/{BUCKET}?list-type=2", None),
        ("GET", "/dir/status", None),
        ("GET", "/vol/status", None),
        ("GET", "/status", None),
        ("GET", "/metrics", None),
        ("GET", "/api/s3/buckets", None),
        ("GET", f"/object-store/buckets/{BUCKET}", None),
        ("GET", f"/files?path=/buckets/{BUCKET}", None),
        # read: the object by file id, filer path and S3 key; and the JWTs that would unlock it
        ("GET", f"/{fid}", None),
        ("GET", f"/{volume_id}/{needle}", None),
        ("GET", f"/{fid}?readDeleted=true", None),
        ("GET", path, None),
        ("GET", f"{path}?metadata=true", None),
        ("GET", f"/{BUCKET}/{key}", None),
        ("GET", f"/dir/lookup?fileId={fid}&read=yes", None),
        ("GET", f"/dir/lookup?fileId={fid}", None),
        ("GET", f"/dir/lookup?volumeId={volume_id}", None),
        # write: over the object's own bytes, and new ones
        ("POST", f"/{fid}", b"planted by a stranger"),
        ("PUT", f"/{fid}", b"planted by a stranger"),
        ("POST", "/dir/assign", None),
        ("GET", "/dir/assign", None),
        ("PUT", path, b"planted by a stranger"),
        ("POST", f"/buckets/{BUCKET}/planted.txt", b"planted by a stranger"),
        ("PUT", f"/{BUCKET}/planted.txt", b"planted by a stranger"),
        ("POST", "/vol/grow?count=1", None),
        # delete
        ("DELETE", f"/{fid}", None),
        ("DELETE", path, None),
        ("DELETE", f"{path}?recursive=true", None),
        ("DELETE", f"/buckets/{BUCKET}?recursive=true", None),
        ("DELETE", f"/{BUCKET}/{key}", None),
        ("GET", f"/col/delete?collection={BUCKET}", None),
        ("GET", "/vol/vacuum?garbageThreshold=0.0001", None),
    ]


#: What some ports answer without credentials: health, the master's topology page, metrics.
HARMLESS = {"/", "/?pretty=y", "/status", "/metrics"}


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _listing(client: Minio) -> dict[str, str | None]:
    return {o.object_name or "": o.etag for o in client.list_objects(BUCKET, recursive=True)}


class TestNoDataWithoutCredentials:
    def test_every_port_refuses_raw_unauthenticated_http(self, server: Server) -> None:
        """No port answers an unauthenticated request with the object's bytes, a JWT, or a change."""
        key = f"t-{secrets.token_hex(6)}/delivered.parquet"
        data = secrets.token_bytes(256 * 1024)  # big enough to live in a volume, not in the filer entry
        server.client.put_object(BUCKET, key, io.BytesIO(data), len(data))
        [fid] = _file_ids(server, key)
        # The positive control: with a JWT signed by the server's read key, the file id reads.
        read_key = server.security()["jwt"]["signing"]["read"]["key"]
        volume = f"http://127.0.0.1:{server.state.ports['volume']}"
        signed = httpx.get(
            f"{volume}/{fid}", headers={"Authorization": f"Bearer {_volume_jwt(read_key, fid)}"}
        )
        assert (200, data) == (signed.status_code, signed.content)
        before = _listing(server.client)

        marker = data[1000:1032]
        anyone = httpx.Client(timeout=5)  # no credentials, no cookies, follows no redirect
        for name, port in server.state.ports.items():
            assert _listening(port), f"{name} port {port} is not listening: nothing was probed"
            for method, path, body in _raw_requests(fid, key):
                where = f"{name} {method} {path}"
                try:
                    response = anyone.request(method, f"http://127.0.0.1:{port}{path}", content=body)
                except httpx.TransportError:
                    assert name.endswith("_grpc"), f"{where}: the connection failed"
                    continue  # it speaks TLS and wants our client certificate (see below)
                assert marker not in response.content, f"{where} answered the object's bytes"
                assert "authorization" not in response.headers, f"{where} handed out a JWT"
                # Only a health answer, the master's topology page and metrics may say 200.
                if path not in HARMLESS or method != "GET":
                    assert response.status_code >= 400, f"{where} answered {response.status_code}"
        anyone.close()

        assert data == server.client.get_object(BUCKET, key).read()
        assert before == _listing(server.client), "an unauthenticated request changed the bucket"
        assert [fid] == _file_ids(server, key)

    def test_the_volume_server_wants_a_jwt_for_that_file_id(self, server: Server) -> None:
        """A JWT for another file id, an expired one, or one signed with another key reads nothing."""
        key = f"t-{secrets.token_hex(6)}/copy.bin"
        data = secrets.token_bytes(128 * 1024)
        server.client.put_object(BUCKET, key, io.BytesIO(data), len(data))
        [fid] = _file_ids(server, key)
        security = server.security()["jwt"]["signing"]
        volume = f"http://127.0.0.1:{server.state.ports['volume']}"
        other = fid.split(",")[0] + ",01deadbeef"
        for token in (
            _volume_jwt(security["read"]["key"], other),
            _volume_jwt(security["read"]["key"], fid, expires_in=-120),
            _volume_jwt(secrets.token_urlsafe(32), fid),
            _volume_jwt(security["key"], fid),  # the write key does not read
        ):
            response = httpx.get(f"{volume}/{fid}", headers={"Authorization": f"Bearer {token}"})
            assert 401 == response.status_code
            assert data[:64] not in response.content
        deleted = httpx.delete(
            f"{volume}/{fid}",
            headers={"Authorization": f"Bearer {_volume_jwt(security['read']['key'], fid)}"},
        )
        assert 401 == deleted.status_code  # a read JWT does not delete
        assert data == server.client.get_object(BUCKET, key).read()

    @pytest.mark.parametrize(
        "port_name", ["master_grpc", "volume_grpc", "filer_grpc", "s3_grpc", "admin_grpc"]
    )
    def test_grpc_ports_want_our_client_certificate(
        self, server: Server, port_name: str, tmp_path: Path
    ) -> None:
        """Plain gRPC, TLS without a certificate, and a certificate from another CA are all refused."""
        port = server.state.ports[port_name]
        lookup = _field(1, f"/buckets/{BUCKET}".encode())
        stranger = tmp_path / "stranger"
        stranger.mkdir()
        grpc_certificates(stranger)  # a CA and certificate of someone else's making
        attempts = {
            "plain": None,
            "tls without a client certificate": _credentials(server.config_dir, with_client_cert=False),
            "a stranger's certificate": _credentials(stranger, ca=server.config_dir / "grpc-ca.crt"),
        }
        for what, credentials in attempts.items():
            with pytest.raises(grpc.RpcError) as refused:
                _call(port, LOOKUP, lookup, credentials)
            assert grpc.StatusCode.UNAVAILABLE == refused.value.code(), what
        # The control: with our certificate the port answers (UNIMPLEMENTED: it has no filer API).
        if port_name == "filer_grpc":
            _call(port, LOOKUP, lookup, _our_credentials(server))
        else:
            with pytest.raises(grpc.RpcError) as answered:
                _call(port, LOOKUP, lookup, _our_credentials(server))
            assert grpc.StatusCode.UNIMPLEMENTED == answered.value.code()

    def test_s3_refuses_unsigned_and_tampered_requests(self, server: Server) -> None:
        """The S3 port answers nothing without a valid signature: anonymous, or a presigned URL altered."""
        key = f"t-{secrets.token_hex(6)}/object.txt"
        server.client.put_object(BUCKET, key, io.BytesIO(b"for signed eyes"), 15)
        base = server.settings.endpoint_url
        for method, path, body in (
            ("GET", "/", None),
            ("GET", f"/{BUCKET}?list-type=2", None),
            ("GET", f"/{BUCKET}/{key}", None),
            ("PUT", f"/{BUCKET}/planted.txt", b"x"),
            ("DELETE", f"/{BUCKET}/{key}", None),
        ):
            response = httpx.request(method, f"{base}{path}", content=body)
            assert 403 == response.status_code, f"{method} {path}: {response.status_code}"
            assert b"for signed eyes" not in response.content
        url = server.client.presigned_get_object(BUCKET, key)
        tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert 403 == httpx.get(tampered).status_code
        assert 403 == httpx.get(url.replace(key, key + "x")).status_code
        assert b"for signed eyes" == httpx.get(url).content


class TestTheGatewayStillDoesEverything:
    def test_presigned_urls_versions_lock_tags_listing_and_multipart(self, server: Server) -> None:
        """Presigned GET and PUT, versioning, object lock, tagging, listing, copy and multipart work."""
        from minio.commonconfig import CopySource

        client, prefix = server.client, f"t-{secrets.token_hex(6)}/"
        curated, landing = TEST_BUCKETS["curated_bucket"], TEST_BUCKETS["landing_bucket"]
        # presigned PUT then GET
        put = httpx.put(client.presigned_put_object(BUCKET, prefix + "up.bin"), content=b"uploaded")
        assert 200 == put.status_code, put.text
        assert b"uploaded" == httpx.get(client.presigned_get_object(BUCKET, prefix + "up.bin")).content
        # versioning
        assert "Enabled" == client.get_bucket_versioning(curated).status
        first = client.put_object(curated, prefix + "v.json", io.BytesIO(b"v1"), 2)
        client.put_object(curated, prefix + "v.json", io.BytesIO(b"v2"), 2)
        assert b"v1" == client.get_object(curated, prefix + "v.json", version_id=first.version_id).read()
        # object lock: the landing bucket's default retention applies
        landed = client.put_object(landing, prefix + "raw.csv", io.BytesIO(b"raw"), 3)
        retention = client.get_object_retention(landing, prefix + "raw.csv", version_id=landed.version_id)
        assert retention is not None
        assert "COMPLIANCE" == retention.mode
        # tagging
        tags = Tags.new_object_tags()
        tags["grant"] = "g-1"
        client.set_object_tags(BUCKET, prefix + "up.bin", tags)
        assert {"grant": "g-1"} == dict(client.get_object_tags(BUCKET, prefix + "up.bin") or {})
        # copy and multipart (12 MiB in 5 MiB parts)
        client.copy_object(BUCKET, prefix + "copy.bin", CopySource(BUCKET, prefix + "up.bin"))
        big = os.urandom(12 * 1024 * 1024)
        client.put_object(BUCKET, prefix + "big.bin", io.BytesIO(big), -1, part_size=5 * 1024 * 1024)
        assert (
            hashlib.sha256(big).digest()
            == hashlib.sha256(client.get_object(BUCKET, prefix + "big.bin").read()).digest()
        )
        # listing and deleting (outside the locked bucket)
        listed = sorted(
            o.object_name or "" for o in client.list_objects(BUCKET, prefix=prefix, recursive=True)
        )
        assert [prefix + n for n in ("big.bin", "copy.bin", "up.bin")] == listed
        client.remove_object(BUCKET, prefix + "copy.bin")
        assert 2 == len(list(client.list_objects(BUCKET, prefix=prefix, recursive=True)))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class TestFilesArePrivate:
    def test_home_data_logs_and_secrets_are_the_owners_alone(self, server: Server) -> None:
        """The home and every SeaweedFS folder are 0700, its files readable by their owner only."""
        home = server.services.home
        s3 = home / "s3"
        for folder in (home, s3, s3 / "data", s3 / "logs", s3 / "config", s3 / "run"):
            assert 0o700 == _mode(folder), folder
        for secret in (
            "services.json",
            "s3/credentials.json",
            "s3/identities.json",
            "s3/config/security.toml",
            "s3/config/grpc.key",
        ):
            assert 0o600 == _mode(home / secret), secret
        # Write something so the server creates volume files now, under its umask.
        server.client.put_object(BUCKET, f"t-{secrets.token_hex(6)}", io.BytesIO(b"x" * 70_000), 70_000)
        shared: list[str] = []
        for top, dirs, files in os.walk(s3):
            for name in dirs:
                assert 0o700 == _mode(Path(top) / name), Path(top) / name
            for name in files:
                path = Path(top) / name
                if not path.is_symlink() and _mode(path) & 0o077:
                    shared.append(str(path.relative_to(s3)))
        # SeaweedFS chmods a volume's .vif (its replication and version, no object data) to 0644
        # whatever the umask; behind the 0700 data folder nobody else reaches it, and the next
        # start takes the bits off.
        assert all(p.endswith(".vif") for p in shared), shared
        # Its gRPC unix sockets in /tmp: connecting needs write permission, which only we have.
        for name in ("master_grpc", "volume_grpc", "filer_grpc"):
            [sock] = Path("/tmp").glob(f"seaweedfs-*-grpc-{server.state.ports[name]}.sock")
            assert 0o700 == _mode(sock) & 0o777, sock

    def test_the_server_runs_with_umask_077_and_nothing_inherited(self, server: Server) -> None:
        """Umask 077, and an environment of its own: no WEED_* variable can override security.toml."""
        status = Path(f"/proc/{server.state.pid}/status").read_text()
        assert "Umask:\t0077" in status
        environ = dict(
            e.split(b"=", 1) for e in Path(f"/proc/{server.state.pid}/environ").read_bytes().split(b"\0") if e
        )
        assert {b"HOME", b"LANG", b"PATH"} == set(environ)
        assert str(server.services.home / "s3").encode() == environ[b"HOME"]


class TestUpgrade:
    def test_a_server_started_before_is_restarted_hardened_and_the_home_closed(self, tmp_path: Path) -> None:
        """A home from before (no security version, 0755 home, 0644 files) is fixed by the next `up`."""
        services = EmbeddedServices(
            tmp_path / "home",
            bucket_settings=S3Settings(landing_retention_days=TEST_LANDING_RETENTION_DAYS, **TEST_BUCKETS),
            preferred_s3_port=None,
        )
        try:
            state, _ = services.up(with_database=False)
            assert state.s3 is not None
            client = storage.make_client(services.s3_settings(state.s3))
            client.put_object(BUCKET, "kept.txt", io.BytesIO(b"kept"), 4)
            # What the previous version left: its state file had no security version, its home
            # and files were readable by all.
            raw = json.loads(services.state_path.read_text())
            del raw["s3"]["security_version"]
            services.state_path.write_text(json.dumps(raw))
            services.home.chmod(0o755)
            loose = services.home / "s3" / "logs" / "weed.out"
            loose.chmod(0o644)
            old_pid = state.s3.pid
            old_key = tomllib.loads((services.home / "s3" / "config" / "security.toml").read_text())["jwt"]

            again, started = services.up(with_database=False)
            assert again.s3 is not None
            assert started
            assert old_pid != again.s3.pid
            assert not pid_alive(old_pid)
            assert (state.s3.endpoint, SECURITY_VERSION) == (again.s3.endpoint, again.s3.security_version)
            argv = Path(f"/proc/{again.s3.pid}/cmdline").read_bytes().split(b"\0")
            assert b"-disableHttp" in argv
            assert any(a.startswith(b"-config_dir=") for a in argv)
            assert (0o700, 0o600) == (_mode(services.home), _mode(loose))
            assert b"kept" == client.get_object(BUCKET, "kept.txt").read()
            # Every start signs with keys of its own.
            new_key = tomllib.loads((services.home / "s3" / "config" / "security.toml").read_text())["jwt"]
            assert old_key["signing"]["key"] != new_key["signing"]["key"]
            assert old_key["filer_signing"]["read"]["key"] != new_key["filer_signing"]["read"]["key"]
            # Up to date: the next `up` reuses it.
            third, started = services.up(with_database=False)
            assert third.s3 is not None
            assert (False, again.s3.pid) == (started, third.s3.pid)
        finally:
            services.down()

    def test_the_signing_keys_are_strong_and_never_printed(self, server: Server) -> None:
        """Four different 256-bit keys, in neither `services status` nor the server's output."""
        shown = (
            json.dumps(server.services.status())
            + (server.services.home / "s3" / "logs" / "weed.out").read_text()
        )
        jwt = server.security()["jwt"]
        keys = [jwt["signing"], jwt["signing"]["read"], jwt["filer_signing"], jwt["filer_signing"]["read"]]
        assert 4 == len({k["key"] for k in keys})
        for key in keys:
            assert len(base64.urlsafe_b64decode(key["key"] + "=")) == 32
            assert key["key"] not in shown


class TestLandingRetention:
    def test_a_raw_upload_cannot_be_deleted_even_with_our_own_credentials(self, server: Server) -> None:
        """COMPLIANCE by default in landing: deleting the version is refused, bypass or not."""
        from minio.deleteobjects import DeleteObject

        landing = TEST_BUCKETS["landing_bucket"]
        key = f"t-{secrets.token_hex(6)}/raw/upload.csv.gbzenv"
        version = server.client.put_object(landing, key, io.BytesIO(b"raw upload"), 10).version_id
        assert version
        with pytest.raises(S3Error) as refused:
            server.client.remove_object(landing, key, version_id=version)
        assert "AccessDenied" == refused.value.code
        errors = list(
            server.client.remove_objects(landing, [DeleteObject(key, version)], bypass_governance_mode=True)
        )
        assert ["AccessDenied"] == [e.code for e in errors]
        assert b"raw upload" == server.client.get_object(landing, key, version_id=version).read()
