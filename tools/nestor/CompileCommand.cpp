//===- CompileCommand.cpp - `nestor compile` --------------------------------===//
//
// Runs the compiler pipeline on a spec and prints the requested stage. Today's stages: the
// elastic IR the importer builds (`--emit mlir`) and the train step after elastic-autodiff
// (`--emit train-step`). Later stages (kernels, CUDA, PTX) join the `--emit` choices as the
// backends land.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

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
};
} // namespace

nestor::cli::Action nestor::cli::addCompileCommand(CLI::App &app) {
  auto opts = std::make_shared<CompileOptions>();
  app.add_option("SPEC", opts->specPath, "Model spec (.pbtxt)")->required();
  app.add_option("--emit", opts->emit, "Stage to print")
      ->check(CLI::IsMember({"mlir", "train-step"}))
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

  return [opts]() -> int {
    auto spec = spec::loadSpecFile(opts->specPath);
    if (!spec)
      return reportError(spec.takeError());

    mlir::MLIRContext context;
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

    std::string error;
    auto out = mlir::openOutputFile(opts->output, &error);
    if (!out)
      return reportError(llvm::createStringError(error));
    mlir::OpPrintingFlags flags;
    if (opts->generic)
      flags.printGenericOpForm();
    (*module)->print(out->os(), flags);
    out->os() << "\n";
    out->keep();
    return 0;
  };
}
