"""Builds the Cython engine as spikecast.ext.<name>; everything else is in pyproject.toml."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
# Portable by default; SPIKECAST_NATIVE=1 opts in to -march=native for the build machine.
compile_args = ["-O3"]
if os.environ.get("SPIKECAST_NATIVE") == "1":
    compile_args.append("-march=native")

extensions = [
    Extension(
        f"spikecast.ext.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include(), "ext"],
        extra_compile_args=compile_args,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for pyx in sorted((HERE / "ext").glob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
