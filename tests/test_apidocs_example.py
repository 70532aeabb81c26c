"""The documented contract example is a real contract: "Try it out" registers it (201)."""

from __future__ import annotations

import yaml
from fastapi.testclient import TestClient

from gbadz import db
from gbadz.app import create_app
from gbadz.config import DatabaseSettings, Settings
from gbadz.identity import service
from tests.api import Client, bearer, fetch_token


def test_the_documented_contract_example_registers(settings: Settings, fresh_database_url: str) -> None:
    own = settings.model_copy(update={"db": DatabaseSettings(url=fresh_database_url)})
    engine = db.create_engine(own.db)
    db.upgrade(engine)
    engine.dispose()
    app = create_app(own)
    with TestClient(app) as http:
        spec = http.get("/openapi.json").json()
        body = spec["paths"]["/api/v1/datasets"]["post"]["requestBody"]["content"]["application/yaml"]
        example = body["example"]
        named = yaml.safe_load(example)["gbadz"]["provider"]
        with app.state.sessionmaker.begin() as session:
            org = service.create_organization(
                session, actor="test", name=named["organization"], jurisdiction="HK", gba_registered=True
            )
            issued = service.create_client(session, actor="test", org_id=org.id, role="provider")
        provider = Client(issued.client.client_id, issued.client_secret, org.id, "provider")
        headers = bearer(fetch_token(http, provider)) | {"Content-Type": "application/yaml"}
        registered = http.post("/api/v1/datasets", content=example.encode(), headers=headers)
        assert 201 == registered.status_code, registered.text
