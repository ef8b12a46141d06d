from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import PreflightError
from lab.estate import images

INPUTS = images.BaseInputs(
    "bookworm", ("python3", "ca-certificates"), "deb http://m/ x main", (("corp.crt", "PEM"),)
)


def test_base_hash_is_stable_and_ignores_package_order() -> None:
    swapped = images.BaseInputs(
        "bookworm", ("ca-certificates", "python3"), INPUTS.apt_sources, INPUTS.extra_cas
    )
    assert images.base_hash(INPUTS) == images.base_hash(swapped)
    assert len(images.base_hash(INPUTS)) == 64


@pytest.mark.parametrize(
    "changed",
    [
        images.BaseInputs("trixie", INPUTS.packages, INPUTS.apt_sources, INPUTS.extra_cas),
        images.BaseInputs("bookworm", ("python3",), INPUTS.apt_sources, INPUTS.extra_cas),
        images.BaseInputs(
            "bookworm", INPUTS.packages, "deb http://other/ x main", INPUTS.extra_cas
        ),
        images.BaseInputs("bookworm", INPUTS.packages, INPUTS.apt_sources, ()),
        images.BaseInputs("bookworm", INPUTS.packages, INPUTS.apt_sources, INPUTS.extra_cas, "v2"),
    ],
)
def test_any_input_change_changes_the_base_hash(changed: images.BaseInputs) -> None:
    assert images.base_hash(changed) != images.base_hash(INPUTS)


def test_host_hash_follows_base_and_context(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    base = images.ImageRef("base", "cdlab/base", "a" * 64)
    h1 = images.host_hash(base, images.tree_hash(tmp_path))
    assert h1 == images.host_hash(base, images.tree_hash(tmp_path))
    (tmp_path / "Dockerfile").write_text("FROM x\nRUN true\n")
    h2 = images.host_hash(base, images.tree_hash(tmp_path))
    assert h2 != h1
    assert (
        images.host_hash(
            images.ImageRef("base", "cdlab/base", "b" * 64), images.tree_hash(tmp_path)
        )
        != h2
    )


def test_image_ref_tags_by_hash_prefix() -> None:
    ref = images.ImageRef("host", "cdlab/host", "0123456789abcdef" * 4)
    assert ref.ref == "cdlab/host:0123456789ab"


def test_mmdebstrap_argv_adds_extra_cas_only_when_there_are_some(tmp_path: Path) -> None:
    argv = images.mmdebstrap_argv(INPUTS, tmp_path / "s", tmp_path / "ca", tmp_path / "b.tar")
    assert argv[:3] == ["mmdebstrap", "--variant=apt", "--include=python3,ca-certificates"]
    assert argv[-3:] == ["bookworm", str(tmp_path / "b.tar"), str(tmp_path / "s")]
    assert any("update-ca-certificates" in a for a in argv)
    none = images.BaseInputs("bookworm", INPUTS.packages, INPUTS.apt_sources, ())
    plain = images.mmdebstrap_argv(none, tmp_path / "s", tmp_path / "ca", tmp_path / "b.tar")
    assert not any("update-ca-certificates" in a for a in plain)


def test_extra_ca_setting() -> None:
    assert images.extra_ca_setting({}) == images.EXTRA_CA_DIR
    assert images.extra_ca_setting({"CDLAB_EXTRA_CA": "none"}) is None
    assert images.extra_ca_setting({"CDLAB_EXTRA_CA": "/x/y.pem"}) == Path("/x/y.pem")


def test_read_base_inputs_takes_the_given_sources_and_cas(tmp_path: Path) -> None:
    (tmp_path / "s.sources").write_text("Types: deb\n")
    (tmp_path / "cas").mkdir()
    (tmp_path / "cas" / "one.crt").write_text("PEM1")
    got = images.read_base_inputs(
        {"CDLAB_APT_SOURCES": str(tmp_path / "s.sources"), "CDLAB_EXTRA_CA": str(tmp_path / "cas")}
    )
    assert got.apt_sources.startswith("Types: deb\n")
    assert got.extra_cas == (("one.crt", "PEM1"),)


def test_read_base_inputs_rejects_a_missing_ca_path(tmp_path: Path) -> None:
    (tmp_path / "s.list").write_text("deb x y z\n")
    with pytest.raises(PreflightError, match="neither a folder nor a file"):
        images.read_base_inputs(
            {
                "CDLAB_APT_SOURCES": str(tmp_path / "s.list"),
                "CDLAB_EXTRA_CA": str(tmp_path / "missing"),
            }
        )
