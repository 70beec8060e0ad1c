//===- SSD.h - Mamba2 state-space scan kernels for the CPU ------*- C++ -*-===//
//
// The selective state-space recurrence of one Mamba2 head (METHOD.md §1, §9):
//   S_t = exp(dt_t A) S_{t-1} + dt_t x_t (x) B_t,   y_t = S_t C_t + D x_t,   S_0 = 0 (or given)
// with x_t in R^P, B_t and C_t in R^N and S_t in R^{P x N}. Two forms compute it: the
// sequential recurrence (the exact oracle) and the chunked SSD algorithm (chunk length Q), in
// which everything but the short chain of chunk states is matrix-shaped work. Both are
// templates over float and double; the state is kept in the element type (float32 at least,
// per the design's precision rule).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CPU_SSD_H
#define NESTOR_CODEGEN_CPU_SSD_H

#include <cstdint>

namespace nestor::cpu {

/// One head's operands. Rows are time steps; strides are in elements between rows.
template <typename T> struct SSDHead {
  int64_t length = 0;    // L
  int64_t headDim = 0;   // P
  int64_t stateSize = 0; // N
  const T *x = nullptr;  // [L, P]
  int64_t xStride = 0;
  const T *b = nullptr; // [L, N]
  int64_t bStride = 0;
  const T *c = nullptr; // [L, N]
  int64_t cStride = 0;
  const T *delta = nullptr; // [L] (dt after softplus)
  int64_t deltaStride = 1;
  T a = 0;        // A = -exp(A_log)
  T d = 0;        // skip D
  T *y = nullptr; // [L, P] output
  int64_t yStride = 0;
  T *state = nullptr; // [P, N]: the initial state on entry (nullptr: zero), final on exit
};

/// The sequential recurrence, one step at a time.
template <typename T> void ssdSequential(const SSDHead<T> &head);

/// The chunked algorithm with chunks of `chunk` steps (the last one may be shorter).
/// `scratch` must hold ssdChunkedScratchSize(head, chunk) elements.
template <typename T> void ssdChunked(const SSDHead<T> &head, int64_t chunk, T *scratch);

int64_t ssdChunkedScratchSize(int64_t headDim, int64_t stateSize, int64_t chunk);

/// Cotangents of one head's scan. `dy` is the output cotangent (with yStride); the kernels
/// accumulate (+=) into dx, db, dc, dDelta (same strides as the inputs) and into dA, dD, and
/// set dState to the initial state's cotangent (when both it and head.state are given).
/// head.state must hold the *initial* state (or be null for zero); it is not modified.
template <typename T> struct SSDHeadGrad {
  const T *dy = nullptr;
  T *dx = nullptr, *db = nullptr, *dc = nullptr, *dDelta = nullptr;
  T dA = 0, dD = 0;
  T *dState = nullptr; // [P, N]
};

/// The sequential backward of METHOD.md §9 (the exact oracle), recomputing the states.
template <typename T> void ssdSequentialBackward(const SSDHead<T> &head, SSDHeadGrad<T> &grad);

/// The chunked backward: per chunk, the cotangents of the intra-chunk (C.B) terms, of the
/// inter-chunk read of the incoming state and of the chunk's state update, with the chunk-entry
/// states recomputed by a forward pass; the cumulative-decay cotangents flow into dDelta and dA
/// through a reverse cumulative sum.
template <typename T>
void ssdChunkedBackward(const SSDHead<T> &head, int64_t chunk, SSDHeadGrad<T> &grad);

} // namespace nestor::cpu

#endif // NESTOR_CODEGEN_CPU_SSD_H
