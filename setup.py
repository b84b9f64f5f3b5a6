"""Build pyvswitch: Python packages, Cython fast path, BPF objects.

Every ``fastpath/**/*.pyx`` becomes an extension module, and every
``fastpath/bpf/*.bpf.c`` becomes a BPF object compiled by clang (``-target
bpf``).  Before either, headers that mirror ``slowpath/fields.py`` are
generated (``fastpath/_fields.pxd``, ``fastpath/bpf/flow_key.h``) so the flow
key layout is defined exactly once.
"""

import glob
import os
import re
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = re.search(r'__version__ = "([^"]+)"',
                    open(os.path.join(HERE, "vswitch", "__init__.py")).read()).group(1)


def generate_field_headers():
    """Write the C/Cython views of the flow key, if the generator exists."""
    sys.path.insert(0, HERE)
    try:
        try:
            from slowpath import fields_codegen
        except ImportError:
            return
        fields_codegen.write_all(HERE)
    finally:
        sys.path.pop(0)


def build_bpf_objects():
    """Compile fastpath/bpf/*.bpf.c to BPF ELF objects next to their source."""
    sources = sorted(glob.glob(os.path.join(HERE, "fastpath", "bpf", "*.bpf.c")))
    if not sources:
        return
    arch_inc = "/usr/include/x86_64-linux-gnu"
    for src in sources:
        obj = src[: -len(".c")] + ".o"
        deps = [src] + glob.glob(os.path.join(HERE, "fastpath", "bpf", "*.h"))
        if os.path.exists(obj) and all(
            os.path.getmtime(obj) >= os.path.getmtime(d) for d in deps
        ):
            continue
        cmd = [
            "clang", "-O2", "-g", "-Wall", "-target", "bpf",
            "-I", os.path.join(HERE, "fastpath", "bpf"), "-I", arch_inc,
            "-c", src, "-o", obj,
        ]
        print("BPF:", " ".join(cmd))
        subprocess.check_call(cmd)


class BuildExt(build_ext):
    """build_ext that first generates field headers and builds BPF objects."""

    def run(self):
        generate_field_headers()
        build_bpf_objects()
        super().run()


def pkg_config(package):
    """(cflags, libs) of ``package`` from pkg-config, or None if it is absent."""
    try:
        out = [subprocess.run(["pkg-config", flag, package], check=True, text=True,
                              capture_output=True).stdout.split()
               for flag in ("--cflags", "--libs")]
    except (OSError, subprocess.CalledProcessError):
        return None
    return out[0], out[1]


DPDK_PYX = os.path.join("fastpath", "io", "dpdk.pyx")


def extensions():
    from Cython.Build import cythonize
    from setuptools import Extension

    import numpy

    pyx = sorted(glob.glob("fastpath/**/*.pyx", recursive=True))
    # DPDK ports only when libdpdk is installed; without it the build still
    # succeeds and a dpdk port fails clearly at runtime (fastpath/io/port.pyx).
    dpdk = pkg_config("libdpdk")
    if dpdk is None:
        print("pkg-config found no libdpdk: building without DPDK ports", file=sys.stderr)
        pyx.remove(DPDK_PYX)
    exts = [
        Extension(
            p[: -len(".pyx")].replace(os.sep, "."),
            [p],
            include_dirs=[numpy.get_include(), "fastpath", "fastpath/bpf"],
            extra_compile_args=["-O3", "-Wno-unused-function"]
            + (dpdk[0] if p == DPDK_PYX else []),
            extra_link_args=dpdk[1] if p == DPDK_PYX else [],
            libraries=["bpf"] if "bpf" in p.split(os.sep)[1:-1] else [],
        )
        for p in pyx
    ]
    generate_field_headers()
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
        quiet=True,
    )


setup(
    name="pyvswitch",
    version=VERSION,
    description="An Open vSwitch-class software switch in Python with compiled fast paths",
    packages=find_packages(include=[
        "vswitch*", "fastpath*", "slowpath*", "controller_stub*", "bench*",
    ]),
    package_data={"fastpath": ["bpf/*.o", "bpf/*.h", "*.pxd"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
    python_requires=">=3.11",
    entry_points={"console_scripts": ["pyvswitch = vswitch.cli:main"]},
)
