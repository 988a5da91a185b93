"""The source rules: image names, labels from folders, and the Spark reader on real files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fruits import source
from fruits.spark import qualify


# --------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    ("path", "root", "label"),
    [
        ("file:/data/subset/Apple Red 1/r_12_100.jpg", None, "Apple Red 1"),
        ("file:/data/subset/Apple Red 1/r_12_100.jpg", "/data/subset", "Apple Red 1"),
        ("file:///data/subset/Apple Red 1/r_12_100.jpg", "file:/data/subset/", "Apple Red 1"),
        ("s3a://bucket/images/Pepper Red/1_100.jpg", "s3a://bucket/images", "Pepper Red"),
        ("s3a://bucket/images/upload/2026/Kaki/x.png", "s3a://bucket/images/", "Kaki"),
        ("file:/landing/loose.jpg", "/landing", None),
        ("s3://bucket/images/loose.jpg", "s3://bucket/images/", None),
        ("file:/landing/Cherry+Wax%20Red/a.jpg", "/landing", "Cherry+Wax%20Red"),
        # the public app's uploads: their folders say consent, never a class
        ("file:/landing/app/consented/0123456789abcdef0123456789abcdef.jpg", "/landing", None),
        ("s3a://bucket/images/app/private/0123456789abcdef0123456789abcdef.png", "s3://bucket/images/", None),
        ("file:/landing/apple/a.jpg", "/landing", "apple"),
        ("file:/landing/Kaki/app/a.jpg", "/landing", "app"),
    ],
)
def test_label_is_the_parent_folder_and_null_at_the_root(path: str, root: str | None, label: str | None) -> None:
    assert source.label_from_path(path, root) == label


def test_image_names_are_case_insensitive_and_hidden_files_are_not_images() -> None:
    assert source.is_image_name("a/B.JPG") and source.is_image_name("x.jpeg") and source.is_image_name("y.Png")
    for name in ("a/.x.jpg", "a/_x.jpg", "a/x.jpg.tmp", "a/x.jpg._COPYING_", "a/x.gif", "a/x.txt"):
        assert not source.is_image_name(name), name
    assert source.IMAGE_GLOB == "*.{[jJ][pP][gG],[jJ][pP][eE][gG],[pP][nN][gG]}"


def test_hidden_folders_are_those_under_the_root() -> None:
    assert source.in_hidden_folder("images/_staging/Kaki/a.jpg", "images/")
    assert source.in_hidden_folder("images/Kaki/.partial/a.jpg", "images/")
    assert not source.in_hidden_folder("images/Kaki/a.jpg", "images/")
    assert not source.in_hidden_folder("_root/images/Kaki/a.jpg", "_root/images/")  # the root itself may be


def test_reader_takes_images_in_any_case_and_skips_hidden_and_partial_files(spark, data_dir: Path, tmp_path: Path):
    jpg = next((data_dir / "subset" / "Limes").glob("*.jpg"))
    layout = [
        "Limes/a.jpg",
        "Limes/B.JPG",
        "Limes/c.jpeg",
        "Limes/d.PNG",
        "Limes/sub/e.jpg",
        "loose.jpg",
        # never images for the pipeline:
        "Limes/.f.jpg",
        "Limes/_g.jpg",
        "Limes/h.jpg._COPYING_",
        "Limes/i.jpg.tmp",
        "_tmp/j.jpg",
        ".k/l.jpg",
        "Limes/m.txt",
    ]
    for rel in layout:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(jpg, tmp_path / rel)
    found = sorted(
        r.path.split(str(tmp_path))[1] for r in source.read_images(spark, str(tmp_path)).select("path").collect()
    )
    assert found == ["/Limes/B.JPG", "/Limes/a.jpg", "/Limes/c.jpeg", "/Limes/d.PNG", "/Limes/sub/e.jpg", "/loose.jpg"]


def test_native_label_column_matches_the_python_rule(spark, tmp_path: Path) -> None:
    root = "file:" + str(tmp_path)
    paths = [
        f"{root}/Apple Red 1/r_1_100.jpg",
        f"{root}/Cherry Wax Red/x+y.jpg",
        f"{root}/2026/11/Kaki/a.jpg",
        f"{root}/loose.jpg",
        f"{root}/app/consented/0123456789abcdef0123456789abcdef.jpg",
        f"{root}/app/private/0123456789abcdef0123456789abcdef.png",
        f"{root}/apple/a.jpg",
        "s3a://bucket/images/Pear/p.jpg",
        "s3a://bucket/images/p.jpg",
    ]
    # The last two are outside the root: they keep their parent folder's name.
    expected = ["Apple Red 1", "Cherry Wax Red", "Kaki", None, None, None, "apple", "Pear", "images"]
    df = spark.createDataFrame([(p,) for p in paths], "path string")
    for rule_root in (str(tmp_path), root + "/"):
        native = [r.label for r in df.select(source.label_column("path", rule_root).alias("label")).collect()]
        assert native == expected
        assert [source.label_from_path(p, rule_root) for p in paths] == expected


def test_qualify_gives_the_form_spark_writes_in_path(spark, tmp_path: Path) -> None:
    assert qualify(spark, str(tmp_path)) == "file:" + str(tmp_path)


def write_log(path: Path, lines: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("v1\n" + "".join(json.dumps(line) + "\n" for line in lines))


def write_offsets(checkpoint: Path, batch: int, log_offset: int) -> None:
    write_log(
        checkpoint / "offsets" / str(batch), [{"batchWatermarkMs": 0, "batchTimestampMs": 1}, {"logOffset": log_offset}]
    )


def test_batch_files_come_from_the_source_log_range_of_the_batch_offsets(spark, tmp_path: Path) -> None:
    log = tmp_path / "sources" / "0"
    # Log offsets 0..9 were compacted into 9.compact (the plain files are gone); 10 and 11 are plain.
    write_log(
        log / "9.compact",
        [
            {"path": "file:///data/Kaki/old.jpg", "timestamp": 1, "batchId": 8},
            {"path": "file:///data/Kaki/c%2Bd.jpg", "timestamp": 1, "batchId": 9},
        ],
    )
    write_log(log / "10", [{"path": "file:///data/Apple%20Red%201/a.jpg", "timestamp": 1, "batchId": 10}])
    write_log(log / "11", [{"path": "file:///data/Kaki/b.jpg", "timestamp": 1, "batchId": 11}])
    # A crash between the source's log write (offset 10) and the batch's offset write: micro-batch 9
    # then covers log offsets 9..11, not 9 alone; micro-batch 8 is log offset 8.
    write_offsets(tmp_path, 7, 7)
    write_offsets(tmp_path, 8, 8)
    write_offsets(tmp_path, 9, 11)
    assert source.files_assigned_to_batch(spark, str(tmp_path), 8) == ["file:///data/Kaki/old.jpg"]
    assigned = source.files_assigned_to_batch(spark, str(tmp_path), 9)
    assert assigned == ["file:///data/Kaki/c%2Bd.jpg", "file:///data/Apple%20Red%201/a.jpg", "file:///data/Kaki/b.jpg"]
    # As Spark's `path` column spells them (FileStreamSource converts them with Hadoop's Path(URI)).
    assert source.as_path_column(spark, assigned) == [
        "file:/data/Kaki/c+d.jpg",
        "file:/data/Apple Red 1/a.jpg",
        "file:/data/Kaki/b.jpg",
    ]


def test_file_status_is_size_and_mtime_or_none_once_deleted(spark, tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    size, modified = source.file_status(spark, f"file:{tmp_path}/empty.jpg")
    assert size == 0 and abs(modified.timestamp() - (tmp_path / "empty.jpg").stat().st_mtime) < 1
    assert source.file_status(spark, f"file:{tmp_path}/deleted.jpg") is None
