//===- CompileCommand.cpp - `nestor compile` --------------------------------===//
//
// Runs the compiler pipeline on a spec and prints the requested stage: the elastic IR the
// importer builds (`--emit mlir`), the train step after elastic-autodiff (`--emit train-step`),
// and the planned kernel program of the train step for one batch shape (`--emit kernels`). CUDA
// and PTX join the `--emit` choices with the CUDA backend.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "nestor/Compile.h"
#include "nestor/Import.h"
#include "nestor/Spec.h"
#include "passes/Passes.h"

#include "CLI/CLI.hpp"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <memory>

namespace {
struct CompileOptions {
  std::string specPath;
  std::string emit = "mlir";
  std::string target = "cpu";
  std::string output = "-";
  bool float64 = false;
  std::vector<int64_t> depthOrder;
  bool generic = false;
  int64_t batch = 0, seqLen = 0;
  bool noPrefixDense = false;
};
} // namespace

nestor::cli::Action nestor::cli::addCompileCommand(CLI::App &app) {
  auto opts = std::make_shared<CompileOptions>();
  app.add_option("SPEC", opts->specPath, "Model spec (.pbtxt)")->required();
  app.add_option("--emit", opts->emit, "Stage to print")
      ->check(CLI::IsMember({"mlir", "train-step", "kernels"}))
      ->capture_default_str();
  app.add_option("--target", opts->target, "Backend")
      ->check(CLI::IsMember({"cpu"}))
      ->capture_default_str();
  app.add_option("-o,--output", opts->output, "Output file ('-' for stdout)")
      ->capture_default_str();
  app.add_flag("--float64", opts->float64, "Build the program in float64 instead of float32");
  app.add_option("--depth-order", opts->depthOrder,
                 "Layers least important first (default: last layer first)")
      ->delimiter(',');
  app.add_flag("--generic", opts->generic, "Print the IR in generic form");
  app.add_option("--batch", opts->batch,
                 "Kernels: sequences per step (default: the spec's first stage)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--seq-len", opts->seqLen,
                 "Kernels: tokens per sequence (default: the spec's first stage)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_flag("--no-prefix-dense", opts->noPrefixDense,
               "Kernels: run hard masks at full width (no extents, no skipped layers)");

  return [opts]() -> int {
    auto print = [&](mlir::ModuleOp module) -> int {
      std::string error;
      auto out = mlir::openOutputFile(opts->output, &error);
      if (!out)
        return reportError(llvm::createStringError(error));
      mlir::OpPrintingFlags flags;
      if (opts->generic)
        flags.printGenericOpForm();
      module->print(out->os(), flags);
      out->os() << "\n";
      out->keep();
      return 0;
    };
    auto spec = spec::loadSpecFile(opts->specPath);
    if (!spec)
      return reportError(spec.takeError());

    mlir::MLIRContext context;
    if (opts->emit == "kernels") {
      // The planned kernel program of the train step for one batch shape.
      StepOptions step = defaultStepOptions(*spec);
      if (opts->batch > 0)
        step.batch = opts->batch;
      if (opts->seqLen > 0)
        step.seqLen = opts->seqLen;
      step.float64 = opts->float64;
      step.prefixDense = !opts->noPrefixDense;
      step.depthOrder = opts->depthOrder;
      auto kernels = compileKernels(context, *spec, step);
      if (!kernels)
        return reportError(kernels.takeError(), 1);
      return print(**kernels);
    }
    ImportOptions importOptions;
    importOptions.float64 = opts->float64;
    importOptions.depthOrder = opts->depthOrder;
    auto module = importSpec(context, *spec, importOptions);
    if (!module)
      return reportError(module.takeError());

    if (opts->emit == "train-step") {
      // Forward, losses and every parameter's gradient (elastic-autodiff).
      mlir::PassManager pm(&context);
      TrainStepPipelineOptions pipeline;
      pipeline.function = spec->has_elastic() ? "elastic_model" : "model";
      buildTrainStepPipeline(pm, pipeline);
      if (mlir::failed(pm.run(**module)))
        return reportError(llvm::createStringError("elastic-autodiff failed"), 1);
    }

    return print(**module);
  };
}
