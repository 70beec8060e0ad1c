//===- Emitters.h - The CUDA emitters of each op family ----------*- C++ -*-===//
//
// One registration function per file of lib/codegen/cuda/emit/, each attaching
// CudaEmitOpInterface to the ops of its family; registerCudaEmitters calls them all.
// Shared helpers for writing kernels live here too.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CUDA_EMIT_EMITTERS_H
#define NESTOR_CODEGEN_CUDA_EMIT_EMITTERS_H

#include "lib/codegen/cuda/Emitter.h"

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectRegistry.h"
#include "llvm/Support/FormatVariadic.h"

#include <string>

namespace nestor::cuda {

void registerRowEmitters(mlir::DialectRegistry &registry);       // emit/Rows.cpp
void registerLossEmitters(mlir::DialectRegistry &registry);      // emit/Losses.cpp
void registerOptimizerEmitters(mlir::DialectRegistry &registry); // emit/Optimizer.cpp
void registerGemmEmitters(mlir::DialectRegistry &registry);      // emit/Gemm.cpp
void registerMambaEmitters(mlir::DialectRegistry &registry);     // emit/Mamba.cpp
void registerAttentionEmitters(mlir::DialectRegistry &registry); // emit/Attention.cpp

/// The matrix view [rows, width] of a tensor (rank 0: 1 x 1).
inline std::pair<int64_t, int64_t> rowsAndWidth(mlir::Value v) {
  auto t = mlir::cast<mlir::RankedTensorType>(v.getType());
  if (t.getRank() == 0)
    return {1, 1};
  return {t.getNumElements() / t.getShape().back(), t.getShape().back()};
}

inline int64_t numElements(mlir::Value v) {
  return mlir::cast<mlir::RankedTensorType>(v.getType()).getNumElements();
}

/// The element type's CUDA name.
inline std::string elementName(mlir::Value v) {
  return cudaType(mlir::cast<mlir::ShapedType>(v.getType()).getElementType());
}

/// A 1-D block size for `width` items of work per block: a multiple of 32, at most `limit`.
inline int64_t blockFor(int64_t width, int64_t limit = 256) {
  int64_t b = (width + 31) / 32 * 32;
  return b < 32 ? 32 : (b > limit ? limit : b);
}

/// A C++ literal that reads back as exactly `x` (17 significant digits).
inline std::string doubleLiteral(double x) { return llvm::formatv("{0:e16}", x).str(); }

} // namespace nestor::cuda

#endif // NESTOR_CODEGEN_CUDA_EMIT_EMITTERS_H
