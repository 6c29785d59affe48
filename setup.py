"""Builds Headway's compiled parts (the project's metadata is in pyproject.toml); both optional.

- ``headway.observe._speedups``: observability's hot loops in C. When it cannot be built (no
  compiler), the pure-Python paths in ``headway.observe`` are used.
- The request path's modules (``headway._native.COMPILED``), compiled with mypyc when mypyc is
  importable in the build environment (``pip install --no-build-isolation``, as
  ``scripts/bootstrap.sh`` does, with the pinned mypy of ``requirements/dev.txt``; mypyc
  type-checks with the project's ``[tool.mypy]`` settings, so the installed dependencies'
  types must be there too). All or none: when any of them fails to build, none is kept, and
  the sources run. ``HEADWAY_PURE_PYTHON=1`` skips this build (and, at run time, ignores one).
  The build records every source of the package in ``headway/_native.json``; see
  ``_native.py`` for how an edited source is never shadowed by an older build.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
NATIVE = runpy.run_path(str(HERE / "src" / "headway" / "_native.py"))


def _mypyc_extensions() -> list[Extension]:
    if os.environ.get(NATIVE["PURE_ENV"], "") == "1" or not NATIVE["COMPILED"]:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("headway: mypyc not installed; the request path runs as Python", file=sys.stderr)
        return []
    paths = [str(NATIVE["source_path"](m).relative_to(HERE)) for m in NATIVE["COMPILED"]]
    target = "build/mypyc"
    try:
        extensions: list[Extension] = mypycify(
            paths,
            opt_level="3",
            multi_file=True,  # a C file per module: compiled in parallel (see BuildExt.run)
            group_name=NATIVE["GROUP"],
            target_dir=target,
        )
    except BaseException as error:  # mypyc exits through SystemExit on a type error
        print(f"headway: mypyc failed ({error!r}); the request path runs as Python",
              file=sys.stderr)  # fmt: skip
        return []
    for extension in extensions:
        extension.optional = True  # a compile error leaves it out; _finish_native drops all
    return extensions


class BuildExt(build_ext):
    """Adds the mypyc extensions at build time only (mypyc type-checks the whole package, which
    metadata-only runs of this file must not pay for), and keeps them all or none."""

    def run(self) -> None:
        native = _mypyc_extensions()
        self._native = {e.name for e in native}
        self._native_failed: list[str] = []
        # The package's folder, here or in the build folder (this module's name is only a probe).
        package = Path(self.get_ext_fullpath("headway._native")).parent
        manifest = package / NATIVE["MANIFEST"]
        manifest.unlink(missing_ok=True)
        self._adopt(native)
        if native and not self.parallel:
            self.parallel = os.cpu_count() or 1
        super().run()
        if native:
            self._finish_native(native, manifest)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BaseException:
            if ext.name in self._native:
                self._native_failed.append(ext.name)
            raise

    def _adopt(self, extensions: list[Extension]) -> None:
        """What ``finalize_options`` does per extension, for ones added after it ran (none of
        them links to a shared library of this build, so none needs a stub loader)."""
        for ext in extensions:
            full = self.get_ext_fullname(ext.name)
            ext._full_name = full  # type: ignore[attr-defined]
            ext._links_to_dynamic = False  # type: ignore[attr-defined]
            ext._needs_stub = False  # type: ignore[attr-defined]
            ext._file_name = self.get_ext_filename(full)  # type: ignore[attr-defined]
            self.ext_map[full] = ext
        self.extensions = [*self.extensions, *extensions]

    def _finish_native(self, native: list[Extension], manifest: Path) -> None:
        if self._native_failed:
            for ext in native:  # here and, for an in-place build, in the build folder
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
                Path(self.build_lib, self.get_ext_filename(ext.name)).unlink(missing_ok=True)
            print(f"headway: mypyc's C did not compile ({', '.join(self._native_failed)}); "
                  "the request path runs as Python", file=sys.stderr)  # fmt: skip
            return
        self._drop_stale_extensions(manifest.parent)
        record = {"sources": NATIVE["record_sources"]()}
        manifest.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")

    @staticmethod
    def _drop_stale_extensions(package: Path) -> None:
        """Extensions an earlier build left beside modules no longer compiled (they are not
        imported anyway: see ``_native._SourceFinder``)."""
        compiled = {NATIVE["source_path"](m) for m in NATIVE["COMPILED"]}
        for extension in package.rglob("*.so"):
            source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
            if source.exists() and source not in compiled:
                extension.unlink()
        group = NATIVE["GROUP"] + "__mypyc."
        for library in [*package.parent.glob("*__mypyc.*"), *package.rglob("*__mypyc.*")]:
            if not library.name.startswith(group):  # an earlier build's group
                library.unlink()


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "headway.observe._speedups",
            [
                "src/headway/observe/_speedups.c",
                "src/headway/observe/_speedups_tally.c",
                "src/headway/observe/_speedups_outcome.c",
            ],
            depends=["src/headway/observe/_speedups.h"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ],
)
