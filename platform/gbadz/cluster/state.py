"""What a cluster keeps on disk under ``$GBADZ_HOME/cluster/<name>/`` (0700).

``cluster.json`` holds the ports chosen at the first ``up`` (kept, so clients keep their
addresses), the PIDs and log files of the processes, the database names and the Redis key
prefix; ``secrets/`` holds what is generated once per cluster (files 0600, never printed).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gbadz.embedded import write_private
from gbadz.errors import BadRequest, ServicesError

STATE_FILE = "cluster.json"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,15}$")
#: The one Airflow user gbadz signs in as (SimpleAuthManager, role admin).
AIRFLOW_USER = "gbadz"


def check_name(name: str) -> str:
    """A cluster name becomes part of database names and Redis keys: a-z then a-z0-9, 1-16."""
    if not NAME_PATTERN.match(name):
        raise BadRequest(
            f"cluster name {name!r}: use 1-16 characters, a lowercase letter then lowercase letters or digits"
        )
    return name


@dataclass
class ProcState:
    """One process of the cluster, as ``up`` started it."""

    name: str
    pid: int
    ports: dict[str, int]
    log_file: str
    started_at: float
    #: The size of the log when it started: readiness is read from what came after.
    log_offset: int = 0
    #: Its start time (clock ticks after boot): with the PID, its identity.
    start_ticks: int = 0

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ProcState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class ClusterState:
    name: str
    cluster_id: str
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, ProcState] = field(default_factory=dict)
    workers: int = 1
    gbadz_database: str = ""
    airflow_database: str = ""
    postgres_url: str = ""
    redis_url: str = ""
    redis_prefix: str = ""
    celery_queue: str = ""
    env: str = "prod"


@dataclass(frozen=True)
class ClusterSecrets:
    """Generated once per cluster; only ever written to 0600 files and child environments."""

    s3_access_key: str
    s3_secret_key: str
    airflow_jwt_secret: str
    airflow_api_secret: str
    airflow_fernet_key: str
    airflow_password: str
    keyring_passphrase: str

    @classmethod
    def generate(cls) -> ClusterSecrets:
        return cls(
            s3_access_key="gbadz" + secrets.token_hex(6),
            s3_secret_key=secrets.token_urlsafe(32),
            # Airflow signs its task and UI tokens with this: 64+ bytes (architecture.md).
            airflow_jwt_secret=secrets.token_urlsafe(64),
            airflow_api_secret=secrets.token_urlsafe(32),
            airflow_fernet_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            airflow_password=secrets.token_urlsafe(18),
            keyring_passphrase=secrets.token_urlsafe(32),
        )

    def values(self) -> list[str]:
        """Every secret, for tests that grep output and logs for them."""
        return [str(v) for v in asdict(self).values()]


class ClusterHome:
    """The folder of one cluster and the files in it."""

    def __init__(self, gbadz_home: Path, name: str) -> None:
        self.name = check_name(name)
        self.root = (gbadz_home / "cluster" / name).resolve()

    # -- folders -------------------------------------------------------------------------
    def make(self) -> None:
        for folder in (self.root.parent.parent, self.root.parent, self.root):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for sub in (self.secrets_dir, self.logs_dir, self.seaweed_dir, self.airflow_home, self.gbadz_home):
            sub.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def seaweed_dir(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def gbadz_home(self) -> Path:
        return self.root / "gbadz"

    @property
    def airflow_passwords_file(self) -> Path:
        """SimpleAuthManager's passwords file: {"gbadz": "<password>"} (0600)."""
        return self.secrets_dir / "airflow-passwords.json"

    @property
    def keyring_path(self) -> Path:
        return self.gbadz_home / "keys" / "keyring.bin"

    # -- state ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.state_path.is_file()

    def load(self) -> ClusterState:
        try:
            raw = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            raise ServicesError(
                f"no cluster {self.name!r} under {self.root.parent}: run `gbadz cluster up --name {self.name}`"
            ) from None
        except (OSError, ValueError) as exc:
            raise ServicesError(f"cannot read {self.state_path}: {exc}") from None
        procs = {k: ProcState.from_json(v) for k, v in raw.pop("procs", {}).items()}
        known = {f.name for f in fields(ClusterState)}
        return ClusterState(procs=procs, **{k: v for k, v in raw.items() if k in known})

    def save(self, state: ClusterState) -> None:
        write_private(self.state_path, json.dumps(asdict(state), indent=2).encode())

    def secrets(self) -> ClusterSecrets:
        """The cluster's secrets, generated at its first ``up`` and kept."""
        path = self.secrets_dir / "secrets.json"
        if path.exists():
            raw = json.loads(path.read_text())
            known = {f.name for f in fields(ClusterSecrets)}
            if known <= raw.keys():
                return ClusterSecrets(**{k: raw[k] for k in known})
        generated = ClusterSecrets.generate()
        write_private(path, json.dumps(asdict(generated)).encode())
        return generated

    def write_airflow_passwords(self, secret: ClusterSecrets) -> Path:
        path = self.airflow_passwords_file
        write_private(path, json.dumps({AIRFLOW_USER: secret.airflow_password}).encode())
        return path
