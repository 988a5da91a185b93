"""Where the app's uploads live: unguessable ids, consent in the key, never a label."""

from __future__ import annotations

import pytest

from fruits import appuploads


def test_ids_are_128_random_bits_that_spark_never_hides() -> None:
    ids = {appuploads.new_upload_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(len(i) == 32 and appuploads.is_upload_id(i) for i in ids)
    assert not any(i.startswith((".", "_")) for i in ids)


def test_consent_is_part_of_the_key() -> None:
    upload_id = "0123456789abcdef0123456789abcdef"
    assert appuploads.upload_key(upload_id, True) == f"app/consented/{upload_id}.jpg"
    assert appuploads.upload_key(upload_id, False, "png") == f"app/private/{upload_id}.png"


@pytest.mark.parametrize("bad", ["../etc/passwd", "0123456789ABCDEF0123456789ABCDEF", "abc", "", "0" * 33])
def test_a_key_is_built_only_from_a_real_id(bad: str) -> None:
    with pytest.raises(ValueError):
        appuploads.upload_key(bad, True)


@pytest.mark.parametrize(
    ("path", "root", "parsed"),
    [
        (
            "file:/l/app/consented/0123456789abcdef0123456789abcdef.jpg",
            "/l",
            ("0123456789abcdef0123456789abcdef", True),
        ),
        (
            "s3a://b/images/app/private/0123456789abcdef0123456789abcdef.png",
            "s3://b/images/",
            ("0123456789abcdef0123456789abcdef", False),
        ),
        ("file:/l/app/other/0123456789abcdef0123456789abcdef.jpg", "/l", None),
        ("file:/l/app/consented/x.jpg", "/l", None),
        ("file:/l/Kaki/0123456789abcdef0123456789abcdef.jpg", "/l", None),
        ("file:/elsewhere/app/consented/0123456789abcdef0123456789abcdef.jpg", "/l", None),
    ],
)
def test_a_path_says_which_upload_it_is(path: str, root: str, parsed) -> None:
    assert appuploads.parse_upload_path(path, root) == parsed
