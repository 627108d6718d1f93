"""The legal archive against the sandbox: files written on create with their SHA-256 recorded in the
ledger, missing ones fetched once and only for the documents that lack them, within a cap."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from conftest import DAY, issue, payloads
from koywe_provider.ledger.archive import archive_files_for, archive_summary, lacking_archive
from koywe_provider.services.archive import (
    ArchiveSettings,
    ArchiveWriter,
    DocumentArchive,
    fetch_missing,
    verify_archive,
)
from koywe_provider.services.issuance import IssuancePolicy

COUNTRIES = {"CL-1": "CL", "CL-2": "CL", "PE-1": "PE", "MX-1": "MX"}


def archive_at(env, root: str) -> DocumentArchive:
    return DocumentArchive(env.ledger, ArchiveSettings(root=root).root_path())


def sandbox_files(env, koywe_id: str) -> dict[str, bytes]:
    (document,) = [d for d in env.sandbox.documents() if str(d["document_id"]) == koywe_id]
    electronic = document["electronic_document"]
    return {
        "xml": base64.b64decode(electronic["document_xml"]),
        "pdf": base64.b64decode(electronic["document_pdf"]),
    }


@pytest.mark.parametrize("threads", [1, 3])
def test_files_are_archived_on_create_with_their_checksums(env, tmp_path, threads):
    archive = archive_at(env, str(tmp_path / "archive"))
    writer = ArchiveWriter(archive, threads=threads, queue_size=2)
    reads_before = env.sandbox.stats()["document_reads"]

    rows = issue(env, payloads(), on_recorded=writer.on_recorded, policy=IssuancePolicy(max_in_flight=4))
    counts = writer.close()

    assert (counts.documents, counts.files, counts.failed, counts.without_files) == (4, 8, 0, 0)
    assert env.sandbox.stats()["document_reads"] == reads_before  # the POST answers carried the files
    for reference, row in rows.items():
        records = archive_files_for(env.ledger, row["id"])
        assert [r["kind"] for r in records] == ["pdf", "xml"]
        expected = sandbox_files(env, row["koywe_document_id"])
        for record in records:
            assert record["source"] == "create" and record["generation"] == 1
            path = Path(record["path"].removeprefix("file://"))
            # one folder per account / country / issue date
            assert path.parent == tmp_path / "archive" / row["account_id"] / COUNTRIES[reference] / DAY
            data = path.read_bytes()
            assert data == expected[record["kind"]]
            assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size_bytes"] == len(data)
        assert row["koywe_document_id"] in Path(records[0]["path"]).name
    assert verify_archive(env.ledger) == {
        "documents": 4,
        "files": 8,
        "checksums_ok": 8,
        "checksums_bad": 0,
        "missing": 0,
    }
    assert lacking_archive(env.ledger) == []


def test_missing_files_are_fetched_once_and_only_for_documents_that_lack_them(env, tmp_path):
    archive = archive_at(env, str(tmp_path / "archive"))
    writer = ArchiveWriter(archive)
    documents = payloads()
    archived = issue(env, {k: documents[k] for k in ("CL-1", "PE-1")}, on_recorded=writer.on_recorded)
    writer.close()
    bare = issue(env, {k: documents[k] for k in ("CL-2", "MX-1")})  # e.g. a ledger from before the archive
    before = env.sandbox.stats()["document_reads"]

    outcome = fetch_missing(env.hook, archive, issue_date_from=DAY, issue_date_to=DAY, max_documents=10)

    assert (outcome.lacking, outcome.fetched, outcome.archived, outcome.files) == (2, 2, 2, 4)
    assert env.sandbox.stats()["document_reads"] - before == 2  # only the two that lacked files
    for row in bare.values():
        records = archive_files_for(env.ledger, row["id"])
        assert {r["source"] for r in records} == {"fetch"} and len(records) == 2
        assert env.ledger.get(row["id"])["archive_fetched_at"] is not None
    for row in archived.values():
        assert {r["source"] for r in archive_files_for(env.ledger, row["id"])} == {"create"}
    assert verify_archive(env.ledger)["checksums_ok"] == 8

    again = fetch_missing(env.hook, archive, issue_date_from=DAY, issue_date_to=DAY, max_documents=10)
    assert (again.lacking, again.fetched) == (0, 0)
    assert env.sandbox.stats()["document_reads"] - before == 2  # fetched once


def test_fetching_is_capped_and_a_document_koywe_lost_is_asked_once(env, tmp_path):
    archive = archive_at(env, str(tmp_path / "archive"))
    rows = issue(env, payloads())
    env.sandbox.forget_document(rows["MX-1"]["koywe_document_id"])
    before = env.sandbox.stats()["document_reads"]

    first = fetch_missing(env.hook, archive, issue_date_from=DAY, issue_date_to=DAY, max_documents=3)
    assert (first.lacking, first.fetched, first.remaining) == (4, 3, 1)
    second = fetch_missing(env.hook, archive, issue_date_from=DAY, issue_date_to=DAY, max_documents=3)
    assert (second.lacking, second.fetched, second.not_found, second.remaining) == (1, 1, 1, 0)
    third = fetch_missing(env.hook, archive, issue_date_from=DAY, issue_date_to=DAY, max_documents=3)
    assert third.fetched == 0
    assert env.sandbox.stats()["document_reads"] - before == 4
    assert archive_summary(env.ledger)["documents"] == 3


def test_a_failing_store_never_stops_issuance(env, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive's root should be")
    writer = ArchiveWriter(archive_at(env, str(blocker)))

    rows = issue(env, payloads(), on_recorded=writer.on_recorded)
    counts = writer.close()

    assert {row["state"] for row in rows.values()} == {"issued"}
    assert (counts.documents, counts.failed) == (0, 4)
    assert len(lacking_archive(env.ledger)) == 4  # left for a fetch


def test_an_object_store_root_through_fsspec(env):
    writer = ArchiveWriter(archive_at(env, "memory://koywe-archive-test/"))
    rows = issue(env, {"PE-1": payloads()["PE-1"]}, on_recorded=writer.on_recorded)
    assert writer.close().files == 2
    records = archive_files_for(env.ledger, rows["PE-1"]["id"])
    assert all(r["path"].startswith("memory://koywe-archive-test/16268/PE/2026-11-20/") for r in records)
    assert verify_archive(env.ledger)["checksums_ok"] == 2
