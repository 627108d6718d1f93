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


#: Properties of the OpenAPI ``SimplifiedDocument`` (the ``GET /documents`` item schema), in its order.
SIMPLIFIED_DOCUMENT = [
    "document_id",
    "account_id",
    "taxbureau_sending_status",
    "taxbureau_validation_status",
    "issue_date",
    "document_number",
    "document_type_id",
    "issuer_tax_id_code",
    "issuer_tax_id_type",
    "receiver_legal_name",
    "receiver_tax_id_code",
    "receiver_tax_id_type",
    "document_status",
    "currency_id",
    "received_issued_flag",
    "net_amount",
    "taxes_amount",
    "total_amount",
    "document_type_taxbureau",
]


@pytest.mark.parametrize("kind", ["hal", "flat", "data"])
def test_list_shape_at_run_time_and_reset(api, sandbox, make_doc, kind):
    for i in range(3):
        api.post(f"{api.base}/documents", json=make_doc(ref=f"s{i}"))
    assert sandbox.set_faults(list_shape=kind)["list_shape"] == kind
    body = api.get(f"{api.base}/documents", params={"per_page": 2, "page": 2}).json()
    assert [d["document_id"] for d in _items(kind, body)] == [1002]
    expected_keys = {
        "hal": {"_embedded", "_links", "page_count", "total_items", "page", "page_size"},
        "flat": {"documents", "page_count", "total_items", "page", "page_size"},
        "data": {"data", "pagination"},
    }[kind]
    assert set(body) == expected_keys
    lookup = api.get(f"{api.base}/documents", params={"reference_code": 5, "reference_number": "s1"}).json()
    assert [d["document_id"] for d in _items(kind, lookup)] == [1001]
    sandbox.reset()
    assert sandbox.faults()["list_shape"] == "hal"  # the start-up value


def test_list_shape_start_up_value_comes_back_on_reset():
    with run_sandbox(list_envelope="data") as sb:
        assert sb.faults()["list_shape"] == "data"
        sb.set_faults(list_shape="flat")
        sb.reset()
        assert sb.faults()["list_shape"] == "data"


@pytest.mark.parametrize("kind", ["hal", "flat", "data"])
def test_flat_list_items_follow_the_openapi_schema(api, sandbox, make_doc, kind):
    chile = api.post(
        f"{api.base}/documents", json=make_doc(ref="cl-1", issuer_tax_id_code="76000000-0")
    ).json()
    peru = api.post(f"{api.base}/documents", json=make_doc(type_id=96, currency_id=7, ref="pe-1")).json()
    mexico = api.post(f"{api.base}/documents", json=make_doc(type_id=76, currency_id=31)).json()
    api.put(f"{api.base}/documents/{mexico['document_id']}", json={"document_status": "2"})
    sandbox.set_faults(list_shape=kind, list_items="flat")
    items = _items(kind, api.get(f"{api.base}/documents").json())
    assert [list(item) for item in items] == [[*SIMPLIFIED_DOCUMENT, "references"]] * 3
    first, second, third = items
    assert first == {
        "document_id": str(chile["document_id"]),
        "account_id": 423,
        "taxbureau_sending_status": "0",
        "taxbureau_validation_status": "1",
        "issue_date": "2025-04-15",
        "document_number": "1",
        "document_type_id": "2",
        "issuer_tax_id_code": "76000000-0",
        "issuer_tax_id_type": None,
        "receiver_legal_name": "Cliente Demo",
        "receiver_tax_id_code": "76086428-5",
        "receiver_tax_id_type": None,
        "document_status": 1,
        "currency_id": 39,
        "received_issued_flag": 1,
        "net_amount": "1000",
        "taxes_amount": "190",
        "total_amount": "1190",
        "document_type_taxbureau": "33",
        "references": chile["references"],
    }
    assert (second["document_number"], second["document_type_taxbureau"]) == ("F001-00000001", "01")
    assert (second["taxbureau_sending_status"], second["taxbureau_validation_status"]) == ("1", "3")
    assert second["references"] == peru["references"]
    assert third["document_status"] == 2  # the top-level (life) status: cancelled
    assert third["references"] == []
    assert not any("header" in item or "totals" in item for item in items)


def test_flat_list_items_with_filters_lookup_and_reset(api, sandbox, make_doc):
    api.post(f"{api.base}/documents", json=make_doc(ref="f-1"))
    api.post(f"{api.base}/documents", json=make_doc(type_id=37, ref="f-2"))
    sandbox.set_faults(list_items="flat")
    found = api.get(f"{api.base}/documents", params={"reference_code": 5, "reference_number": "f-2"}).json()
    assert [(d["document_id"], d["document_type_id"]) for d in found["_embedded"]["documents"]] == [
        ("1001", "37")
    ]
    typed = api.get(f"{api.base}/documents", params={"document_type_id": 2}).json()["_embedded"]["documents"]
    assert [d["document_id"] for d in typed] == ["1000"]
    assert api.get(f"{api.base}/documents/1000").json()["header"]  # GET by id still answers the Document
    sandbox.reset()
    assert sandbox.faults()["list_items"] == "full"


def test_full_items_are_the_default(api, make_doc):
    created = api.post(f"{api.base}/documents", json=make_doc()).json()
    assert api.get(f"{api.base}/documents").json()["_embedded"]["documents"] == [created]
