"""GET /V1/documents: the three envelopes, pagination, filters and lookup counting."""

from __future__ import annotations

import pytest
import requests

from koywe_sandbox.testing import run_sandbox


def _items(kind, body):
    return {
        "hal": lambda: body["_embedded"]["documents"],
        "flat": lambda: body["documents"],
        "data": lambda: body["data"],
    }[kind]()


@pytest.mark.parametrize("kind", ["hal", "flat", "data"])
def test_envelopes_and_pagination(kind, token_for, make_doc):
    with run_sandbox(list_envelope=kind) as sb:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token_for(sb)}"
        for i in range(5):
            assert session.post(f"{sb.base_url}/documents", json=make_doc(ref=f"t{i}")).status_code == 201
        seen = []
        for page in (1, 2, 3):
            body = session.get(f"{sb.base_url}/documents", params={"page": page, "per_page": 2}).json()
            items = _items(kind, body)
            seen += [d["document_id"] for d in items]
            if kind == "data":
                assert body["pagination"] == {"total": 5, "per_page": 2, "current_page": page}
                continue
            assert (body["page"], body["page_size"], body["total_items"], body["page_count"]) == (
                page,
                2,
                5,
                3,
            )
            if kind == "hal":
                assert body["_links"]["self"]["href"].startswith(f"{sb.base_url}/documents")
                if page < 3:
                    nxt = session.get(body["_links"]["next"]["href"]).json()
                    assert nxt["page"] == page + 1
                else:
                    assert "next" not in body["_links"]
        assert seen == list(range(1000, 1005))
        default = session.get(f"{sb.base_url}/documents").json()
        assert len(_items(kind, default)) == 5  # per_page defaults to 10
        empty = session.get(f"{sb.base_url}/documents", params={"page": 9, "per_page": 2}).json()
        assert _items(kind, empty) == []
        assert sb.stats()["list_calls"] == 5 + (2 if kind == "hal" else 0)  # hal also followed 2 next links


def test_per_page_is_capped_at_100_and_bad_values_are_400(api):
    body = api.get(f"{api.base}/documents", params={"per_page": 500}).json()
    assert body["page_size"] == 100
    response = api.get(f"{api.base}/documents", params={"page": "x"})
    assert response.status_code == 400
    assert "page" in response.json()["error"]


def test_filters(api, make_doc):
    api.post(f"{api.base}/documents", json=make_doc(issue_date="2025-01-10", receiver_tax_id_code="1-9"))
    api.post(f"{api.base}/documents", json=make_doc(type_id=37, issue_date="2025-02-10"))
    api.post(f"{api.base}/documents", json=make_doc(type_id=96, issue_date="2025-03-10", account_id=55))
    api.post(f"{api.base}/documents", json=make_doc(type_id=82, issue_date="2025-03-11", account_id=55))

    def ids(**params):
        body = api.get(f"{api.base}/documents", params={"per_page": 100, **params}).json()
        return [d["document_id"] for d in body["_embedded"]["documents"]]

    assert ids() == [1000, 1001, 1002, 1003]
    assert ids(issue_date_from="2025-02-01") == [1001, 1002, 1003]
    assert ids(issue_date_from="2025-02-01", issue_date_to="2025-03-10") == [1001, 1002]
    assert ids(document_type_id=37) == [1001]
    assert ids(document_type_id="096") == [1002]
    assert ids(document_number="F001-00000001") == [1002]
    assert ids(document_number=1, document_type_id=2) == [1000]
    assert ids(receiver_tax_id_code="1-9") == [1000]
    assert ids(account_id=55) == [1002, 1003]
    assert ids(taxbureau_sending_status=0) == [1000, 1001]
    assert ids(taxbureau_validation_status=3) == [1002, 1003]


def test_reference_lookup_counts_as_lookup(api, sandbox, make_doc):
    api.post(f"{api.base}/documents", json=make_doc(ref="tx-9"))
    api.post(f"{api.base}/documents", json=make_doc(ref="tx-10"))
    other = make_doc()
    other["references"] = [{"reference_code": "801", "reference_number": "tx-9"}]
    api.post(f"{api.base}/documents", json=other)

    def lookup(code, number):
        params = {"reference_code": code, "reference_number": number}
        return [
            d["document_id"]
            for d in api.get(f"{api.base}/documents", params=params).json()["_embedded"]["documents"]
        ]

    assert lookup(5, "tx-9") == [1000]
    assert lookup("05", "tx-10") == [1001]
    assert lookup(801, "tx-9") == [1002]
    assert lookup(5, "nope") == []
    stats = sandbox.stats()
    assert (stats["lookups"], stats["list_calls"]) == (4, 0)
