"""Builds Headway's one optional C extension (the project's metadata is in pyproject.toml).

``headway.observe._speedups`` formats access-log lines and tallies metrics; when it cannot be built (no compiler),
the install goes on and the pure-Python path in ``_accesslog.py`` is used.
"""

from setuptools import Extension, setup

setup(
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
    ]
)
