//===- Build.h - Inference executables: runtime + program + weights -*- C++ -*-===//
//
// `nestor build RUN/ --budget B -o BIN`: one dense model (a budget `nestor slice` cut, or any
// dense spec) is compiled by the kernel pipeline into its `@decode_step` program (KV caches of
// `context` positions, Mamba conv and SSM states as state buffers), and written as
//   BIN              the runtime executable nestor-run with the program attached (one file:
//                    nestor-run's bytes, the program file, a trailer; engine/program/Program.h)
//   BIN.safetensors  the float32 weights the program reads, and no more
// BIN needs no Nestor file, no MLIR and no LLVM at run time (the system's OpenBLAS, OpenMP,
// zlib and C++ runtime only):
//   BIN --prompt TEXT [--max-tokens N] [--weights PATH] [--print-tokens] [--stats] [--bench N]
// writes the same text `nestor generate` writes for that model (greedy, byte tokenizer),
// because both run the same compiled decode step through the same runtime.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_BUILD_H
#define NESTOR_BUILD_H

#include "engine/program/nestor_program.pb.h"
#include "nestor/Spec.h"
#include "nestor/Tensor.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir {
class MLIRContext;
} // namespace mlir

namespace nestor::build {

struct BuildOptions {
  /// The runtime executable the program is attached to; empty: defaultRuntime().
  std::string runtime;
  /// The decode step's context: the KV caches' positions, so the longest prompt (with its BOS)
  /// plus generated tokens the executable serves. Only memory grows with it (attention reads
  /// the positions filled so far); a model without attention has no limit.
  int64_t context = 4096;
  /// The longest prefill entry point (nestor/Compile.h, prefillChunks; kDefaultPrefillChunk
  /// there): prompts are read that many tokens per call.
  int64_t prefillChunk = 256;
  /// Replace an executable (and its weights) that `nestor build` wrote earlier at the output
  /// path. Without it an existing output is refused; anything else there is refused always.
  bool force = false;
  /// Files the build reads (the run folder): the outputs must not be one of them.
  std::vector<std::string> inputs;
};

/// `nestor-run` beside the running executable (bin/ of a build or an install), or "" when the
/// running executable cannot be found.
std::string defaultRuntime();

/// The program an executable of `dense` carries: its inference entry points (`@decode_step`,
/// `@prefill_<C>`) for `options.context` positions, target "cpu", with a description for --help.
/// Fails, saying why, for a spec with an elastic section (slice it first), one that does not
/// validate, or a tokenizer other than the byte tokenizer.
llvm::Expected<program::Program> compileExecutableProgram(mlir::MLIRContext &context,
                                                          const spec::ModelSpec &dense,
                                                          const BuildOptions &options = {});

/// Compiles the program of `dense` and writes `outPath` (the runtime with the program
/// attached, executable) and `outPath + ".safetensors"` (the program's parameters taken from
/// `weights`, each of which must be there with its shape). Nothing is written unless all of it
/// succeeds, and `outPath` appears only complete (written beside it, then renamed).
llvm::Error buildExecutable(const spec::ModelSpec &dense, const train::TensorMap &weights,
                            const std::string &outPath, const BuildOptions &options = {});

} // namespace nestor::build

#endif // NESTOR_BUILD_H
