//===- Build.cpp - Inference executables: runtime + program + weights ----===//
//
// The executable is not generated code: it is the runtime (nestor-run, built with Nestor) with
// the compiled decode step attached. So what a deployment runs is what the kernel pipeline
// produced for the sliced model, through the runtime `nestor generate` uses, and building one
// takes a compile of the model (seconds), not a C++ compile.
//
// Both files are written beside their final names and renamed into place only once complete:
// a failed or interrupted build never leaves half an executable where a deployment would run
// it.
//
//===----------------------------------------------------------------------===//
#include "nestor/Build.h"

#include "engine/program/Program.h"
#include "engine/weights/Safetensors.h"
#include "nestor/Checkpoint.h"
#include "nestor/Compile.h"
#include "nestor/EmitProgram.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace nestor;
using namespace nestor::build;

namespace {

/// How the spec is named in errors and in the program's description.
std::string specLabel(const spec::ModelSpec &dense) {
  return dense.name().empty() ? std::string("the dense spec") : "spec '" + dense.name() + "'";
}

/// Why `dense` cannot be built, or success.
llvm::Error checkSpec(const spec::ModelSpec &dense) {
  std::string label = specLabel(dense);
  if (dense.has_elastic())
    return llvm::createStringError(
        "build: %s has an elastic section; an executable serves one dense model (a budget cut "
        "out of the run: `nestor build RUN --budget NAME` slices it first, `nestor slice RUN "
        "--budget NAME --out DIR` writes its dense spec and weights)",
        label.c_str());
  // The data section names training files relative to a spec file this build may not have;
  // they play no part in inference.
  spec::ModelSpec checked = dense;
  checked.mutable_data()->clear_text_files();
  if (llvm::Error err = spec::validateSpec(checked, label))
    return llvm::createStringError("build: " + llvm::toString(std::move(err)));
  if (dense.data().tokenizer() != spec::BYTE &&
      dense.data().tokenizer() != spec::TOKENIZER_UNSPECIFIED)
    return llvm::createStringError("build: %s: only the byte tokenizer is supported",
                                   label.c_str());
  return llvm::Error::success();
}

std::string describe(const spec::ModelSpec &dense, int64_t context) {
  const spec::Architecture &a = dense.architecture();
  spec::FixedSizes fixed = spec::fixedSizes(dense);
  return llvm::formatv("greedy text generation with the dense model '{0}': pattern {1} ({2} "
                       "layers), hidden {3}, vocab {4}, {5} embeddings; context {6} tokens",
                       dense.name(), a.hybrid_override_pattern(), fixed.layers.size(),
                       a.hidden_size(), fixed.vocabSize, fixed.tiedEmbeddings ? "tied" : "untied",
                       context)
      .str();
}

/// The parameters `fn` reads, taken from `weights` with their shapes checked.
llvm::Expected<train::TensorMap> programWeights(const program::Function &fn,
                                                const train::TensorMap &weights) {
  train::TensorMap shipped;
  for (const engine::Parameter &p : engine::parameters(fn)) {
    auto it = weights.find(p.name);
    if (it == weights.end())
      return llvm::createStringError("build: the weights have no tensor '%s' (shape %s)",
                                     p.name.c_str(), ckpt::shapeString(p.shape).c_str());
    const train::Tensor &t = it->second;
    if (t.shape != p.shape || t.data.size() != engine::elementCount(p.shape))
      return llvm::createStringError(
          "build: the weights' '%s' has shape %s (%zu values), the model expects %s",
          p.name.c_str(), ckpt::shapeString(t.shape).c_str(), t.data.size(),
          ckpt::shapeString(p.shape).c_str());
    shipped.emplace(p.name, t);
  }
  return shipped;
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
bool writeAll(int fd, const char *bytes, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, bytes, size);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

} // namespace

std::string nestor::build::defaultRuntime() {
  std::string self = llvm::sys::fs::getMainExecutable(nullptr, nullptr);
  if (self.empty())
    return "";
  llvm::SmallString<256> path(llvm::sys::path::parent_path(self));
  llvm::sys::path::append(path, "nestor-run");
  return path.str().str();
}

llvm::Expected<program::Program>
nestor::build::compileExecutableProgram(mlir::MLIRContext &context, const spec::ModelSpec &dense,
                                        const BuildOptions &options) {
  if (llvm::Error err = checkSpec(dense))
    return err;
  if (options.context < 1)
    return llvm::createStringError("build: the context must be at least 1 token, not %lld",
                                   static_cast<long long>(options.context));
  auto fns = compileInference(context, dense, options.context, {}, options.prefillChunk);
  if (!fns)
    return llvm::createStringError("build: compiling the decode step of %s: %s",
                                   specLabel(dense).c_str(),
                                   llvm::toString(fns.takeError()).c_str());
  program::Program out;
  out.set_generator(programGenerator());
  out.set_target("cpu");
  out.set_description(describe(dense, options.context));
  for (program::Function &fn : *fns)
    *out.add_functions() = std::move(fn);
  if (engine::Status s = engine::validateProgram(out))
    return toError(s);
  return out;
}

/// Refuses outputs the build may not replace (BuildOptions::force, ::inputs); writes nothing.
static llvm::Error checkBuildOutputs(const std::string &outPath, const BuildOptions &options) {
  auto refuse = [](const llvm::Twine &what) {
    return llvm::createStringError(std::make_error_code(std::errc::invalid_argument),
                                   "-o: " + what + " (nothing was written)");
  };
  std::vector<std::string> inputs = options.inputs;
  if (!options.runtime.empty())
    inputs.push_back(options.runtime);
  std::string weights = outPath + ".safetensors";
  for (const std::string &path : {outPath, weights})
    if (llvm::Error err = ckpt::checkOutputFile(path, inputs, "-o"))
      return err;
  if (llvm::sys::fs::exists(outPath)) {
    auto attached = engine::readAttachedProgram(outPath);
    if (!attached.ok() || !*attached)
      return refuse(outPath + " exists and is not an executable `nestor build` wrote");
    if (!options.force)
      return refuse(outPath +
                    " exists (an executable `nestor build` wrote); pass --force to "
                    "replace it and " +
                    weights);
  } else if (llvm::sys::fs::exists(weights)) {
    return refuse(weights + " exists, without the executable " + outPath +
                  " it would belong to; remove it or choose another -o");
  }
  return llvm::Error::success();
}

llvm::Error nestor::build::buildExecutable(const spec::ModelSpec &dense,
                                           const train::TensorMap &weights,
                                           const std::string &outPath,
                                           const BuildOptions &options) {
  if (llvm::Error err = checkBuildOutputs(outPath, options))
    return err;
  mlir::MLIRContext context;
  auto program = compileExecutableProgram(context, dense, options);
  if (!program)
    return program.takeError();
  auto shipped = programWeights(program->functions(0), weights);
  if (!shipped)
    return shipped.takeError();

  std::string runtimePath = options.runtime.empty() ? defaultRuntime() : options.runtime;
  auto runtime = llvm::MemoryBuffer::getFile(runtimePath, /*IsText=*/false,
                                             /*RequiresNullTerminator=*/false);
  if (runtimePath.empty() || !runtime)
    return llvm::createStringError(
        "build: cannot read the runtime executable '%s'%s (it is built with nestor, beside it; "
        "--runtime names another)",
        runtimePath.c_str(), runtime ? "" : (": " + runtime.getError().message()).c_str());
  llvm::StringRef runtimeBytes = (*runtime)->getBuffer();
  auto attached = engine::readAttachedProgram(runtimePath);
  if (!attached.ok() || *attached)
    return llvm::createStringError(
        "build: '%s' is not the bare runtime: it carries a program already (pass nestor-run, "
        "not an executable nestor build wrote)",
        runtimePath.c_str());

  std::string programBytes = engine::encodeProgram(*program);
  std::string trailer = engine::attachmentTrailer(programBytes.size());

  int fd = -1;
  auto tmp = ckpt::createTempFileBeside(outPath, &fd);
  if (!tmp)
    return tmp.takeError();
  bool committed = false;
  llvm::scope_exit cleanup([&] {
    if (fd >= 0)
      ::close(fd);
    if (!committed)
      ::unlink(tmp->c_str());
  });
  auto ioError = [&](const char *what) {
    return llvm::createStringError(std::error_code(errno, std::generic_category()),
                                   "build: %s: %s '%s': %s", outPath.c_str(), what, tmp->c_str(),
                                   std::strerror(errno));
  };
  if (!writeAll(fd, runtimeBytes.data(), runtimeBytes.size()) ||
      !writeAll(fd, programBytes.data(), programBytes.size()) ||
      !writeAll(fd, trailer.data(), trailer.size()))
    return ioError("cannot write");
  // rwx for whoever may read it, as the umask allows (a compiler's output would be).
  mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd, 0777 & ~mask) != 0)
    return ioError("cannot make executable");
  if (::fsync(fd) != 0)
    return ioError("cannot sync");
  int closing = fd;
  fd = -1;
  if (::close(closing) != 0)
    return ioError("cannot close");

  ckpt::Metadata metadata = {{"format", "pt"}, {"nestor.model", dense.name()}};
  if (llvm::Error err = ckpt::writeSafetensors(outPath + ".safetensors", *shipped, metadata))
    return err;
  if (std::error_code ec = llvm::sys::fs::rename(*tmp, outPath))
    return llvm::createStringError(ec, "build: %s: cannot move the executable into place: %s",
                                   outPath.c_str(), ec.message().c_str());
  committed = true;
  return llvm::Error::success();
}
