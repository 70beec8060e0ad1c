//===- Build.h - Standalone inference executables ----------------*- C++ -*-===//
//
// `nestor build RUN/ --budget B -o BIN`: one dense model (a budget `nestor slice` cut, or any
// dense spec) becomes a C++ program whose layer kernels have the model's sizes as compile-time
// constants, compiled by the system C++ compiler. The program needs no Nestor file at run
// time: its weights ship beside it as BIN.safetensors, and
//   BIN --prompt TEXT [--max-tokens N] [--weights PATH] [--print-tokens]
// writes the same text `nestor generate` writes for that model (greedy, byte tokenizer).
//
// The generated translation unit is the fixed runtime (runtime/build/standalone/
// nestor_standalone.h, embedded in this library at build time) followed by the model: its
// sizes as constexpr, one layer type per layer of the pattern instantiated with that layer's
// sizes (a heterogeneous dense model's layer_overrides give different instantiations), and a
// model struct that runs them in order. Then the same model on a GPU: each CPU layer type's
// GPU twin (gpu::Layer<...>), whose kernels (runtime/build/standalone/
// nestor_standalone_device.cuh, one NESTOR_SD_* line per distinct layer type) are compiled to
// PTX here with NVRTC and embedded; `BIN --device auto|cpu|cuda` picks where it runs.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_BUILD_H
#define NESTOR_BUILD_H

#include "nestor/Spec.h"
#include "nestor/Tensor.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace nestor::build {

struct BuildOptions {
  /// The C++ compiler; empty: $CXX (split at spaces, so "ccache g++" works), else `c++`.
  std::string compiler;
  /// Flags after -std=c++17 (the runtime adds its own AVX2/AVX-512 clones on x86, so no
  /// -march is needed). Avoid -ffast-math: it changes the tokens.
  std::vector<std::string> flags = {"-O2"};
  /// Also write the generated source as `outPath + ".cpp"`.
  bool keepSource = false;
  /// Also give the program its GPU kernels, as PTX compiled here with NVRTC, so that it runs
  /// on a CUDA GPU where the driver finds one (`BIN --device auto|cpu|cuda`). Without the
  /// CUDA toolkit in this Nestor (cudaAvailable()) the program is CPU-only whatever this says.
  bool cuda = true;
  /// The PTX's architecture: it loads on GPUs of this architecture and every later one.
  std::string cudaArch = "sm_80";
};

/// Whether this Nestor can compile GPU kernels into the programs it builds (it was built with
/// the CUDA toolkit's NVRTC).
bool cudaAvailable();

/// One tensor the generated program reads: its name and shape.
struct TensorShape {
  std::string name;
  std::vector<int64_t> shape;
};

/// The tensors the program built for `dense` reads, in the order it reads them. Fails like
/// emitStandaloneSource.
llvm::Expected<std::vector<TensorShape>> standaloneTensors(const spec::ModelSpec &dense);

/// The generated translation unit for `dense`. Fails, saying why, for a spec with an elastic
/// section (slice it first) or one that does not validate.
llvm::Expected<std::string> emitStandaloneSource(const spec::ModelSpec &dense,
                                                 const BuildOptions &options = {});

/// Generates, compiles and writes `outPath` (the executable) and `outPath + ".safetensors"`
/// (the tensors of standaloneTensors taken from `weights`, which must hold each with its
/// shape). Both are written atomically: nothing at `outPath` unless the build succeeded. A
/// failing compiler's exit status and output are in the error.
llvm::Error buildBinary(const spec::ModelSpec &dense, const train::TensorMap &weights,
                        const std::string &outPath, const BuildOptions &options = {});

} // namespace nestor::build

#endif // NESTOR_BUILD_H
