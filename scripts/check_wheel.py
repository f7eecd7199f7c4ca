"""Build the sdist and the wheel, and use the wheel as a user meets it: installed in a fresh
venv, run from an empty folder, no source tree on sys.path.

    .venv/bin/python scripts/check_wheel.py                  # exit 0 when all steps pass
    .venv/bin/python scripts/check_wheel.py --without fib_runtime.trust
        # the same on a wheel with that package taken out: it must fail (check_wheel.sh)

1. The checkout's files (`git ls-files`) are copied to a temporary folder; the sdist is built
   there and the wheel from the unpacked sdist, as pip builds one from PyPI.
2. The wheel's files are compared with the source folders: every file under `fib_runtime/`,
   `adapters/` and `definitions/` (the latter two as `fib_runtime.adapters` / `.definitions`).
3. A venv without system site-packages; torch is not downloaded again: a `.pth` file points
   at a folder of links to the torch this interpreter has and to its own requirements (not
   at this interpreter's site-packages, which hold an editable fib-runtime and its entry
   points). The wheel is installed with pip; its other dependencies come from the index.
4. From an empty folder, with HOME in the temporary folder: `import fib_runtime` (loaded from
   the venv, the checkout not on sys.path), `fib --version` against `fib_runtime/version.py`
   and the installed metadata, `fib catalogue install DB`, `fib demo DB`, and the
   `vllm.general_plugins` / `sglang.srt.plugins` entry points found through
   importlib.metadata and loaded.
Each step prints `ok:` or `FAILED:` and the reason; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> where its files sit in the wheel.
SOURCES = {"fib_runtime": "fib_runtime", "adapters": "fib_runtime/adapters",
           "definitions": "fib_runtime/definitions"}
ENTRY_POINTS = ("vllm.general_plugins", "sglang.srt.plugins")
failures: list[str] = []


def step(name: str, problem: str | None, detail: str = "") -> None:
    if problem is None:
        print(f"ok: {name}" + (f" ({detail})" if detail else ""), flush=True)
    else:
        failures.append(name)
        print(f"FAILED: {name}: {problem}", flush=True)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def tail(proc: subprocess.CompletedProcess[str], lines: int = 4) -> str:
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return f"exit {proc.returncode}\n    " + "\n    ".join(text[-lines:])


# -- 1. build ---------------------------------------------------------------------------------

def copy_checkout(dest: Path) -> None:
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                 cwd=ROOT)
    if listed.returncode != 0:
        sys.exit(f"check_wheel: {ROOT} is not a git checkout: {listed.stderr.strip()}")
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def build(hook: str, source: Path, out: Path) -> Path | None:
    """`setuptools.build_meta.<hook>` run in `source`; the file it wrote, or None."""
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    proc = run([sys.executable, "-c", code], cwd=source)
    if proc.returncode != 0:
        step(hook, tail(proc))
        return None
    return out / proc.stdout.strip().splitlines()[-1]


def build_both(tmp: Path) -> tuple[Path, Path] | None:
    source, dist = tmp / "checkout", tmp / "dist"
    dist.mkdir()
    copy_checkout(source)
    sdist = build("build_sdist", source, dist)
    if sdist is None:
        return None
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    unpacked = next((tmp / "unpacked").iterdir())
    wheel = build("build_wheel", unpacked, dist)
    if wheel is None:
        return None
    step("build", None, f"{sdist.name}, {wheel.name} (built from the sdist)")
    return sdist, wheel


# -- 2. contents ------------------------------------------------------------------------------

def expected_files(source: Path) -> set[str]:
    files = set()
    for folder, target in SOURCES.items():
        base = source / folder
        files |= {f"{target}/{p.relative_to(base).as_posix()}"
                  for p in base.rglob("*") if p.is_file()}
    return files


def check_contents(wheel: Path, source: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        held = {n for n in archive.namelist() if ".dist-info/" not in n}
    expected = expected_files(source)
    missing, extra = sorted(expected - held), sorted(held - expected)
    problems = [f"missing {n}" for n in missing] + [f"not in the source: {n}" for n in extra]
    step("wheel contents", "; ".join(problems[:12]) + (" ..." if len(problems) > 12 else "")
         if problems else None, f"{len(held)} files, as in {', '.join(SOURCES)}")


def without(wheel: Path, package: str, dest: Path) -> Path:
    """A copy of `wheel` without the files of `package` (and their RECORD lines)."""
    prefix = package.replace(".", "/") + "/"
    out = dest / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename.startswith(prefix):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not line.startswith(prefix.encode()))
            dst.writestr(item, data)
    print(f"note: {package} taken out of the wheel: the steps below must fail", flush=True)
    return out


# -- 3. a fresh venv --------------------------------------------------------------------------

def requirement_names(dist: metadata.Distribution) -> list[str]:
    from packaging.requirements import Requirement

    names = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.append(requirement.name)
    return names


def link_torch(links: Path) -> int:
    """Links to this interpreter's torch and its requirements, recursively; their number."""
    links.mkdir()
    seen: set[str] = set()
    todo = ["torch"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(name)
        base = Path(str(dist.locate_file("")))
        tops = {f.parts[0] for f in dist.files or ()}
        for top in tops - {"..", "__pycache__"}:
            if not top.endswith(".pth") and not (links / top).exists():
                (links / top).symlink_to(base / top)
        todo += requirement_names(dist)
    return len(seen)


def make_venv(tmp: Path, wheel: Path) -> Path | None:
    venv = tmp / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)])
    if made.returncode != 0:
        step("venv", tail(made))
        return None
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                     "['purelib'])"]).stdout.strip())
    count = link_torch(tmp / "torch-links")
    (site / "_check_wheel_torch.pth").write_text(f"{tmp / 'torch-links'}\n")
    started = time.perf_counter()
    installed = run([str(python), "-m", "pip", "install", "-q",
                     "--disable-pip-version-check", str(wheel)])
    if installed.returncode != 0:
        step("pip install", tail(installed))
        return None
    step("pip install", None, f"{time.perf_counter() - started:.0f} s; torch and "
         f"{count - 1} of its requirements linked from {sys.prefix}")
    return venv


# -- 4. use it --------------------------------------------------------------------------------

IMPORT = """
import sys
from pathlib import Path
import fib_runtime, fib_runtime.adapters, fib_runtime.definitions, fib_runtime.trust
checkout, prefix = Path(sys.argv[1]), Path(sys.prefix).resolve()
for module in (fib_runtime, fib_runtime.adapters, fib_runtime.definitions):
    where = Path(module.__file__).resolve()
    assert prefix in where.parents, f"{module.__name__} loaded from {where}, not {prefix}"
on_path = [p for p in sys.path if p and (Path(p).resolve() == checkout
                                         or checkout in Path(p).resolve().parents)]
assert not on_path, f"the source tree is on sys.path: {on_path}"
print(Path(fib_runtime.__file__).parent)
"""

ENTRY = """
import importlib.metadata as metadata
from pathlib import Path
said = []
for group in {groups!r}:
    found = [e for e in metadata.entry_points(group=group) if e.name == "fib_runtime"]
    assert len(found) == 1, f"{{group}}: {{len(found)}} entry points named fib_runtime"
    register = found[0].load()
    register()  # neither FIB_ENABLE_APPLY nor FIB_ENABLE_TRACING: does nothing
    module = __import__(register.__module__, fromlist=["_"])
    said.append(f"{{group}}: {{found[0].value}} from {{Path(module.__file__).parent}}")
print("; ".join(said))
"""


def use(venv: Path, tmp: Path) -> None:
    workdir, home = tmp / "cwd", tmp / "home"
    workdir.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("FIB_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    python, fib, db = str(venv / "bin" / "python"), str(venv / "bin" / "fib"), str(tmp / "db")

    def check(name: str, cmd: list[str], want: str | None = None) -> str:
        proc = run(cmd, cwd=workdir, env=env)
        out = proc.stdout.strip()
        if proc.returncode != 0:
            step(name, tail(proc))
        elif want is not None and want not in out:
            step(name, f"expected {want!r} in the output:\n    {out}")
        else:
            lines = [line for line in out.splitlines() if want is None or want in line]
            step(name, None, lines[-1] if lines else "")
        return out

    check("import fib_runtime", [python, "-c", IMPORT, str(ROOT)])
    version = re.search(r'__version__ = "([^"]+)"',
                        (ROOT / "fib_runtime" / "version.py").read_text())
    assert version is not None
    check("fib --version", [fib, "--version"], f"fib-runtime {version.group(1)}")
    check("installed metadata version", [python, "-c", "import importlib.metadata as m; "
                                         "print(m.version('fib-runtime'))"], version.group(1))
    check("fib catalogue install", [fib, "catalogue", "install", db], "definitions")
    check("fib demo", [fib, "demo", db, "--iters", "2"], "served with dispatch on")
    check("engine entry points", [python, "-c", ENTRY.format(groups=ENTRY_POINTS)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--without", metavar="PACKAGE",
                        help="take this package out of the built wheel (the check must fail)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="fib-check-wheel-"))
    try:
        built = build_both(tmp)
        if built is not None:
            wheel = built[1]
            if args.without:
                wheel = without(wheel, args.without, tmp)
            check_contents(wheel, tmp / "checkout")
            venv = make_venv(tmp, wheel)
            if venv is not None:
                use(venv, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    took = f"{time.perf_counter() - started:.0f} s"
    if failures or built is None:
        print(f"check_wheel: FAILED ({', '.join(failures)}) in {took}")
        return 1
    print(f"check_wheel: the wheel and sdist install and run ({took})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
