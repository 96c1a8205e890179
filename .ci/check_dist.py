"""Check the sdist and wheel in a dist/ folder before they are installed or uploaded.

- exactly one sdist and one wheel, both of the version in dlmanager/__init__.py;
- the wheel holds the package (every module of the source tree and py.typed)
  and its metadata, nothing else;
- the sdist holds the package, tests, docs, benchmarks, examples, README, changelog and
  license;
- a wheel built from the unpacked sdist, elsewhere, has the same file list.

Usage: python .ci/check_dist.py DIST_DIR
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDIST_MUST_HAVE = (
    "CHANGELOG.rst",
    "LICENSE",
    "README.rst",
    "RELEASING.rst",
    "setup.cfg",
    "pyproject.toml",
    "dlmanager/py.typed",
    "tests/conftest.py",
    "tests/server.py",
    "docs/conf.py",
    "docs/changelog.rst",
    "benchmarks/chunk_size.py",
    "examples/prefetch_builds.py",
)


def fail(message: str) -> None:
    print(f"check_dist: {message}", file=sys.stderr)
    sys.exit(1)


def source_version() -> str:
    with open(os.path.join(ROOT, "dlmanager", "__init__.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value
    fail("no __version__ in dlmanager/__init__.py")
    raise AssertionError


def package_files() -> set[str]:
    names = {"dlmanager/py.typed"}
    package = os.path.join(ROOT, "dlmanager")
    for folder, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        relative = os.path.relpath(folder, ROOT).replace(os.sep, "/")
        names.update(f"{relative}/{name}" for name in files if name.endswith(".py"))
    return names


def wheel_names(path: str) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        return sorted(wheel.namelist())


def check_wheel(path: str, version: str) -> list[str]:
    names = wheel_names(path)
    dist_info = f"dlmanager-{version}.dist-info/"
    package = {n for n in names if not n.startswith(dist_info)}
    if package != package_files():
        extra, missing = sorted(package - package_files()), sorted(package_files() - package)
        fail(f"wheel package files differ from the source tree: extra {extra}, missing {missing}")
    for required in ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE"):
        if dist_info + required not in names:
            fail(f"wheel lacks {dist_info}{required}")
    with zipfile.ZipFile(path) as wheel:
        metadata = wheel.read(dist_info + "METADATA").decode()
    for line in (f"Version: {version}", "Requires-Python: >=3.9", "License: MIT"):
        if line not in metadata.splitlines():
            fail(f"wheel METADATA lacks {line!r}")
    return names


def check_sdist(path: str, version: str) -> str:
    prefix = f"dlmanager-{version}/"
    with tarfile.open(path) as sdist:
        names = {n[len(prefix) :] for n in sdist.getnames() if n.startswith(prefix)}
    missing = [n for n in (*SDIST_MUST_HAVE, *package_files()) if n not in names]
    if missing:
        fail(f"sdist lacks {missing}")
    if any(n.startswith("docs/_build") or "__pycache__" in n for n in names):
        fail("sdist holds build output or bytecode")
    return prefix


def rebuild_from_sdist(sdist: str, prefix: str) -> list[str]:
    with tempfile.TemporaryDirectory() as work:
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(work, filter="data")
            else:  # Pythons without extraction filters; this is our own sdist
                archive.extractall(work)
        out = os.path.join(work, "out")
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", out, os.path.join(work, prefix)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (wheel,) = os.listdir(out)
        return wheel_names(os.path.join(out, wheel))


def main(dist: str) -> int:
    version = source_version()
    files = sorted(os.listdir(dist))
    wheels = [f for f in files if f.endswith(".whl")]
    sdists = [f for f in files if f.endswith(".tar.gz")]
    if wheels != [f"dlmanager-{version}-py3-none-any.whl"] or sdists != [
        f"dlmanager-{version}.tar.gz"
    ]:
        fail(f"expected one wheel and one sdist of version {version} in {dist}, found {files}")
    names = check_wheel(os.path.join(dist, wheels[0]), version)
    prefix = check_sdist(os.path.join(dist, sdists[0]), version)
    rebuilt = rebuild_from_sdist(os.path.join(dist, sdists[0]), prefix)
    if rebuilt != names:
        fail(f"the wheel built from the sdist differs: {sorted(set(rebuilt) ^ set(names))}")
    print(f"check_dist: {wheels[0]} ({len(names)} files) and {sdists[0]} are complete")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: python .ci/check_dist.py DIST_DIR")
    sys.exit(main(sys.argv[1]))
