"""The image builds on linux/arm64 as on linux/amd64, checked offline.

`image_build/wheels.json` records which pins ship wheels for each platform (pip resolved the lock
for both when `make image-wheels` last ran); the Dockerfile must build the rest in its build
stage and keep compilers out of the runtime stage. The checker itself is tested on Dockerfiles
and records that must fail.
"""

from __future__ import annotations

import copy
import io
import tarfile
import zipfile

import pytest

from image_build.wheels import (
    ARCHES,
    DOCKERFILE,
    REQUIREMENTS,
    dockerfile_stages,
    load_record,
    problems,
    read_pins,
    sdist_needs,
    sdist_pins,
)


@pytest.fixture(scope="module")
def record() -> dict:
    return load_record()


def test_the_dockerfile_builds_every_pin_on_both_platforms(record: dict) -> None:
    assert problems(REQUIREMENTS.read_text(), record, DOCKERFILE.read_text()) == []


def test_the_record_covers_the_lock_on_both_platforms(record: dict) -> None:
    pins = {f"{name}=={version}" for name, version in read_pins(REQUIREMENTS.read_text()).items()}
    assert set(record["files"]) == pins
    for files in record["files"].values():
        assert set(files) == set(ARCHES)
    # The case that broke arm64 builds: mage-ai pins psutil 5.9.8, C, no aarch64 wheel.
    psutil = next(pin for pin in record["files"] if pin.startswith("psutil=="))
    assert sdist_pins(record)[psutil] == ["aarch64"]
    assert record["sdist_builds"][psutil] == ["c"]


def test_a_build_stage_without_a_compiler_is_refused(record: dict) -> None:
    dockerfile = DOCKERFILE.read_text().replace(" build-essential", " ca-certificates")
    found = problems(REQUIREMENTS.read_text(), record, dockerfile)
    assert any("psutil" in p and "linux/aarch64" in p and "needs c" in p for p in found), found


def test_a_single_stage_image_or_a_compiler_at_run_time_is_refused(record: dict) -> None:
    single = """FROM python:3.11.16-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends build-essential git
COPY requirements.txt ./
RUN pip install -r requirements.txt
"""
    found = problems(REQUIREMENTS.read_text(), record, single)
    assert any("runtime stage" in p and "build stage" in p for p in found), found
    assert any("installs compilers: build-essential" in p for p in found), found

    not_copied = DOCKERFILE.read_text().replace("COPY --from=build /opt/venv", "COPY /opt/venv")
    found = problems(REQUIREMENTS.read_text(), record, not_copied)
    assert any("does not COPY --from the build stage" in p for p in found), found


def test_a_changed_lock_makes_the_record_stale(record: dict) -> None:
    lock = REQUIREMENTS.read_text().replace("psutil==5.9.8", "psutil==7.0.0")
    found = problems(lock, record, DOCKERFILE.read_text())
    assert len(found) == 1 and "make image-wheels" in found[0] and "psutil" in found[0]


def test_an_sdist_needing_rust_is_refused(record: dict) -> None:
    changed = copy.deepcopy(record)
    pin = next(p for p in changed["files"] if p.startswith("docopt=="))
    changed["sdist_builds"][pin] = ["rust"]
    found = problems(REQUIREMENTS.read_text(), changed, DOCKERFILE.read_text())
    assert any(pin in p and "needs rust" in p and "cargo+rustc" in p for p in found), found

    del changed["sdist_builds"][pin]
    found = problems(REQUIREMENTS.read_text(), changed, DOCKERFILE.read_text())
    assert any(pin in p and "no recorded build needs" in p for p in found), found


def _tar(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_sdist_needs_are_read_from_the_sources() -> None:
    assert sdist_needs(_tar({"p-1/setup.py": "", "p-1/p/__init__.py": ""}), "p-1.tar.gz") == []
    c_sources = {"psutil-5.9.8/setup.py": "", "psutil-5.9.8/psutil/_psutil_linux.c": ""}
    assert sdist_needs(_tar(c_sources), "psutil-5.9.8.tar.gz") == ["c"]
    maturin = {"r-1/pyproject.toml": '[build-system]\nrequires = ["maturin>=1"]\n'}
    assert sdist_needs(_tar(maturin), "r-1.tar.gz") == ["rust"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("z-1/src/lib.rs", "")
        archive.writestr("z-1/Cargo.toml", "")
        archive.writestr("z-1/ext.cpp", "")
    assert sdist_needs(buffer.getvalue(), "z-1.zip") == ["c++", "rust"]


def test_dockerfile_stages_are_parsed_with_their_apt_packages() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert [stage.name for stage in stages] == ["build", None]
    build, runtime = stages
    assert "build-essential" in build.apt_packages() and build.installs_lock()
    assert runtime.apt_packages() == {"git"} and not runtime.installs_lock()
    assert runtime.copies_from() == {"build"}
