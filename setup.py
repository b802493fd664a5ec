"""Builds the Cython engine as spikecast.ext.<name>; everything else is in pyproject.toml."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
# Built for the baseline ISA: the wide kernels (ext/spk_simd.h) carry their own target
# attributes and are chosen at run time on the CPU, so a default build runs AVX-512 where
# the CPU has it. SPIKECAST_NATIVE=1 (optional) adds -march=native, which widens only the
# remaining portable loops and makes the build unfit for other machines.
# No FMA contraction: a*b + c stays two roundings on every path and build (-march=native
# included), as in the reference simulator (the membrane read-out's sums, the frame current).
compile_args = ["-O3", "-ffp-contract=off"]
if os.environ.get("SPIKECAST_NATIVE") == "1":
    compile_args.append("-march=native")
# Rebuild both modules when a shared source changes.
DEPENDS = ["ext/_engine.pxd", "ext/_kernels.pxi", "ext/spk_simd.h"]

extensions = [
    Extension(
        f"spikecast.ext.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include(), "ext"],
        extra_compile_args=compile_args,
        depends=DEPENDS,
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
