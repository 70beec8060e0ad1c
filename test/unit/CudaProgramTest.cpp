//===- CudaProgramTest.cpp - Whole programs through the CUDA emitter ------===//
//
// Every kernel of the tiny spec's train step (forward and backward, every function of the
// kernel module), of its optimizer and of the Nano 12B spec's forward has a CUDA emitter and
// compiles with NVRTC to PTX for sm_80 and sm_90. No GPU is needed.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/Emitter.h"
#include "lib/codegen/cuda/KernelCache.h"
#include "lib/codegen/cuda/Nvrtc.h"

#include "dialects/kernel/KernelOps.h"
#include "nestor/Compile.h"
#include "nestor/Spec.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/StringMap.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>

using namespace mlir;
using namespace nestor;

namespace {

std::string specPath(const char *name) {
  const char *src = std::getenv("NESTOR_SRC");
  return std::string(src ? src : ".") + "/examples/specs/" + name;
}

/// Emits every function of `module` whose name `keep` accepts; expects no kernel op without an
/// emitter; compiles each distinct kernel for sm_80 and sm_90. Returns the number of distinct
/// kernels.
size_t expectEveryKernelCompiles(ModuleOp module,
                                 const std::function<bool(llvm::StringRef)> &keep) {
  llvm::StringMap<cuda::KernelSource> unique;
  std::map<std::string, int> unsupported;
  for (auto fn : module.getOps<func::FuncOp>()) {
    if (!keep(fn.getSymName()))
      continue;
    auto program = cuda::emitProgram(fn);
    EXPECT_TRUE(static_cast<bool>(program)) << llvm::toString(program.takeError());
    if (!program)
      return 0;
    for (Operation *op : program->unsupported)
      ++unsupported[op->getName().getStringRef().str()];
    for (cuda::EmittedKernel &k : program->kernels)
      unique.try_emplace(k.kernel.fileName(), k.kernel);
  }
  for (auto &[name, n] : unsupported)
    ADD_FAILURE() << n << " " << name << " ops have no CUDA emitter";
  cuda::KernelCache cache("", "nestor-cuda-test"); // in memory only
  for (const char *arch : {"sm_80", "sm_90"})
    for (auto &entry : unique) {
      const cuda::KernelSource &k = entry.second;
      cuda::CompileRequest request;
      request.name = k.fileName();
      request.source = k.source;
      request.headers = cuda::deviceHeaders();
      request.arch = arch;
      auto ptx = cache.getOrCompile(request);
      EXPECT_TRUE(static_cast<bool>(ptx)) << arch << ": " << llvm::toString(ptx.takeError());
      if (!ptx)
        continue;
      EXPECT_NE((*ptx)->image.find(std::string(".target ") + arch), std::string::npos);
      for (const cuda::Launch &l : k.launches)
        EXPECT_NE((*ptx)->image.find(".visible .entry " + l.entry + "("), std::string::npos)
            << k.fileName() << " has no extern \"C\" entry " << l.entry;
    }
  return unique.size();
}

TEST(CudaProgramTest, EveryKernelOfTheTinyTrainStepAndOptimizerCompiles) {
  auto spec = spec::loadSpecFile(specPath("tiny-hybrid.pbtxt"));
  ASSERT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  MLIRContext context;
  auto step = compileTrainStep(context, *spec, defaultStepOptions(*spec));
  ASSERT_TRUE(static_cast<bool>(step)) << llvm::toString(step.takeError());
  size_t kernels =
      expectEveryKernelCompiles(*(*step)->module, [](llvm::StringRef) { return true; });
  EXPECT_GT(kernels, 20u);

  std::vector<StepArg> params;
  for (const StepArg &a : (*step)->args)
    if (a.isParam)
      params.push_back(a);
  auto optimizer = compileOptimizer(context, params, spec->training().optimizer());
  ASSERT_TRUE(static_cast<bool>(optimizer)) << llvm::toString(optimizer.takeError());
  EXPECT_GE(expectEveryKernelCompiles(*(*optimizer)->module, [](llvm::StringRef) { return true; }),
            2u);
}

TEST(CudaProgramTest, EveryKernelOfTheNano12BForwardCompiles) {
  auto spec = spec::loadSpecFile(specPath("nemotron-nano-12b-v2.pbtxt"));
  ASSERT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  MLIRContext context;
  StepOptions options;
  options.batch = 1;
  options.seqLen = 64;
  auto module = compileKernels(context, *spec, options);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  // The forward functions: the parent and the elastic model (not the train step).
  size_t kernels = expectEveryKernelCompiles(
      **module, [](llvm::StringRef name) { return !name.ends_with("_train_step"); });
  EXPECT_GT(kernels, 5u);
}

} // namespace
