"""The `gbadz` command line in subprocesses, as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gbadz import storage
from gbadz.config import S3Settings
from gbadz.embedded import pid_alive
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e


def _status(home: Path) -> dict[str, object]:
    result = run_cli(home, "services", "status", "--json")
    assert 0 == result.returncode, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "gbadz-home"
    yield path
    run_cli(path, "services", "down")


class TestServices:
    def test_up_is_idempotent_and_down_stops_everything(self, home: Path) -> None:
        """`up` twice starts one server; `down` leaves no process behind; data survives a restart."""
        first = run_cli(home, "services", "up", "--json")
        assert 0 == first.returncode, first.stderr
        up1 = json.loads(first.stdout)
        second = json.loads(run_cli(home, "services", "up", "--json").stdout)
        assert (True, False) == (up1["started"], second["started"])
        assert up1["s3"]["pid"] == second["s3"]["pid"]
        assert pid_alive(up1["s3"]["pid"])

        status = _status(home)
        s3 = status["s3"]
        assert isinstance(s3, dict)
        for key in ("endpoint", "access_key", "secret_key", "secure"):
            assert key in s3
        assert {"url"} <= set(status["database"])  # type: ignore[arg-type]
        assert {"url"} <= set(status["api"])  # type: ignore[arg-type]

        settings = S3Settings(
            endpoint_url=s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"]
        )
        store = storage.ObjectStore(storage.make_client(settings), settings)
        store.put_bytes(settings.curated_bucket, "keep/me.txt", b"still here")

        down = run_cli(home, "services", "down")
        assert 0 == down.returncode, down.stderr
        pid = up1["s3"]["pid"]
        assert not pid_alive(pid), "the S3 server is still running after `services down`"
        ports = {str(p) for p in json.loads((home / "services.json").read_text())["s3"]["ports"].values()}
        leftovers = [s for s in Path("/tmp").glob("seaweedfs-*.sock") if s.stem.rsplit("-", 1)[-1] in ports]
        assert [] == leftovers, "unix sockets left behind in /tmp"
        assert "nothing was running" in run_cli(home, "services", "down").stdout

        again = json.loads(run_cli(home, "services", "up", "--json").stdout)
        assert again["started"] is True
        assert up1["s3"]["endpoint"] == again["s3"]["endpoint"]
        store = storage.ObjectStore(storage.make_client(settings), settings)
        assert b"still here" == store.get_bytes(settings.curated_bucket, "keep/me.txt")

    def test_down_never_kills_a_stranger(self, home: Path) -> None:
        """If the recorded PID now belongs to another process, `down` leaves it alone."""
        import json as _json
        import subprocess

        run_cli(home, "services", "up")
        run_cli(home, "services", "down")
        stranger = subprocess.Popen(["sleep", "30"])
        try:
            state_path = home / "services.json"
            state = _json.loads(state_path.read_text())
            state["s3"]["pid"] = stranger.pid
            state_path.write_text(_json.dumps(state))
            result = run_cli(home, "services", "down")
            assert "nothing was running" in result.stdout
            assert stranger.poll() is None
        finally:
            stranger.kill()
            stranger.wait()


class TestCliErrors:
    def test_wrong_s3_secret_is_one_line(self, home: Path, s3_settings: S3Settings, tmp_path: Path) -> None:
        """A wrong S3 secret gives one line naming the problem and the fix, no traceback."""
        env = {
            "GBADZ_S3__ENDPOINT_URL": s3_settings.endpoint_url or "",
            "GBADZ_S3__ACCESS_KEY": s3_settings.access_key or "",
            "GBADZ_DB__URL": f"sqlite:///{tmp_path / 'x.db'}",
        }
        migrated = run_cli(home, "db", "upgrade", **env, GBADZ_S3__SECRET_KEY="unused")
        assert 0 == migrated.returncode, migrated.stderr
        result = run_cli(home, "check", **env, GBADZ_S3__SECRET_KEY="wrong-secret-value")
        assert 1 == result.returncode
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines), result.stderr
        assert "the secret key was rejected (SignatureDoesNotMatch): check GBADZ_S3__SECRET_KEY" in lines[0]
        assert "database" not in lines[0]
        assert "Traceback" not in result.stderr
        assert "wrong-secret-value" not in result.stderr

    def test_unreachable_database_is_one_line(self, home: Path, s3_settings: S3Settings) -> None:
        """An unreachable database gives one line naming it and the setting, no traceback."""
        result = run_cli(
            home,
            "check",
            GBADZ_S3__ENDPOINT_URL=s3_settings.endpoint_url or "",
            GBADZ_S3__ACCESS_KEY=s3_settings.access_key or "",
            GBADZ_S3__SECRET_KEY=s3_settings.secret_key.get_secret_value() if s3_settings.secret_key else "",
            GBADZ_DB__URL="postgresql://gbadz:pw-not-shown@127.0.0.1:1/gbadz",
            GBADZ_DB__CONNECT_TIMEOUT_S="2",
        )
        assert 1 == result.returncode
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines), result.stderr
        assert "cannot connect to the database" in lines[0]
        assert "GBADZ_DB__URL" in lines[0]
        assert "pw-not-shown" not in result.stderr

    def test_bad_configuration_exits_2(self, home: Path) -> None:
        """A malformed setting exits 2 naming the variable."""
        result = run_cli(home, "check", GBADZ_S3__ENDPOINT_URL="ftp://nope")
        assert (2, 1) == (result.returncode, len(result.stderr.strip().splitlines()))
        assert "GBADZ_S3__ENDPOINT_URL" in result.stderr

    def test_services_never_started(self, home: Path) -> None:
        """Asking for a check before anything was started says how to start it."""
        result = run_cli(home, "check")
        assert 1 == result.returncode
        assert "gbadz services up" in result.stderr


class TestDemo:
    def test_demo_shows_storage_and_database_working(self, home: Path) -> None:
        """`gbadz demo` on embedded defaults: services, schema, storage, a ready API, three
        datasets published through the ingest DAG and one rejected upload with its reasons."""
        result = run_cli(home, "demo", "--json", timeout=600)
        assert 0 == result.returncode, result.stderr[-3000:]
        report = json.loads(result.stdout)
        assert 200 == report["readyz"]["status_code"]
        assert report["storage"]["version_id"]
        assert report["audit"]["events_for_demo"] >= 1
        ingest = report["ingest"]
        for dataset in (
            "sz-hospital-outpatient-visits",
            "hk-logistics-deliveries",
            "mo-tourism-visitor-arrivals",
        ):
            assert (True, 1) == (ingest[dataset]["accepted"], ingest[dataset]["version"]), ingest[dataset]
        assert ingest["rejected"]["accepted"] is False
        assert "fee_cny: must be between" in ingest["rejected"]["summary"]
        # A Hong Kong startup sees the three published datasets but not the important Shenzhen one.
        catalog = report["catalog"]
        hong_kong = catalog["Victoria Harbour Analytics (startup)"]
        guangzhou = catalog["Pearl River Insights (startup)"]
        assert "sz-port-berth-schedules" not in hong_kong["datasets"]
        assert "sz-port-berth-schedules" in guangzhou["datasets"]
        assert hong_kong["total"] + 1 == guangzhou["total"]
        assert {"sz-hospital-outpatient-visits", "mo-tourism-visitor-arrivals"} <= set(hong_kong["datasets"])
        # Three access requests: auto-approved, GBA standard contract needed, sent to review.
        decided = {r["dataset"]: (r["state"], r["outcome"]) for r in report["requests"]}
        assert ("approved", "EXEMPT") == decided["mo-tourism-visitor-arrivals"]
        assert ("under_provider_review", "GBA_SC") == decided["sz-ev-charging-sessions"]
        assert ("under_provider_review", "HUMAN_REVIEW") == decided["sz-hospital-outpatient-visits"]
        assert all(r["legal_basis"] for r in report["requests"])
        # Two transfers, logged before their URLs; the compliance view and an offline-verified log.
        compliance = report["compliance"]
        # The health request ends in a determination (entry 0): the GBA standard contract (M12)
        # on top of the sector approval, and the log shows that basis and both approvers.
        assert ("approved", "M12", "GBA_SC", "M2") == tuple(compliance["determination"].values())
        assert [1, 2] == sorted(d["log_index"] for d in compliance["delivered"])
        health, release = (
            [
                t
                for t in compliance["logged"]
                if t["dataset"] == "sz-hospital-outpatient-visits"
                and (t["transfer_mode"] == "release") is wanted
            ]
            for wanted in (False, True)
        )
        [health] = health
        # Compute-to-data: the startup's analysis grant (the DP finding, MA3 with the health
        # approval) released one DP answer, logged as a transfer; the budget shows what is left.
        [release] = release
        assert ("EXEMPT", "MA3", ["provider", "compliance"]) == (
            release["outcome"],
            release["rule_id"],
            release["approvers"],
        )
        analysis = compliance["analysis"]
        assert ("MA3", 1.0, 2.0) == (analysis["rule_id"], analysis["epsilon"], analysis["epsilon_left"])
        assert analysis["groups"] > 0
        assert ("GBA_SC", "M12", "GBA_SC_HK", ["provider", "compliance"]) == (
            health["outcome"],
            health["rule_id"],
            health["mechanism"],
            health["approvers"],
        )
        assert compliance["verified"]
        hospital, releases = (
            [
                c
                for c in compliance["counters"]
                if c["exporter"] == "Shenzhen Harbour Hospital Group" and (c["basis"] == "none") is wanted
            ]
            for wanted in (False, True)
        )
        [hospital] = hospital
        # The release counts no individual; the exporter's report shows it with its ε.
        assert [(1, 1.0, 0)] == [(r["releases"], r["epsilon_spent"], r["pi_individuals"]) for r in releases]
        assert 0 < hospital["pi_individuals"] <= 100_000
        # Health data is sensitive (the sector overlay), so every patient delivered counts as SPI.
        assert hospital["pi_individuals"] == hospital["spi_individuals"]
        hospital_entry = next(
            d for d in compliance["delivered"] if d["dataset"] == "sz-hospital-outpatient-visits"
        )
        assert hospital_entry["rows"] > hospital["pi_individuals"]  # people are counted, not rows
        # One person per role for the console, whose passwords the Argon2id hashes accept.
        assert {"consumer", "provider", "compliance_officer", "admin"} == {
            p["role"] for p in report["people"]
        }
        # A person for every demo organisation with a role in the journeys (issue #19).
        assert {
            "Victoria Harbour Analytics (startup)",
            "Pearl River Insights (startup)",
            "Shenzhen Harbour Hospital Group",
            "Harbour Logistics Limited",
            "Macao Tourism Board",
            "Shenzhen Western Port Authority",
            "Special Data Zone Compliance Office",
            "Special Data Zone Operator",
        } == {p["org"] for p in report["people"]}
        from gbadz import db
        from gbadz.config import DatabaseSettings
        from gbadz.identity import people

        engine = db.create_engine(DatabaseSettings(url=f"sqlite:///{home / 'gbadz.db'}"))
        with db.make_sessionmaker(engine)() as session:
            for person in report["people"]:
                user = people.authenticate(session, person["username"], person["password"])
                assert user is not None, person["username"]
                assert person["role"] == user.role
            # One ready API client, its secret the one kept (as a hash), and no client per call:
            # each organisation, role and office the demo called as has one client (issue #19).
            import sqlalchemy as sa

            from gbadz.identity import service
            from gbadz.identity.models import OAuthClient

            recipe = report["api_client"]
            row = session.get(OAuthClient, recipe["client_id"])
            assert row is not None
            assert service.secret_matches(row, recipe["client_secret"])
            assert f"-u {recipe['client_id']}:{recipe['client_secret']} " in recipe["curl"]
            assert recipe["curl"].endswith("/oauth/token")
            names = session.scalars(sa.select(OAuthClient.name)).all()
            assert len(set(names)) == len(names)
        engine.dispose()
        for written in home.rglob("*.log"):
            assert recipe["client_secret"] not in written.read_text(errors="replace"), written


class TestKeys:
    def test_list_rotate_export_without_leaking_secrets(self, home: Path) -> None:
        """`gbadz keys` lists and rotates KEKs and exports a verifying public key; no secret is printed."""
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        from gbadz.config import Settings
        from gbadz.crypto.keys import KeyContext, provider_from_settings

        provider = provider_from_settings(Settings(home=home))
        dek_id = provider.data_key_id(KeyContext("mo-visitors", "1", "nationality", "general"))
        dek = provider.data_key(dek_id)

        listed = run_cli(home, "keys", "list", "--json")
        assert 0 == listed.returncode, listed.stderr
        keks = json.loads(listed.stdout)["keks"]
        assert [("mo-visitors/general", 1, 1)] == [
            (k["kek_id"], k["primary_version"], k["data_keys"]) for k in keks
        ]
        passphrase = (home / "keys" / "passphrase").read_text()
        for output in (listed.stdout, listed.stderr):
            assert passphrase not in output
            assert dek.hex() not in output

        rotated = run_cli(home, "keys", "rotate", "mo-visitors/general", "--json")
        assert {"rotated": {"mo-visitors/general": 2}} == json.loads(rotated.stdout)
        assert dek == provider_from_settings(Settings(home=home)).data_key(dek_id)

        pem = run_cli(home, "keys", "export-public")
        assert 0 == pem.returncode, pem.stderr
        load_pem_public_key(pem.stdout.encode())

    def test_rotate_signing_key(self, home: Path) -> None:
        """Rotating the token-signing key gives a new key id and keeps the old public key."""
        first = json.loads(run_cli(home, "keys", "rotate-signing", "--json").stdout)
        second = json.loads(run_cli(home, "keys", "rotate-signing", "--json").stdout)
        assert first["key_id"] == second["previous_key_id"]
        assert second["key_id"] != first["key_id"]
        from gbadz.config import Settings
        from gbadz.crypto.keys import provider_from_settings

        retired = provider_from_settings(Settings(home=home)).retired_public_keys("oauth-access-token")
        assert first["key_id"] in [info.key_id for info, _ in retired]

    def test_rotate_needs_a_target(self, home: Path) -> None:
        """`keys rotate` with neither an id nor --all says what it needs."""
        result = run_cli(home, "keys", "rotate")
        assert (1, "error: name one KEK id or pass --all") == (result.returncode, result.stderr.strip())

    def test_wrong_passphrase_is_one_line(self, home: Path) -> None:
        """A keyring opened with the wrong passphrase fails in one line naming the variable."""
        run_cli(home, "keys", "export-public")
        result = run_cli(home, "keys", "list", GBADZ_CRYPTO__PASSPHRASE="a-wrong-passphrase-123")
        assert 1 == result.returncode
        assert 1 == len(result.stderr.strip().splitlines())
        assert "GBADZ_CRYPTO__PASSPHRASE" in result.stderr


class TestOrgsAndClients:
    def test_admin_surface(self, home: Path, tmp_path: Path) -> None:
        """`orgs create/list` and `clients create/revoke` work as scripts expect, with --json."""
        env = {
            "GBADZ_DB__URL": f"sqlite:///{tmp_path / 'admin.db'}",
            "GBADZ_S3__ENDPOINT_URL": "http://127.0.0.1:1",
        }
        assert 0 == run_cli(home, "db", "upgrade", **env).returncode
        created = run_cli(
            home,
            "orgs",
            "create",
            "--name",
            "Shenzhen Harbour Hospital Group",
            "--jurisdiction",
            "CN-SZ",
            "--registration-no",
            "91440300MA5X",
            "--gba-registered",
            "--json",
            **env,
        )
        assert 0 == created.returncode, created.stderr
        org = json.loads(created.stdout)
        assert ("CN-SZ", True, False) == (org["jurisdiction"], org["gba_registered"], org["ciio"])
        listed = json.loads(run_cli(home, "orgs", "list", "--json", **env).stdout)
        assert [org["id"]] == [o["id"] for o in listed]

        client = json.loads(
            run_cli(
                home, "clients", "create", "--org", org["id"], "--role", "provider", "--json", **env
            ).stdout
        )
        assert client["client_id"].startswith("gbz_")
        assert len(client["client_secret"]) >= 40
        assert "datasets:publish" in client["scopes"]
        assert 0 == run_cli(home, "clients", "revoke", client["client_id"], **env).returncode
        again = run_cli(home, "clients", "revoke", client["client_id"], **env)
        assert 1 == again.returncode
        assert "already revoked" in again.stderr

    def test_unknown_jurisdiction_lists_codes(self, home: Path, tmp_path: Path) -> None:
        """An unknown jurisdiction is rejected with the list of valid codes, in one line."""
        env = {
            "GBADZ_DB__URL": f"sqlite:///{tmp_path / 'admin.db'}",
            "GBADZ_S3__ENDPOINT_URL": "http://127.0.0.1:1",
        }
        run_cli(home, "db", "upgrade", **env)
        result = run_cli(home, "orgs", "create", "--name", "X", "--jurisdiction", "SG", **env)
        assert 1 == result.returncode
        assert 1 == len(result.stderr.strip().splitlines())
        assert "CN-GZ CN-SZ CN-ZH CN-FS CN-HZ CN-DG CN-ZS CN-JM CN-ZQ CN HK MO OTHER" in result.stderr

    def test_bad_role(self, home: Path, tmp_path: Path) -> None:
        """An unknown role is rejected naming the valid roles."""
        env = {
            "GBADZ_DB__URL": f"sqlite:///{tmp_path / 'admin.db'}",
            "GBADZ_S3__ENDPOINT_URL": "http://127.0.0.1:1",
        }
        run_cli(home, "db", "upgrade", **env)
        org = json.loads(
            run_cli(home, "orgs", "create", "--name", "Y", "--jurisdiction", "HK", "--json", **env).stdout
        )
        result = run_cli(home, "clients", "create", "--org", org["id"], "--role", "root", **env)
        assert 1 == result.returncode
        assert "provider consumer compliance_officer admin" in result.stderr
        # Only the operator organisation's clients may be administrators.
        admin = run_cli(home, "clients", "create", "--org", org["id"], "--role", "admin", **env)
        assert 1 == admin.returncode
        assert "role: only clients of the zone's operator organisation may be administrators" in admin.stderr

    def test_lists_show_whole_ids_on_a_narrow_terminal(self, home: Path, tmp_path: Path) -> None:
        """`orgs list`, `clients list` and `users list` never cut an id, even 50 columns wide;
        `orgs disable` disables once and says so in one line the second time."""
        env = {
            "GBADZ_DB__URL": f"sqlite:///{tmp_path / 'admin.db'}",
            "GBADZ_S3__ENDPOINT_URL": "http://127.0.0.1:1",
        }
        run_cli(home, "db", "upgrade", **env)
        org = json.loads(
            run_cli(
                home,
                "orgs",
                "create",
                "--name",
                "Zone operator",
                "--jurisdiction",
                "CN-SZ",
                "--operator",
                "--json",
                **env,
            ).stdout
        )
        assert org["operator"] is True
        client = json.loads(
            run_cli(
                home,
                "clients",
                "create",
                "--org",
                org["id"],
                "--role",
                "admin",
                "--name",
                "ops",
                "--json",
                **env,
            ).stdout
        )
        password = tmp_path / "password"
        password.write_text("a long enough first password\n")
        made = run_cli(
            home,
            "users",
            "create",
            "--org",
            org["id"],
            "--role",
            "admin",
            "--username",
            "root-admin",
            "--display-name",
            "Ada",
            "--password-file",
            str(password),
            **env,
        )
        assert 0 == made.returncode, made.stderr
        narrow = env | {"COLUMNS": "50"}
        for command, ids in (
            (("orgs", "list"), [org["id"]]),
            (("clients", "list"), [client["client_id"], org["id"]]),
            (("users", "list"), ["root-admin", org["id"]]),
        ):
            shown = run_cli(home, *command, **narrow)
            assert 0 == shown.returncode, shown.stderr
            for whole in ids:
                assert whole in shown.stdout, (command, shown.stdout)
            assert "…" not in shown.stdout
        listed = json.loads(run_cli(home, "clients", "list", "--org", org["id"], "--json", **env).stdout)
        assert [(client["client_id"], "ops")] == [(c["client_id"], c["name"]) for c in listed]
        assert all("client_secret" not in c for c in listed)
        assert client["client_secret"] not in run_cli(home, "clients", "list", **env).stdout
        # The operator holds the last administrator: it cannot be disabled; a participant can.
        last = run_cli(home, "orgs", "disable", org["id"], **env)
        assert 1 == last.returncode
        assert "no active administrator" in last.stderr
        other = json.loads(
            run_cli(
                home, "orgs", "create", "--name", "Harbour trader", "--jurisdiction", "HK", "--json", **env
            ).stdout
        )
        assert 0 == run_cli(home, "orgs", "disable", other["id"], **env).returncode
        assert "disabled" in run_cli(home, "orgs", "list", **env).stdout
        again = run_cli(home, "orgs", "disable", other["id"], **env)
        assert (1, 1) == (again.returncode, len(again.stderr.strip().splitlines()))
        assert "already disabled" in again.stderr


class TestOneLineErrors:
    BAD_CONTRACT = "id: x\nversion: 1.0.0\n"

    def test_bad_inputs_are_one_line_naming_them(self, home: Path, tmp_path: Path) -> None:
        """A missing or invalid contract, file or setting is one line naming it, never a traceback."""
        bad = tmp_path / "bad-contract.yaml"
        bad.write_text(self.BAD_CONTRACT)
        not_pem = tmp_path / "not-a-key.pem"
        not_pem.write_text("hello")
        good = str(REPO / "contracts" / "sz-hospital-outpatient-visits.yaml")
        cases: list[tuple[tuple[str, ...], dict[str, str], str, int]] = [
            (("ingest", "missing-contract.yaml", "x.csv"), {}, "missing-contract.yaml", 1),
            (("ingest", str(bad), "x.csv"), {}, "bad-contract.yaml", 1),
            (("ingest", good, str(tmp_path / "missing-upload.csv")), {}, "missing-upload.csv", 1),
            (("contracts", "lint", "missing-contract.yaml"), {}, "missing-contract.yaml", 1),
            (("audit", "verify", "--public-key", str(not_pem), "x.jsonl"), {}, "not-a-key.pem", 1),
            (("audit", "verify", "--public-key", "missing-key.pem", "x.jsonl"), {}, "missing-key.pem", 1),
            (("check",), {"GBADZ_API__PORT": "eighty"}, "GBADZ_API__PORT", 2),
            (("check",), {"GBADZ_API__TRUSTED_PROXIES": "[not json"}, "GBADZ_API__", 2),
        ]
        failures = []
        for args, env, name, code in cases:
            result = run_cli(home, *args, **env)
            lines = result.stderr.strip().splitlines()
            if (code, 1) != (result.returncode, len(lines)) or name not in result.stderr:
                failures.append((args, result.returncode, result.stderr[-400:]))
            assert "Traceback" not in result.stderr + result.stdout
        assert [] == failures


class TestServe:
    def test_prints_the_console_and_docs_urls_and_root_leads_to_the_console(
        self, home: Path, s3_settings: S3Settings, tmp_path: Path
    ) -> None:
        """`gbadz serve` prints where the console and docs are; `/` there redirects to the console."""
        import subprocess
        import sys
        import time

        import httpx

        from tests.api import free_port
        from tests.conftest import cli_env

        env = {
            "GBADZ_S3__ENDPOINT_URL": s3_settings.endpoint_url or "",
            "GBADZ_S3__ACCESS_KEY": s3_settings.access_key or "",
            "GBADZ_S3__SECRET_KEY": s3_settings.secret_key.get_secret_value()
            if s3_settings.secret_key
            else "",
            "GBADZ_DB__URL": f"sqlite:///{tmp_path / 'serve.db'}",
        }
        assert 0 == run_cli(home, "db", "upgrade", **env).returncode
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gbadz", "serve", "--port", str(port)],
            env=cli_env(home, **env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            printed = [server.stdout.readline() for _ in range(3)]
            base = f"http://127.0.0.1:{port}"
            assert f"{base}/console/" in printed[0]
            assert f"{base}/docs" in printed[1]
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = httpx.get(f"{base}/", timeout=5)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
            assert (307, "/console/") == (response.status_code, response.headers["location"])
        finally:
            server.terminate()
            server.wait(20)


def _with_terminal_stderr(home: Path, *args: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (as a person sees it) and stdout on a pipe."""
    import os
    import subprocess
    import sys

    from tests.conftest import cli_env

    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gbadz", *args],
        env=cli_env(home),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert process.stdout is not None
    stdout = process.stdout.read().decode()
    return process.wait(60), stdout, b"".join(chunks).decode(errors="replace")


class TestProgress:
    def test_long_commands_draw_a_bar_on_a_terminal_and_nothing_on_a_pipe(
        self, home: Path, tmp_path: Path
    ) -> None:
        """samples and audit verify draw a progress bar on a terminal's stderr; stdout stays clean; piped, no bar."""
        code, stdout, stderr = _with_terminal_stderr(home, "samples", str(tmp_path / "a"), "--rows", "3000")
        assert 0 == code, stderr
        assert "━" in stderr
        assert "samples" in stderr or "generating" in stderr
        assert "\x1b" not in stdout
        assert 6 == len(stdout.splitlines())

        piped = run_cli(home, "samples", str(tmp_path / "b"), "--rows", "3000")
        assert (0, "") == (piped.returncode, piped.stderr)
        assert stdout.replace("/a/", "/b/") == piped.stdout

        export = tmp_path / "log.jsonl"
        export.write_text('{"type": "header", "format": "something else"}\n')
        code, stdout, stderr = _with_terminal_stderr(home, "audit", "verify", str(export))
        assert 1 == code
        assert "verifying log.jsonl" in stderr
        assert "NOT VERIFIED" in stderr
        assert "Traceback" not in stderr
