"""Wheels for the image's platforms, and whether the Dockerfile can build every pin without one.

The image installs the lock (requirements.txt) on linux/amd64 and on linux/arm64 (Apple Silicon,
Graviton). A pin with no wheel for a platform is built from its sdist there: psutil 5.9.8 (pinned
by mage-ai 0.9.80) has no Linux aarch64 wheel and compiles C. So the Dockerfile's build stage
needs what such sdists need, and the runtime stage should have no compiler at all.

`wheels.json` records, for every pin and both platforms, the file pip installs there (found by
pip itself, resolving the lock for that platform), and for every sdist what building it needs
(read from its sources). `problems()` checks requirements.txt and the Dockerfile against that
record offline; the test suite runs it. `python -m image_build.wheels refresh` (`make
image-wheels`) rewrites the record and needs PyPI; run it after `make lock`: the check fails
while the record and the lock disagree, so the record cannot silently go stale.

>>> pins = read_pins("a-b==1.0\\n    # via x\\nc==2\\n")
>>> pins
{'a-b': '1.0', 'c': '2'}
>>> is_sdist("psutil-5.9.8.tar.gz"), is_sdist("psutil-5.9.8-cp36-abi3-manylinux2014_x86_64.whl")
(True, False)
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).with_name("wheels.json")
REQUIREMENTS = REPO_ROOT / "requirements.txt"
DOCKERFILE = REPO_ROOT / "Dockerfile"

INDEX_URL = "https://pypi.org/simple"
PYTHON_VERSION = "3.11"  # the image's base, python:3.11.x-slim-bookworm
GLIBC_MINOR = 36  # Debian bookworm's glibc 2.36: manylinux_2_17 ... manylinux_2_36 wheels fit
ARCHES = ("x86_64", "aarch64")  # linux/amd64, linux/arm64

# What an sdist's sources need to build, and the Debian packages that provide it: a need is met
# when the build stage installs every package of one of its alternatives.
PROVIDERS: dict[str, tuple[frozenset[str], ...]] = {
    "c": (frozenset({"build-essential"}), frozenset({"gcc", "libc6-dev"})),
    "c++": (frozenset({"build-essential"}), frozenset({"g++", "libc6-dev"})),
    "rust": (frozenset({"cargo", "rustc"}),),
    "fortran": (frozenset({"gfortran"}),),
}
COMPILERS = frozenset({"build-essential", "gcc", "g++", "clang", "cargo", "rustc", "gfortran"})
_SOURCE_NEEDS = {
    ".c": "c",
    ".pyx": "c",  # Cython compiles to C
    ".cc": "c++",
    ".cpp": "c++",
    ".cxx": "c++",
    ".f": "fortran",
    ".f90": "fortran",
}
_RUST_BACKENDS = ("maturin", "setuptools-rust", "setuptools_rust")


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of `-_.` as one `-`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> dict[str, str]:
    """`name==version` lines of a lock, by normalized name."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", text, flags=re.M)
    return {normalize(name): version for name, version in pins}


def is_sdist(filename: str) -> bool:
    return not filename.endswith(".whl")


def platform_tags(arch: str) -> list[str]:
    """The manylinux tags a wheel may carry and still install on the image (glibc 2.36)."""
    return [f"manylinux2014_{arch}"] + [
        f"manylinux_2_{minor}_{arch}" for minor in range(17, GLIBC_MINOR + 1)
    ]


# --- the record, refreshed from the package index ----------------------------------------------


def resolve_files(requirements: Path, arch: str) -> dict[str, str]:
    """The file pip would install for every pin on linux/`arch`: a wheel, or the sdist.

    pip resolves only binaries first (`--only-binary=:all:`, so no sdist is ever built here);
    a pin it cannot satisfy that way has no wheel, and its sdist is looked up afterwards.
    """
    pins = read_pins(requirements.read_text())
    wanted = dict(pins)
    files: dict[str, str] = {}
    while wanted:
        found, missing = _pip_binary_report(wanted, arch)
        files.update(found)
        if missing is None:
            break
        files[missing] = sdist_filename(missing, wanted.pop(missing))
    return {name: files[name] for name in sorted(files)}


def _pypi_only_env() -> dict[str, str]:
    """pip's environment without local configuration: no pip.conf, no PIP_* find-links,
    extra indexes or constraints (what PyPI offers is the question), TLS settings kept."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _pip_binary_report(pins: Mapping[str, str], arch: str) -> tuple[dict[str, str], str | None]:
    """(files pip picked, None) or ({}, the first pin without a wheel for `arch`)."""
    platforms = [arg for tag in platform_tags(arch) for arg in ("--platform", tag)]
    with tempfile.TemporaryDirectory() as tmp:
        lock = Path(tmp) / "requirements.txt"
        lock.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
            "--ignore-installed", "--only-binary=:all:", "--target", str(Path(tmp) / "target"),
            "--python-version", PYTHON_VERSION, "--implementation", "cp",
            "--abi", "cp" + PYTHON_VERSION.replace(".", ""), *platforms,
            "--index-url", INDEX_URL, "--report", str(report), "-r", str(lock),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=_pypi_only_env())
        if done.returncode != 0:
            match = re.search(r"No matching distribution found for ([^\s=<>!~]+)", done.stderr)
            if match is None:
                raise RuntimeError(f"pip failed for {arch}:\n{done.stderr[-3000:]}")
            return {}, normalize(match.group(1))
        items = json.loads(report.read_text())["install"]
    return {
        normalize(item["metadata"]["name"]): item["download_info"]["url"].rsplit("/", 1)[1]
        for item in items
    }, None


@functools.cache
def _sdist_url(name: str, version: str) -> tuple[str, str]:
    """(filename, url) of the sdist of name==version, from PyPI's simple index (PEP 691 JSON,
    the API pip itself reads)."""
    request = urllib.request.Request(
        f"{INDEX_URL}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    for entry in files:
        filename = entry["filename"]
        stem = re.sub(r"\.(tar\.gz|zip)$", "", filename)
        if stem == filename or "-" not in stem:
            continue
        project, _, release = stem.rpartition("-")
        if normalize(project) == name and release == version:
            return filename, entry["url"]
    raise RuntimeError(f"{name}=={version} has neither a wheel for the image nor an sdist")


def sdist_filename(name: str, version: str) -> str:
    return _sdist_url(name, version)[0]


def sdist_needs(archive: bytes, filename: str) -> list[str]:
    """What building this sdist needs beyond Python: "c", "c++", "rust", "fortran"."""
    names: list[str]
    texts: dict[str, str] = {}
    if filename.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            names = zipped.namelist()
            for n in names:
                if n.count("/") == 1 and n.endswith("/pyproject.toml"):
                    texts[n] = zipped.read(n).decode(errors="replace")
    else:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tarred:
            names = tarred.getnames()
            for member in tarred.getmembers():
                if member.name.count("/") == 1 and member.name.endswith("/pyproject.toml"):
                    extracted = tarred.extractfile(member)
                    if extracted is not None:
                        texts[member.name] = extracted.read().decode(errors="replace")
    needs = {need for n in names for suffix, need in _SOURCE_NEEDS.items() if n.endswith(suffix)}
    if any(n.endswith("/Cargo.toml") for n in names) or any(
        backend in text for text in texts.values() for backend in _RUST_BACKENDS
    ):
        needs.add("rust")
    return sorted(needs)


def refresh(requirements: Path = REQUIREMENTS, record: Path = RECORD) -> dict:
    """Rewrite the record from PyPI: one pip resolution per platform, then the few sdists."""
    files = {arch: resolve_files(requirements, arch) for arch in ARCHES}
    pins = read_pins(requirements.read_text())
    builds: dict[str, list[str]] = {}
    for name in sorted(pins):
        if any(is_sdist(files[arch][name]) for arch in ARCHES):
            filename, url = _sdist_url(name, pins[name])
            with urllib.request.urlopen(url, timeout=300) as response:
                builds[f"{name}=={pins[name]}"] = sdist_needs(response.read(), filename)
    data = {
        "about": "written by `make image-wheels` (python -m image_build.wheels refresh)",
        "python": PYTHON_VERSION,
        "platforms": {arch: f"manylinux_2_17 .. manylinux_2_{GLIBC_MINOR}" for arch in ARCHES},
        "files": {
            f"{name}=={pins[name]}": {arch: files[arch][name] for arch in ARCHES}
            for name in sorted(pins)
        },
        "sdist_builds": builds,
    }
    record.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


# --- the check, offline -----------------------------------------------------------------------


@dataclass
class Stage:
    """One `FROM` of a Dockerfile and the instructions that follow it."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def runs(self) -> list[str]:
        return [arg for ins, arg in self.instructions if ins == "RUN"]

    def apt_packages(self) -> set[str]:
        """Packages named after `apt-get install` in this stage's RUN instructions."""
        packages: set[str] = set()
        for run in self.runs():
            for command in re.split(r"&&|;|\|\|", run):
                words = shlex.split(command)
                if words[:1] in (["apt-get"], ["apt"]) and "install" in words:
                    after = words[words.index("install") + 1 :]
                    packages.update(w for w in after if not w.startswith("-"))
        return packages

    def installs_lock(self) -> bool:
        return any(re.search(r"\bpip install\b.*-r requirements\.txt", run) for run in self.runs())

    def copies_from(self) -> set[str]:
        return {
            match.group(1)
            for ins, arg in self.instructions
            if ins == "COPY" and (match := re.search(r"--from=(\S+)", arg))
        }


def dockerfile_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile, continuation lines joined, comments dropped."""
    stages: list[Stage] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, argument = line.partition(" ")
        instruction, argument = instruction.upper(), argument.strip()
        if instruction == "FROM":
            parts = argument.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append((instruction, argument))
    return stages


def problems(requirements_text: str, record: Mapping, dockerfile_text: str) -> list[str]:
    """Why the image would not build the lock on every platform; empty when it would."""
    pins = {f"{n}=={v}" for n, v in read_pins(requirements_text).items()}
    recorded = set(record.get("files", {}))
    if pins != recorded:
        changed = sorted(pins ^ recorded)
        return [
            f"image_build/wheels.json does not match requirements.txt ({', '.join(changed[:5])}"
            f"{' ...' if len(changed) > 5 else ''}): run `make image-wheels`"
        ]
    found: list[str] = []
    stages = dockerfile_stages(dockerfile_text)
    if not stages:
        return ["the Dockerfile has no FROM"]
    builders = [stage for stage in stages if stage.installs_lock()]
    final = stages[-1]
    if len(builders) != 1:
        return [f"{len(builders)} stages install requirements.txt; the build stage should, once"]
    [build] = builders
    if build is final:
        found.append("the lock is installed in the runtime stage: build it in a build stage")
    elif build.name is None or build.name not in final.copies_from():
        found.append("the runtime stage does not COPY --from the build stage")
    if build.base != final.base:
        found.append(f"build stage {build.base} and runtime stage {final.base} differ")
    if compilers := sorted(final.apt_packages() & COMPILERS):
        found.append(f"the runtime stage installs compilers: {', '.join(compilers)}")
    installed = build.apt_packages()
    builds = record.get("sdist_builds", {})
    for pin, files in sorted(record["files"].items()):
        for arch in ARCHES:
            if not is_sdist(files[arch]):
                continue
            if pin not in builds:
                found.append(f"{pin} has no wheel for {arch} and no recorded build needs")
                continue
            for need in builds[pin]:
                if not any(option <= installed for option in PROVIDERS.get(need, ())):
                    options = " or ".join(
                        "+".join(sorted(option)) for option in PROVIDERS.get(need, ())
                    )
                    found.append(
                        f"{pin} has no wheel for linux/{arch} and its sdist needs {need}, which "
                        f"the build stage does not install ({options or 'no known package'})"
                    )
    return found


def sdist_pins(record: Mapping) -> dict[str, list[str]]:
    """Pin -> the platforms it is built from source on."""
    return {
        pin: [arch for arch in ARCHES if is_sdist(files[arch])]
        for pin, files in sorted(record["files"].items())
        if any(is_sdist(files[arch]) for arch in ARCHES)
    }


def load_record(path: Path = RECORD) -> dict:
    return json.loads(path.read_text())


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m image_build.wheels", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["refresh", "check"])
    args = parser.parse_args(None if argv is None else list(argv))
    record = refresh() if args.command == "refresh" else load_record()
    for pin, arches in sdist_pins(record).items():
        needs = ", ".join(record["sdist_builds"].get(pin, [])) or "nothing but Python"
        print(f"{pin}: built from source on {', '.join(arches)} (needs {needs})")
    found = problems(REQUIREMENTS.read_text(), record, DOCKERFILE.read_text())
    for problem in found:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
