"""Tests for mirrorppr_cli.inputs: expanding specs and naming outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirrorppr_cli.errors import InputError, UsageError
from mirrorppr_cli.inputs import (
    IMAGE_SUFFIXES,
    check_unique_outputs,
    expand_inputs,
    is_batch,
    output_path_for,
)


def touch(folder: Path, *names: str) -> None:
    """Create empty files (contents do not matter to inputs)."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def shoot(tmp_path: Path) -> Path:
    """A folder with images, non-images, hidden files, temp files and a subfolder."""
    folder = tmp_path / "shoot"
    touch(
        folder,
        "b.png", "a.JPG", "c.webp", "d.tiff", "e.bmp", "notes.txt", "raw.cr2",
        ".hidden.jpg", ".out.jpg.1a2b3c4d.part", "half.jpg.part", "sub/deep.jpg",
    )  # fmt: skip
    (folder / "folder.jpg").mkdir()  # a directory with an image suffix
    return folder


# --------------------------------------------------------------------------- #
# expand_inputs / is_batch
# --------------------------------------------------------------------------- #


def test_single_file_is_returned_as_is(shoot: Path) -> None:
    assert expand_inputs(shoot / "b.png") == [shoot / "b.png"]
    assert expand_inputs(str(shoot / "notes.txt")) == [shoot / "notes.txt"]  # reader judges it
    assert not is_batch(shoot / "b.png")


def test_folder_lists_images_sorted_non_recursive(shoot: Path) -> None:
    found = expand_inputs(shoot)

    assert [p.name for p in found] == ["a.JPG", "b.png", "c.webp", "d.tiff", "e.bmp"]
    assert all(p.parent == shoot for p in found)
    assert is_batch(shoot)


def test_empty_folder_says_what_was_looked_for(tmp_path: Path) -> None:
    touch(tmp_path, "readme.md", ".secret.png")

    with pytest.raises(InputError) as info:
        expand_inputs(tmp_path)

    message = str(info.value)
    assert str(tmp_path) in message and ".jpg" in message and "no image files" in message
    assert info.value.exit_code == 3


def test_glob_matches_image_files_sorted(shoot: Path) -> None:
    found = expand_inputs(str(shoot / "*"))
    jpgs = expand_inputs(f"{shoot}/[ab].*")

    assert [p.name for p in found] == ["a.JPG", "b.png", "c.webp", "d.tiff", "e.bmp"]
    assert [p.name for p in jpgs] == ["a.JPG", "b.png"]
    assert is_batch(f"{shoot}/b.p?g")  # a glob is a batch even with one match
    assert expand_inputs(f"{shoot}/b.p?g") == [shoot / "b.png"]


def test_glob_with_no_match(shoot: Path) -> None:
    pattern = f"{shoot}/*.gif"

    with pytest.raises(InputError) as info:
        expand_inputs(pattern)

    assert pattern in str(info.value) and "match" in str(info.value)


def test_glob_skips_hidden_and_part_files(shoot: Path) -> None:
    for pattern in (f"{shoot}/*.part", f"{shoot}/.*", f"{shoot}/half*"):
        with pytest.raises(InputError):
            expand_inputs(pattern)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        expand_inputs(tmp_path / "nope.jpg")
    assert not is_batch(tmp_path / "nope.jpg")


def test_existing_file_with_glob_characters_is_not_a_batch(tmp_path: Path) -> None:
    touch(tmp_path, "shot[1].jpg")
    literal = tmp_path / "shot[1].jpg"

    assert not is_batch(literal)
    assert expand_inputs(literal) == [literal]


def test_suffix_set() -> None:
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp"} == IMAGE_SUFFIXES


# --------------------------------------------------------------------------- #
# output_path_for
# --------------------------------------------------------------------------- #


def test_single_output_next_to_source(tmp_path: Path) -> None:
    source = tmp_path / "IMG_01.JPG"

    assert output_path_for(source, None, batch=False) == tmp_path / "IMG_01_retouched.jpg"
    assert output_path_for(source, None, batch=False, suffix="-v2") == tmp_path / "IMG_01-v2.jpg"


def test_single_output_file_or_folder(tmp_path: Path) -> None:
    source = tmp_path / "in" / "face.png"
    existing_folder = tmp_path / "results"
    existing_folder.mkdir()

    assert output_path_for(source, tmp_path / "x.jpg", batch=False) == tmp_path / "x.jpg"
    assert (
        output_path_for(source, existing_folder, batch=False)
        == existing_folder / "face_retouched.png"
    )
    assert (
        output_path_for(source, f"{tmp_path}/new/", batch=False)
        == tmp_path / "new" / "face_retouched.png"
    )


@pytest.mark.parametrize(
    ("format", "ext"),
    [("JPEG", ".jpg"), ("jpg", ".jpg"), ("png", ".png"), ("tiff", ".tif"), ("webp", ".webp")],
)
def test_extension_from_format(tmp_path: Path, format: str, ext: str) -> None:
    source = tmp_path / "face.Jpeg"

    assert output_path_for(source, None, batch=False, format=format).name == f"face_retouched{ext}"
    assert output_path_for(source, None, batch=False).name == "face_retouched.jpeg"


def test_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        output_path_for(tmp_path / "a.jpg", None, batch=False, format="gif")


def test_batch_outputs(tmp_path: Path) -> None:
    source = tmp_path / "shoot" / "a.png"

    assert output_path_for(source, None, batch=True) == tmp_path / "shoot" / "a_retouched.png"
    assert output_path_for(source, tmp_path / "out", batch=True) == tmp_path / "out" / (
        "a_retouched.png"
    )
    existing_file = tmp_path / "file.txt"
    existing_file.write_text("x")
    with pytest.raises(UsageError, match="output folder"):
        output_path_for(source, existing_file, batch=True)


def test_output_never_overwrites_its_source(tmp_path: Path) -> None:
    source = tmp_path / "a.jpg"

    with pytest.raises(UsageError, match="overwrite the input"):
        output_path_for(source, None, batch=False, suffix="")
    with pytest.raises(UsageError, match="overwrite the input"):
        output_path_for(source, source, batch=False)
    assert output_path_for(source, None, batch=False, suffix="", format="png").name == "a.png"


# --------------------------------------------------------------------------- #
# check_unique_outputs
# --------------------------------------------------------------------------- #


def test_collision_between_two_sources(tmp_path: Path) -> None:
    sources = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.jpg"]
    out = tmp_path / "out"
    pairs = [(s, output_path_for(s, out, batch=True, format="png")) for s in sources]

    with pytest.raises(UsageError) as info:
        check_unique_outputs(pairs)

    message = str(info.value)
    assert "a.jpg" in message and "a.png" in message and "a_retouched.png" in message
    assert info.value.exit_code == 2


def test_distinct_outputs_pass(tmp_path: Path) -> None:
    sources = [tmp_path / "a.jpg", tmp_path / "a.png"]
    pairs = [(s, output_path_for(s, None, batch=True)) for s in sources]

    check_unique_outputs(pairs)  # a_retouched.jpg and a_retouched.png: no error
    check_unique_outputs([])


def test_output_that_is_another_input(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"

    with pytest.raises(UsageError, match="also an input"):
        check_unique_outputs([(a, b), (b, tmp_path / "b_retouched.jpg")])


def test_collision_ignores_letter_case(tmp_path: Path) -> None:
    pairs = [(tmp_path / "A.jpg", tmp_path / "o" / "A_r.jpg"),
             (tmp_path / "a.jpg", tmp_path / "o" / "a_r.jpg")]  # fmt: skip

    with pytest.raises(UsageError):
        check_unique_outputs(pairs)
