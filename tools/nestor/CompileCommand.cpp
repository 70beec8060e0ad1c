//===- CompileCommand.cpp - `nestor compile` --------------------------------===//
//
// Runs the compiler pipeline on a spec and prints the requested stage: the elastic IR the
// importer builds (`--emit mlir`), the train step after elastic-autodiff (`--emit train-step`),
// the planned kernel program of the train step for one batch shape (`--emit kernels`), and that
// program's kernels as CUDA C++ (`--emit cuda`) or as the PTX NVRTC compiles them to
// (`--emit ptx`, for `--arch`), and the program artifact the runtime executes (`--emit program`:
// the train step, forward and optimizer functions, and with --decode-context N the inference
// entry points nestor-run serves: the decode step and the prefill of --prefill-chunk tokens; a
// listing on stdout, the file with -o).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "nestor/Checkpoint.h"

#include "nestor/Compile.h"
#include "nestor/Import.h"
#include "nestor/Spec.h"
#include "passes/Passes.h"

#ifdef NESTOR_HAVE_CUDA
#include "lib/codegen/cuda/Emitter.h"
#include "lib/codegen/cuda/KernelCache.h"
#include "lib/codegen/cuda/Nvrtc.h"
#endif

#include "CLI/CLI.hpp"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/StringMap.h"
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
  int64_t decodeContext = 0;
  int64_t prefillChunk = nestor::kDefaultPrefillChunk;
  std::string arch = "sm_90";
};

#ifdef NESTOR_HAVE_CUDA
/// Prints every distinct kernel of the functions of `modules` as CUDA C++ or PTX, each once,
/// with the functions that use it; lists the ops that have no CUDA emitter yet and the host
/// steps.
int printCuda(llvm::ArrayRef<mlir::ModuleOp> modules, const CompileOptions &opts,
              llvm::raw_ostream &os) {
  using namespace nestor;
  struct Unique {
    cuda::KernelSource kernel;
    std::vector<std::string> users;
  };
  std::vector<Unique> unique;
  llvm::StringMap<size_t> byName;
  std::map<std::string, int> unsupported;
  int hostSteps = 0;
  for (mlir::ModuleOp module : modules)
    for (auto fn : module.getOps<mlir::func::FuncOp>()) {
      auto program = cuda::emitProgram(fn);
      if (!program)
        return cli::reportError(program.takeError(), 1);
      hostSteps += static_cast<int>(program->hostOps.size());
      for (mlir::Operation *op : program->unsupported)
        ++unsupported[op->getName().getStringRef().str()];
      for (cuda::EmittedKernel &k : program->kernels) {
        std::string name = k.kernel.fileName();
        auto [it, inserted] = byName.try_emplace(name, unique.size());
        if (inserted)
          unique.push_back({std::move(k.kernel), {}});
        unique[it->second].users.push_back("@" + fn.getSymName().str());
      }
    }
  const char *prefix = "//";
  os << prefix << " " << unique.size() << " distinct CUDA kernels";
  if (opts.emit == "ptx")
    os << ", PTX for " << opts.arch << " (NVRTC " << cuda::nvrtcVersion() / 1000 << "."
       << cuda::nvrtcVersion() % 1000 / 10 << ")";
  os << "; " << hostSteps << " host steps run on the host\n";
  if (!unsupported.empty()) {
    os << prefix << " no CUDA emitter yet:";
    for (auto &[name, n] : unsupported)
      os << " " << name << " (" << n << ")";
    os << "\n";
  }
  cuda::KernelCache cache(cuda::defaultKernelCacheDirectory(), "nestor-cuda-1");
  for (const Unique &u : unique) {
    os << "\n//===== " << u.kernel.fileName() << ": " << u.users.size() << " use"
       << (u.users.size() == 1 ? "" : "s") << "; launches:";
    for (const cuda::Launch &l : u.kernel.launches)
      os << " " << l.entry << "<<<(" << l.grid.x << "," << l.grid.y << "," << l.grid.z << "), ("
         << l.block.x << "," << l.block.y << "," << l.block.z << "), " << l.sharedBytes << ">>>";
    os << "\n";
    if (opts.emit == "cuda") {
      os << u.kernel.source;
      continue;
    }
    cuda::CompileRequest request;
    request.name = u.kernel.fileName();
    request.source = u.kernel.source;
    request.headers = cuda::deviceHeaders();
    request.arch = opts.arch;
    auto ptx = cache.getOrCompile(request);
    if (!ptx)
      return cli::reportError(ptx.takeError(), 1);
    os << (*ptx)->image;
  }
  return 0;
}
#endif
} // namespace

nestor::cli::Action nestor::cli::addCompileCommand(CLI::App &app) {
  auto opts = std::make_shared<CompileOptions>();
  app.add_option("SPEC", opts->specPath, "Model spec (.pbtxt)")->required();
  app.add_option("--emit", opts->emit, "Stage to print")
      ->check(CLI::IsMember({"mlir", "train-step", "kernels", "program", "cuda", "ptx"}))
      ->capture_default_str();
  CLI::Option *targetOption = app.add_option("--target", opts->target, "Backend")
                                  ->check(CLI::IsMember({"cpu", "cuda"}))
                                  ->capture_default_str();
  app.add_option("--arch", opts->arch, "CUDA: the architecture of --emit ptx (sm_80, sm_90, ...)")
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
  app.add_option("--decode-context", opts->decodeContext,
                 "Program: also the inference entry points (@decode_step, @prefill_N) with KV "
                 "caches of N positions (what nestor-run --program serves)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  addPrefillChunkOption(app, opts->prefillChunk);

  return [opts, targetOption]() -> int {
    // A compiler's -o replaces an earlier output, but never the spec it reads.
    if (opts->output != "-")
      if (llvm::Error err = ckpt::checkOutputFile(opts->output, {opts->specPath}, "-o"))
        return reportError(std::move(err));
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

    if (opts->decodeContext > 0 && opts->emit != "program")
      return reportError(llvm::createStringError("--decode-context adds an entry point to "
                                                 "programs: it needs --emit program"));
    bool cudaStage = opts->emit == "cuda" || opts->emit == "ptx";
    if (cudaStage && opts->target != "cuda" && targetOption->count() > 0)
      return reportError(
          llvm::createStringError("--emit %s needs --target cuda", opts->emit.c_str()));
    mlir::MLIRContext context;
#ifndef NESTOR_HAVE_CUDA
    if (cudaStage || opts->target == "cuda")
      return reportError(llvm::createStringError(
          "this nestor was built without the CUDA toolkit (NVRTC): --target cuda is unavailable"));
#endif
    if (opts->emit == "kernels" || opts->emit == "program" || cudaStage) {
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
      // The optimizer of the train step's parameters too.
      std::vector<StepArg> params;
      for (auto fn : (*kernels)->getOps<mlir::func::FuncOp>()) {
        if (!fn.getSymName().ends_with("_train_step"))
          continue;
        for (unsigned i = 0; i < fn.getNumArguments(); ++i)
          if (auto name = fn.getArgAttrOfType<mlir::StringAttr>(i, "elastic.param")) {
            auto type = mlir::cast<mlir::RankedTensorType>(fn.getArgument(i).getType());
            StepArg a;
            a.name = name.str();
            a.isParam = true;
            a.shape.assign(type.getShape().begin(), type.getShape().end());
            a.elementType = type.getElementType();
            params.push_back(std::move(a));
          }
      }
      auto optimizer = compileOptimizer(context, params, spec->training().optimizer());
      if (!optimizer)
        return reportError(optimizer.takeError(), 1);
      if (opts->emit == "program") {
        if (opts->target != "cpu")
          return reportError(llvm::createStringError("--emit program writes CPU programs only so "
                                                     "far (CUDA kernels in programs: issue 14)"));
        // Every planned function (the train step, the forward functions, the optimizer) as one
        // program file; on stdout its readable listing.
        auto program = emitProgram(**kernels, "cpu");
        if (!program)
          return reportError(program.takeError(), 1);
        auto more = emitProgram(*(*optimizer)->module, "cpu");
        if (!more)
          return reportError(more.takeError(), 1);
        for (program::Function &f : *more->mutable_functions())
          *program->add_functions() = std::move(f);
        if (opts->decodeContext > 0) {
          auto decode = compileInference(context, *spec, opts->decodeContext, opts->depthOrder,
                                         opts->prefillChunk);
          if (!decode)
            return reportError(decode.takeError(), 1);
          for (program::Function &fn : *decode)
            *program->add_functions() = std::move(fn);
        }
        if (opts->output == "-") {
          llvm::outs() << engine::describeProgram(*program);
          return 0;
        }
        if (engine::Status s = engine::writeProgramFile(*program, opts->output))
          return reportError(toError(s));
        return 0;
      }
#ifdef NESTOR_HAVE_CUDA
      if (cudaStage) {
        std::string error;
        auto out = mlir::openOutputFile(opts->output, &error);
        if (!out)
          return reportError(llvm::createStringError(error));
        if (int rc = printCuda({**kernels, *(*optimizer)->module}, *opts, out->os()))
          return rc;
        out->keep();
        return 0;
      }
#endif
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
