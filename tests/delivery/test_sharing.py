"""A grant read through the real `delta-sharing` client against the API served by uvicorn."""

from __future__ import annotations

import json
from pathlib import Path

import delta_sharing
import httpx
import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI

from gbadz.contract import Contract
from gbadz.ingest import pipeline, samples
from gbadz.translog.models import LogEntry
from tests.api import make_client
from tests.conftest import REPO

COLUMNS = ["delivery_id", "recipient_id", "recipient_phone", "district", "parcel_weight_kg"]


def _token(base: str, app: FastAPI, role: str, jurisdiction: str) -> tuple[str, str]:
    client = make_client(app, role, jurisdiction)
    response = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret or ""),
    )
    assert 200 == response.status_code, response.text
    return str(response.json()["access_token"]), client.org_id


def test_load_as_pandas_reads_exactly_the_grant(
    live_server: tuple[str, FastAPI], key_prefix: str, tmp_path: Path
) -> None:
    """The delta-sharing client reads exactly the granted, protected columns, logged, until revocation."""
    base, app = live_server
    provider, provider_org = _token(base, app, "provider", "HK")
    from gbadz.identity.models import Organization

    with app.state.sessionmaker() as session:
        org = session.get(Organization, provider_org)
        assert org is not None
        provider_name = org.name
    doc = yaml.safe_load((REPO / "contracts" / "hk-logistics-deliveries.yaml").read_text())
    doc["id"] = f"{key_prefix.strip('/')}-shared"
    doc["gbadz"]["provider"]["organization"] = provider_name
    registered = httpx.post(
        f"{base}/api/v1/datasets",
        content=yaml.safe_dump(doc).encode(),
        headers={"Authorization": f"Bearer {provider}", "Content-Type": "application/yaml"},
    )
    assert 201 == registered.status_code, registered.text
    source = tmp_path / "deliveries.csv"
    pacsv.write_csv(samples.generate("hk-logistics-deliveries", 1_000), source)
    ctx = pipeline.IngestContext(app.state.settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    assert pipeline.ingest(ctx, Contract.model_validate(doc), "test", source).accepted
    officer, _ = _token(base, app, "compliance_officer", "CN-SZ")
    as_officer = {"Authorization": f"Bearer {officer}"}
    [item] = httpx.get(f"{base}/api/v1/classification-reviews?dataset={doc['id']}", headers=as_officer).json()
    signed = httpx.post(
        f"{base}/api/v1/datasets/{doc['id']}/classification-review",
        json={"approve": True, "note": "every column classified", "contract_sha256": item["contract_sha256"]},
        headers=as_officer,
    )
    assert 200 == signed.status_code, signed.text

    consumer, _ = _token(base, app, "consumer", "HK")
    auth = {"Authorization": f"Bearer {consumer}"}
    asked = httpx.post(
        f"{base}/api/v1/datasets/{doc['id']}/access-requests",
        json={
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Parcel weight study by district",
            "columns": COLUMNS,
        },
        headers=auth,
    ).json()
    assert "approved" == asked["state"], asked
    profile = httpx.get(f"{base}/api/v1/grants/{asked['grant_id']}/sharing-profile", headers=auth)
    assert 200 == profile.status_code, profile.text
    body = profile.json()
    path = tmp_path / "gbadz.share"
    path.write_text(json.dumps(body))

    client = delta_sharing.SharingClient(str(path))
    [table] = client.list_all_tables()
    assert (body["share"], "default", doc["id"]) == (table.share, table.schema, table.name)
    frame = delta_sharing.load_as_pandas(f"{path}#{table.share}.{table.schema}.{table.name}")
    assert COLUMNS == list(frame.columns)
    assert 1_000 == len(frame)
    assert frame["recipient_phone"].str.startswith("****").all()
    assert frame["recipient_id"].str.startswith("p").all()

    with app.state.sessionmaker() as session:
        kinds = session.scalars(sa.select(LogEntry.kind).where(LogEntry.grant_id == asked["grant_id"])).all()
    assert "delta_sharing_query" in kinds

    # Disabling the recipient's organisation stops its sharing token at once, the grant untouched.
    admin = make_client(app, "admin")
    admin_token = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(admin.client_id, admin.client_secret or ""),
    ).json()["access_token"]
    sharing = {"Authorization": f"Bearer {body['bearerToken']}"}
    assert 200 == httpx.get(f"{base}/delta-sharing/shares", headers=sharing).status_code
    consumer_org = httpx.get(f"{base}/api/v1/me", headers=auth).json()["org_id"]
    disabled = httpx.post(
        f"{base}/api/v1/organizations/{consumer_org}/disable",
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert 200 == disabled.status_code, disabled.text
    assert 401 == httpx.get(f"{base}/delta-sharing/shares", headers=sharing).status_code

    # Revoking the grant ends the share at once; a forged token is refused.
    revoked = httpx.post(
        f"{base}/api/v1/grants/{asked['grant_id']}/revoke",
        json={"reason": "study finished"},
        headers={"Authorization": f"Bearer {provider}"},
    )
    assert 200 == revoked.status_code, revoked.text
    with pytest.raises(Exception, match="410"):
        delta_sharing.load_as_pandas(f"{path}#{table.share}.{table.schema}.{table.name}")
    forged = httpx.get(f"{base}/delta-sharing/shares", headers={"Authorization": "Bearer gbzds.e30.AAAA"})
    assert 401 == forged.status_code
