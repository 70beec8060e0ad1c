//===- Emitter.h - Kernel-dialect ops as CUDA C++ ----------------*- C++ -*-===//
//
// Each kernel op writes itself as one CUDA C++ translation unit through CudaEmitOpInterface
// (dialects/kernel/KernelInterfaces.td); the models live in lib/codegen/cuda/emit/, one file
// per family of ops. A translation unit includes "nestor_device.cuh" (embedded, see Nvrtc.h),
// has `extern "C"` entry points, and bakes in every size the op's types fix; its launches say
// how the runtime calls those entry points.
//
// Conventions every emitter follows:
// - Activations `tensor<BxLxC>` are rows = B*L of C channels, row-major, as on the CPU
//   (lib/codegen/cpu/Kernels.h); each op computes exactly what its CPU kernel computes.
// - A mask operand is `[m_0 .. m_{n-1}, phi, sigma]` (n + 2 values). Optional operands that are
//   absent get no parameter: the emitter writes the unmasked formula.
// - Prefix-dense ops take each mask's active extent (active entries per group) as a
//   `long long` argument, which the runtime computes from the mask on the host exactly as the
//   CPU executor does (one past the last nonzero entry of the first group). Ops that are not
//   prefix-dense compute the full width, and need no extent.
// - Float32 kernels accumulate reductions in float32 and float64 kernels in float64 unless an
//   op says otherwise; outputs never alias inputs.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CUDA_EMITTER_H
#define NESTOR_CODEGEN_CUDA_EMITTER_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Operation.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace nestor::cuda {

/// Where one kernel parameter's value comes from at launch.
struct KernelArg {
  enum class Kind {
    Operand, // the device buffer of operand `index`
    Result,  // the device buffer of result `index`
    Extent,  // long long: active entries per group of mask operand `index` (in `groups` groups)
    Scratch, // the device scratch buffer `index` of the kernel (KernelSource::scratchBytes)
  };
  Kind kind = Kind::Operand;
  unsigned index = 0;
  int64_t groups = 1;
  /// The parameter's name in the source.
  std::string name;
  /// Operand: the kernel writes through it (an in-place update such as kernel.adamw's), so its
  /// parameter is not `const`.
  bool writable = false;
};

struct Dim3 {
  int64_t x = 1, y = 1, z = 1;
};

/// One launch of an entry point.
struct Launch {
  std::string entry;
  Dim3 grid, block;
  int64_t sharedBytes = 0; // dynamic shared memory
  std::vector<KernelArg> args;
};

/// The CUDA form of one kernel op.
struct KernelSource {
  /// The op family, e.g. "rmsnorm": the start of the file name.
  std::string kind;
  /// The whole translation unit.
  std::string source;
  /// Run in order on one stream.
  std::vector<Launch> launches;
  /// Device scratch buffers the launches share (bytes each), zeroed before the first launch.
  std::vector<int64_t> scratchBytes;

  /// "<kind>_<first 8 hex digits of the source's SHA-256>.cu": identical kernels (the same op
  /// at the same sizes) get the same name, source and cache entry.
  std::string fileName() const;
};

/// "float", "double", "int" (i32), "long long" (i64), "unsigned char" (i1).
std::string cudaType(mlir::Type elementType);

/// The C++ type of each parameter of `launch` on `op`, in order (see entrySignature).
std::vector<std::string> parameterTypes(mlir::Operation *op, const Launch &launch);

/// `extern "C" __global__ void <entry>(<params>)` for `launch`'s arguments on `op`: operand
/// buffers `const T *__restrict__`, result buffers `T *__restrict__`, extents `long long`,
/// scratch `void *`.
std::string entrySignature(mlir::Operation *op, const Launch &launch);

/// The first lines of every translation unit: the header include and a comment naming `op`.
std::string prelude(mlir::Operation *op);

/// Attaches CudaEmitOpInterface to the kernel ops that have a CUDA emitter.
void registerCudaEmitters(mlir::DialectRegistry &registry);

/// registerCudaEmitters for `context`, unless its kernel ops have them already. emitProgram and
/// the CUDA executor call it, so their callers need not.
void ensureCudaEmitters(mlir::MLIRContext &context);

/// A kernel op and its CUDA form.
struct EmittedKernel {
  mlir::Operation *op;
  KernelSource kernel;
};

/// The CUDA form of a planned kernel function, in program order.
struct EmittedProgram {
  std::vector<EmittedKernel> kernels;
  /// `kernel.host` steps: they run on the host, as on the CPU.
  std::vector<mlir::Operation *> hostOps;
  /// Kernel ops with no CUDA emitter yet (named by the caller, never silently skipped).
  std::vector<mlir::Operation *> unsupported;
};

/// Emits every kernel op of `fn` (ensureCudaEmitters first). Fails (with the op's diagnostic) when
/// an emitter fails.
llvm::Expected<EmittedProgram> emitProgram(mlir::func::FuncOp fn);

} // namespace nestor::cuda

#endif // NESTOR_CODEGEN_CUDA_EMITTER_H
