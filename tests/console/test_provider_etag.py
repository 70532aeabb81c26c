"""The contract page's ``?etag=`` goes into an If-Match header: a value that is not an entity tag
(a non-ASCII one could not even be sent) is refused naming it (422), never a 500."""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.console.test_provider_pages import _csrf, _register, contract_yaml
from tests.console.world import World

SignedIn = Callable[[str], TestClient]


def test_a_bad_etag_in_the_address_is_refused_naming_it(
    app: FastAPI, world: World, signed_in: SignedIn
) -> None:
    provider = signed_in("provider")
    text = contract_yaml(app, world)
    dataset_id = yaml.safe_load(text)["id"]
    assert 303 == _register(provider, text).status_code
    page = provider.get(f"/console/provider/datasets/{dataset_id}/contract")
    csrf = _csrf(page.text)
    doc = yaml.safe_load(text)
    doc["version"] = "1.1.0"
    form = {"csrf": csrf, "contract_text": yaml.safe_dump(doc)}
    empty = {"contract_file": ("", b"", "application/octet-stream")}
    base = f"/console/provider/datasets/{dataset_id}/contract?csrf={csrf}"
    for bad in ("%E4%B8%AD", "%22%E4%B8%AD%22", "no-quotes", "%22a%0Ab%22"):
        refused = provider.post(f"{base}&etag={bad}", data=form, files=empty)
        assert 422 == refused.status_code, (bad, refused.text[:500])
        assert "etag: the contract" in refused.text
        assert "1.0.0" in provider.get(f"/console/provider/datasets/{dataset_id}").text
    chinese = provider.post(
        f"{base}&etag=%E4%B8%AD", data=form, files=empty, headers={"Accept-Language": "zh-CN"}
    )
    assert "etag：地址中的合约版本标签无效" in chinese.text
    # The page's own tag still works.
    found = re.search(r'action="(/console/provider/datasets/[^"]+/contract\?[^"]+)"', page.text)
    assert found is not None
    action = found.group(1).replace("&amp;", "&")
    assert 303 == provider.post(action, data=form, files=empty).status_code
