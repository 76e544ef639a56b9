"""Every per-entry error shape of the batch routes (`raftbox.api.batch`), from every failure
tag the state machine can give, decodes with the SDK's own deserializer (dropbox==12.2.4) to the
member it means, not to the catch-all `other` (except where we mean `other`)."""

from __future__ import annotations

import pytest
from dropbox import files
from dropbox.stone_serializers import json_compat_obj_decode

from raftbox.api import batch
from raftbox.meta.commands import MetaError


def decode(validator, obj, strict: bool = True):
    """As the SDK decodes an answer (strict=False: an unknown tag is the catch-all `other`), and
    strictly too unless the shape means the catch-all (no unknown tag or field anywhere)."""
    if strict:
        json_compat_obj_decode(validator, obj, strict=True)
    return json_compat_obj_decode(validator, obj, strict=False)


@pytest.mark.parametrize(
    "tags,check",
    [
        (["from_lookup", "not_found"], lambda e: e.get_relocation_error().get_from_lookup().is_not_found()),
        (["from_lookup", "malformed_path"], lambda e: e.get_relocation_error().get_from_lookup().is_malformed_path()),
        (["to", "conflict", "file"], lambda e: e.get_relocation_error().get_to().get_conflict().is_file()),
        (["to", "no_write_permission"], lambda e: e.get_relocation_error().get_to().is_no_write_permission()),
        (["cant_move_folder_into_itself"], lambda e: e.get_relocation_error().is_cant_move_folder_into_itself()),
        (["duplicated_or_nested_paths"], lambda e: e.get_relocation_error().is_duplicated_or_nested_paths()),
        (["too_many_files"], lambda e: e.get_relocation_error().is_too_many_files()),
        (["too_many_write_operations"], lambda e: e.is_too_many_write_operations()),
        (["internal_error"], lambda e: e.is_internal_error()),
        (["invalid_command"], lambda e: e.is_internal_error()),
    ],
)  # fmt: skip
def test_relocation_failures(tags, check) -> None:
    obj = batch.relocation_failure(MetaError(tags))
    entry = decode(files.RelocationBatchResultEntry_validator, obj)
    assert entry.is_failure() and check(entry.get_failure()), obj


@pytest.mark.parametrize(
    "tags,check",
    [
        (["path_lookup", "not_found"], lambda e: e.get_path_lookup().is_not_found()),
        (["path_lookup", "not_file"], lambda e: e.get_path_lookup().is_not_file()),
        (["path_write", "conflict", "file"], lambda e: e.get_path_write().get_conflict().is_file()),
        (["too_many_files"], lambda e: e.is_too_many_files()),
        (["too_many_write_operations"], lambda e: e.is_too_many_write_operations()),
        (["internal_error"], lambda e: e.is_other()),
    ],
)  # fmt: skip
def test_delete_failures(tags, check) -> None:
    obj = batch.delete_failure(MetaError(tags))
    entry = decode(
        files.DeleteBatchResultEntry_validator, obj, strict="internal_error" not in str(obj)
    )
    assert entry.is_failure() and check(entry.get_failure()), obj


@pytest.mark.parametrize(
    "tags,check",
    [
        (["path", "conflict", "folder"], lambda e: e.get_path().get_conflict().is_folder()),
        (["path", "malformed_path"], lambda e: e.get_path().is_malformed_path()),
        (["path", "no_write_permission"], lambda e: e.get_path().is_no_write_permission()),
        (["too_many_write_operations"], lambda e: e.get_path().is_too_many_write_operations()),
        (["internal_error"], lambda e: e.is_other()),
    ],
)  # fmt: skip
def test_create_folder_failures(tags, check) -> None:
    obj = batch.create_folder_failure(MetaError(tags))
    entry = decode(
        files.CreateFolderBatchResultEntry_validator, obj, strict="internal_error" not in str(obj)
    )
    assert entry.is_failure() and check(entry.get_failure()), obj
