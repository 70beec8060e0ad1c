//===- Nvrtc.h - Compile generated CUDA C++ at run time with NVRTC ---*- C++ -*-===//
//
// The CUDA backend emits one CUDA C++ translation unit per fused kernel and compiles it here,
// at run time, for the architecture of the device that will run it (or for sm_80/sm_90 in CI,
// where there is no GPU: NVRTC needs no driver). Nothing is read from disk: the device helper
// header and any other header a kernel includes travel in the request as (include name, text)
// pairs, so a binary compiles the same kernels wherever it runs.
//
// Entry points are `extern "C"` so that their PTX/CUBIN names are the source names and the
// driver can look them up without name-expression bookkeeping.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CUDA_NVRTC_H
#define NESTOR_CODEGEN_CUDA_NVRTC_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <string>
#include <utility>
#include <vector>

namespace nestor::cuda {

/// What NVRTC is asked to produce. PTX is portable to every later architecture (the driver
/// JIT-compiles it on load); CUBIN is native code for exactly one architecture and loads
/// without a JIT step.
enum class Output { PTX, CUBIN };

/// "ptx" or "cubin": the file extension of a cached image and the word used in messages.
llvm::StringRef outputName(Output output);

/// One (include name, text) header: `#include "<name>"` in the source resolves to `text`.
using EmbeddedHeader = std::pair<std::string, std::string>;

struct CompileRequest {
  /// The program's file name as it appears in diagnostics and line info, e.g. "kernel_17.cu".
  std::string name;
  std::string source;
  std::vector<EmbeddedHeader> headers;
  /// Extra NVRTC options, after the ones compile() always passes (-std=c++17,
  /// --gpu-architecture=..., -default-device).
  std::vector<std::string> options;
  /// "sm_80", "sm_90", "sm_90a", ... (or the compute_XX spelling). compile() asks NVRTC for
  /// compute_XX when producing PTX and sm_XX when producing CUBIN.
  std::string arch;
  Output output = Output::PTX;
};

struct CompiledModule {
  /// The PTX text (without a trailing NUL; std::string::c_str() supplies one for the driver)
  /// or the CUBIN bytes.
  std::string image;
  /// NVRTC's program log: warnings, usually empty on success.
  std::string log;
  Output kind = Output::PTX;
  /// The architecture as requested.
  std::string arch;
};

/// The NVRTC library's version as major * 1000 + minor * 10 (13.0 -> 13000), the encoding of
/// CUDA_VERSION.
int nvrtcVersion();

/// The headers every generated kernel may include: "nestor_device.cuh"
/// (lib/codegen/cuda/device/), embedded in the library at build time.
std::vector<EmbeddedHeader> deviceHeaders();

/// The options compile() passes to NVRTC for `request`, in order: the fixed ones, then the
/// request's own.
std::vector<std::string> nvrtcOptions(const CompileRequest &request);

/// Compiles `request.source` with NVRTC. A failure is an error whose message has the program
/// log (`name(line): error: ...` lines) with, under each error, the offending source line quoted
/// (from the program or the embedded header the error names) where NVRTC did not quote it.
llvm::Expected<CompiledModule> compile(const CompileRequest &request);

} // namespace nestor::cuda

#endif // NESTOR_CODEGEN_CUDA_NVRTC_H
