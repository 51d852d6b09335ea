"""Build the Cython extensions in ``cnn/_ext``.

OpenMP is detected by compiling, linking *and running* a tiny program with the
flags of the compiler at hand (gcc/clang ``-fopenmp``, MSVC ``/openmp``, Apple
clang ``-Xpreprocessor -fopenmp -lomp``). When none works the kernels are built
serial and the build says so loudly; ``CNN_NO_OPENMP=1`` forces that path.

Flags are portable by default (``-O3``; never ``-march=native`` nor
``-ffast-math``, which would set flush-to-zero for the whole process).
``CNN_NATIVE=1`` opts in to ``-march=native`` for a build that stays on this
machine. ``CNN_DEBUG_CYTHON=1`` turns bounds checks back on in every module.

Nothing is written into the source tree but what an in-place build asks for: Cython's C files
go to the build's temporary folder, and ``_build_info.py`` (how the kernels were compiled, for
``cnn.show_config()``) goes next to the compiled extensions, in ``build/lib*/cnn/_ext`` for a
wheel and in ``cnn/_ext`` only with ``build_ext --inplace`` (or an editable install).
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST_PROGRAM = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
    """
)

EXTENSIONS = ["_openmp", "_blas", "_conv", "_pool", "_dense", "_optim", "_norm", "_fused", "_eltwise",
              "_pool_grad"]


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _candidate_openmp_flags(compiler):
    """Yield (compile_args, link_args) pairs to try, most likely first."""
    if compiler.compiler_type == "msvc":
        yield ["/openmp"], []
        return
    yield ["-fopenmp"], ["-fopenmp"]
    if sys.platform == "darwin":
        yield ["-Xpreprocessor", "-fopenmp"], ["-lomp"]


def _try_openmp(compiler, compile_args, link_args):
    """Compile, link and run the test program; True when it prints 1."""
    tmp = tempfile.mkdtemp(prefix="cnn-openmp-")
    cwd = os.getcwd()
    try:
        os.chdir(tmp)
        with open("test_openmp.c", "w") as f:
            f.write(OPENMP_TEST_PROGRAM)
        objects = compiler.compile(["test_openmp.c"], extra_postargs=compile_args)
        compiler.link_executable(objects, "test_openmp", extra_postargs=link_args)
        exe = os.path.join(tmp, "test_openmp" + (".exe" if sys.platform == "win32" else ""))
        out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        return out.returncode == 0 and out.stdout.strip() == "1"
    except Exception:  # any compiler, linker or runtime failure means "no"
        return False
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExtWithOpenMP(build_ext):
    """build_ext that probes OpenMP once and sets portable optimisation flags."""

    def build_extensions(self):
        # self.compiler is already created and customised by build_ext.run()
        # Cythonize here, not at import, so that the C files go to this build's temporary
        # folder, never next to the .pyx sources.
        # (cythonize returns plain distutils Extensions: keep setuptools' own, with new sources.)
        generated = {e.name: e for e in _cythonize(self.extensions, os.path.join(self.build_temp, "cython"))}
        for ext in self.extensions:
            ext.sources, ext.depends = generated[ext.name].sources, generated[ext.name].depends
        compile_args, link_args, openmp = [], [], False
        if _env_flag("CNN_NO_OPENMP"):
            print("cnn: CNN_NO_OPENMP is set: building serial kernels", file=sys.stderr)
        else:
            for c_args, l_args in _candidate_openmp_flags(self.compiler):
                if _try_openmp(self.compiler, c_args, l_args):
                    compile_args, link_args, openmp = c_args, l_args, True
                    break
            if not openmp:
                banner = "*" * 72
                print(
                    f"\n{banner}\ncnn WARNING: no working OpenMP found for this compiler.\n"
                    "The kernels are built SERIAL: correct, but they will use one core.\n"
                    "Install an OpenMP runtime (libgomp / libomp) and rebuild for threads.\n"
                    f"{banner}\n",
                    file=sys.stderr,
                )
        if self.compiler.compiler_type == "msvc":
            opt = ["/O2"]
        else:
            opt = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-unreachable-code"]
            if _env_flag("CNN_NATIVE"):
                opt.append("-march=native")
        all_compile = opt + compile_args
        for ext in self.extensions:
            ext.extra_compile_args = all_compile + list(ext.extra_compile_args)
            ext.extra_link_args = link_args + list(ext.extra_link_args)
        self._write_build_info(openmp, all_compile, link_args)
        super().build_extensions()

    def _write_build_info(self, openmp, compile_args, link_args):
        """Record how the kernels were built; cnn.show_config() reports it."""
        content = (
            '"""Written by setup.py at build time: how cnn._ext was compiled."""\n'
            f"OPENMP = {openmp!r}\n"
            f"COMPILE_ARGS = {compile_args!r}\n"
            f"LINK_ARGS = {link_args!r}\n"
            f"COMPILER = {self.compiler.compiler_type!r}\n"
        )
        # Beside the compiled extensions in build_lib (setuptools builds there even with
        # --inplace, then copies: see copy_extensions_to_source).
        root = os.path.join(self.build_lib, "cnn", "_ext")
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "_build_info.py"), "w") as f:
            f.write(content)

    def copy_extensions_to_source(self):
        """--inplace (and editable installs): the build info goes with the extensions."""
        super().copy_extensions_to_source()
        package_dir = self.get_finalized_command("build_py").get_package_dir("cnn._ext")
        self.copy_file(os.path.join(self.build_lib, "cnn", "_ext", "_build_info.py"),
                       os.path.join(package_dir, "_build_info.py"), level=self.verbose)


def _cythonize(extensions, build_dir):
    from Cython.Build import cythonize

    directives = {
        "language_level": "3",
        "boundscheck": _env_flag("CNN_DEBUG_CYTHON"),
        "wraparound": False,
        "initializedcheck": False,
        "nonecheck": False,
        "cdivision": True,
        "embedsignature": True,
    }
    return cythonize(extensions, compiler_directives=directives, build_dir=build_dir, quiet=True)


EXT_MODULES = [
    Extension(f"cnn._ext.{name}", [os.path.join("cnn", "_ext", f"{name}.pyx")],
              depends=glob.glob(os.path.join("cnn", "_ext", "*.h")),
              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")])
    for name in EXTENSIONS
]


setup(ext_modules=EXT_MODULES, cmdclass={"build_ext": BuildExtWithOpenMP})
