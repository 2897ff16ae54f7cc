"""kubectl's three-way merge on plain JSON (kubectl_like/merge.py)."""

from __future__ import annotations

from kubectl_like.merge import apply_patch, same, three_way_patch


def test_removed_field_is_deleted_others_kept() -> None:
    original = {"spec": {"a": 1, "b": 2}, "metadata": {"labels": {"x": "1"}}}
    modified = {"spec": {"a": 1}, "metadata": {"labels": {"x": "1"}}}
    current = {"spec": {"a": 1, "b": 2, "c": 3}, "metadata": {"labels": {"x": "1", "by-hand": "y"}}}
    patch = three_way_patch(original, modified, current)
    assert patch == {"spec": {"b": None}}
    assert apply_patch(current, patch) == {"spec": {"a": 1, "c": 3},
                                           "metadata": {"labels": {"x": "1", "by-hand": "y"}}}


def test_no_original_never_deletes() -> None:
    assert three_way_patch(None, {"a": 1}, {"a": 1, "b": 2}) == {}
    assert three_way_patch(None, {"a": 2}, {"a": 1, "b": 2}) == {"a": 2}


def test_changed_values_and_lists_replace_whole() -> None:
    original = {"p": [1, 2], "m": {"k": "v"}}
    modified = {"p": [1], "m": {"k": "w"}}
    current = {"p": [1, 2], "m": {"k": "v", "other": "o"}}
    patch = three_way_patch(original, modified, current)
    assert patch == {"p": [1], "m": {"k": "w"}}
    assert apply_patch(current, patch) == {"p": [1], "m": {"k": "w", "other": "o"}}


def test_explicit_null_removes_and_is_idempotent() -> None:
    assert three_way_patch(None, {"a": None}, {"a": 1}) == {"a": None}
    assert three_way_patch(None, {"a": None}, {}) == {}


def test_field_removed_from_manifest_but_already_gone_is_no_op() -> None:
    assert three_way_patch({"a": 1, "b": 1}, {"a": 1}, {"a": 1}) == {}


def test_same_does_not_confuse_bool_and_int() -> None:
    assert not same(True, 1) and same(1, 1.0) and same({"a": [True]}, {"a": [True]})
    assert three_way_patch(None, {"s": True}, {"s": 1}) == {"s": True}


def test_apply_patch_does_not_touch_target() -> None:
    target = {"a": {"b": 1}}
    out = apply_patch(target, {"a": {"c": {"d": None, "e": 2}}})
    assert target == {"a": {"b": 1}} and out == {"a": {"b": 1, "c": {"e": 2}}}
