# lit configuration for Nestor's FileCheck tests.
import os
import sys
import lit.formats

config.name = "Nestor"
config.test_format = lit.formats.ShTest(not lit_config.isWindows)
config.suffixes = [".mlir", ".test", ".pbtxt"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py", "CMakeLists.txt", "unit", "exit-code.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.nestor_obj_root, "test")

config.substitutions.append(("%nestor_src", config.nestor_src_root))
# Runs nestor, then prints "exit N" after its combined output, so tests check the exact exit
# code (`not` accepts any failure).
config.substitutions.append(("%{nestor-exit}", sys.executable + " " + os.path.join(
    config.test_source_root, "lit", "exit-code.py")))
config.substitutions.append(("%python", sys.executable))
config.substitutions.append(("%nestor_bin", os.path.join(config.nestor_obj_root, "bin", "nestor")))
config.substitutions.append(("%specs", os.path.join(config.nestor_src_root, "examples", "specs")))

# Nestor's tools first, then FileCheck and friends from LLVM 22.
path = [os.path.join(config.nestor_obj_root, "bin"), config.llvm_tools_dir, "/usr/lib/llvm-22/bin"]
config.environment["PATH"] = os.pathsep.join(path + [config.environment.get("PATH", "")])

# The out-of-tree pass plugin and the installed nestor-opt it loads into; ctest builds both
# (plugin-install/-configure/-build) before it runs lit. The feature is absent, and plugin tests
# report UNSUPPORTED, only when lit runs by hand before those ctest steps.
plugin = os.path.join(config.nestor_plugin_dir, "NestorExamplePlugin.so")
installed_opt = os.path.join(config.nestor_plugin_prefix, "bin", "nestor-opt")
if os.path.exists(plugin) and os.path.exists(installed_opt):
    config.available_features.add("plugin")
    config.substitutions.append(("%example_plugin", plugin))
    config.substitutions.append(("%installed_nestor_opt", installed_opt))

# The CUDA emitter and NVRTC (the CUDA toolkit was found at configure time); no GPU needed.
if config.nestor_have_cuda:
    config.available_features.add("nvrtc")
    # The fake CUDA driver (test/unit/cuda/fake_libcuda.cpp): LD_LIBRARY_PATH=%{fake-cuda}.
    config.substitutions.append(("%{fake-cuda}", config.nestor_fake_cuda_dir))

# A CUDA GPU (nestor devices exits 0): the lit tests that need one run; elsewhere they are
# UNSUPPORTED, and the reason is noted here.
import subprocess
try:
    probe = subprocess.run([os.path.join(config.nestor_obj_root, "bin", "nestor"), "devices"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if probe.returncode == 0:
        config.available_features.add("cuda-device")
    else:
        lit_config.note("GPU tests skipped: " + probe.stdout.decode(errors="replace").strip().splitlines()[-1])
except (OSError, subprocess.TimeoutExpired) as e:
    lit_config.note("GPU tests skipped: no CUDA device (%s)" % e)
