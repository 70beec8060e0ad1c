//===- Kernels.h - The CPU kernels of the kernel dialect --------*- C++ -*-===//
//
// One function per kernel-dialect op (dialects/kernel/KernelOps.td), templates over float and
// double, on dense row-major buffers. Activations are [rows, width] with rows = batch * length
// (row r is token r % L of sequence r / L). These functions are the CPU backend's definition of
// each kernel; the executor (runtime/Executor.cpp) calls them with buffers from the memory plan.
//
// Conventions shared by every kernel:
// - A mask operand is the run-time value of an `!elastic.mask<axis, n>`: n multipliers followed
//   by phi (the kept fraction the masked norm corrects with) and sigma (the norm output scale),
//   n + 2 elements, the layout of the mask cotangent (ElasticTypes.td). nullptr means "no mask":
//   every multiplier 1, phi = sigma = 1.
// - A mask cotangent output (dMask) has the same n + 2 layout and is overwritten. Only the
//   entries the kernel's formula touches are written; the rest are set to 0.
// - Prefix-dense execution: an `active` argument says that only a prefix of an axis (per group
//   where the axis is grouped) is nonzero in the mask. Kernels compute that prefix only, write 0
//   to the rest of their outputs, and write 0 to the mask cotangent outside it (hard masks never
//   read those entries: METHOD.md §5). active == the full size is ordinary full-width execution.
// - Outputs never alias inputs unless a function says so. Kernels overwrite their outputs
//   (no accumulation) unless the argument is documented "accumulates".
// - Threading: kernels parallelise internally with OpenMP over independent rows/heads; results
//   do not depend on the thread count (reductions are ordered per thread-independent blocks).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CPU_KERNELS_H
#define NESTOR_CODEGEN_CPU_KERNELS_H

#include <cstdint>
#include <vector>

namespace nestor::cpu {

//===----------------------------------------------------------------------===//
// GEMM (Gemm.cpp): through OpenBLAS.
//===----------------------------------------------------------------------===//

/// C[m, n] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when the flag is set.
/// lda/ldb/ldc are the row strides of A, B and C as stored.
template <typename T>
void gemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, T alpha, const T *a,
          int64_t lda, const T *b, int64_t ldb, T beta, T *c, int64_t ldc);

/// Runs of consecutive indices: {first, length}.
using IndexRuns = std::vector<std::pair<int64_t, int64_t>>;

/// y[i] = sum over the column runs of W[i, c] x[c] (+ y[i] when `accumulate`), for every row i
/// in the row runs of a row-major W with leading dimension ld; x is indexed by W's columns, y
/// by its rows, and y outside the row runs is left as it is. A matrix-vector product restricted
/// to a budget's rows and columns that are no prefix (kept heads within groups, a channel
/// prefix of each head): each row is read once front to back across its runs, rows several at
/// a time, where one BLAS call per run would sweep the rows once per column run.
template <typename T>
void gemvRuns(const T *w, int64_t ld, const IndexRuns &rows, const IndexRuns &cols, const T *x,
              bool accumulate, T *y);

//===----------------------------------------------------------------------===//
// Row kernels (Rows.cpp).
//===----------------------------------------------------------------------===//

/// out[r, c] = table[tokens[r], c] * m[c]. Returns the index of the first token outside
/// [0, vocab) (nothing written then), or -1.
template <typename T>
int64_t embedForward(const int32_t *tokens, int64_t rows, const T *table, int64_t vocab, int64_t d,
                     const T *mask, int64_t dActive, T *out);
/// dTable[v, c] = sum over rows with token v of dOut[r, c] * m[c] (the whole table is written);
/// dMask[c] = sum_r dOut[r, c] * table[tokens[r], c] (when dMask is given).
template <typename T>
void embedBackward(const int32_t *tokens, int64_t rows, const T *table, int64_t vocab, int64_t d,
                   const T *mask, int64_t dActive, const T *dOut, T *dTable, T *dMask);

/// Masked RMSNorm (METHOD.md §5): y = m * sigma * w * x / sqrt(mean_c x^2 + eps * phi), the
/// mean over all d channels.
template <typename T>
void rmsnormForward(const T *x, int64_t rows, int64_t d, const T *w, double eps, const T *mask,
                    int64_t dActive, T *y);
/// dx, dw (overwritten) and the mask cotangent [dm, dphi, dsigma].
template <typename T>
void rmsnormBackward(const T *x, int64_t rows, int64_t d, const T *w, double eps, const T *mask,
                     int64_t dActive, const T *dy, T *dx, T *dw, T *dMask);

/// y[r, c] = x[r, c] * m[c / block] for c < width (block channels share one multiplier: e.g.
/// an attention head's head_dim channels). `active` counts active mask entries per group of
/// `groups` equal groups (entry i is active when i % (entries / groups) < active).
template <typename T>
void maskForward(const T *x, int64_t rows, int64_t width, int64_t block, const T *mask,
                 int64_t groups, int64_t active, T *y);
/// dx = dy * m[c / block]; dMask[i] = sum over rows and the block's channels of dy * x.
template <typename T>
void maskBackward(const T *x, const T *dy, int64_t rows, int64_t width, int64_t block,
                  const T *mask, int64_t groups, int64_t active, T *dx, T *dMask);

/// The MLP activation with its FFN mask: a = relu(u * m)^2.
template <typename T>
void relu2Forward(const T *u, int64_t rows, int64_t f, const T *mask, int64_t fActive, T *a);
/// du = dA * 2 relu(u m) * m; dMask[c] = sum_r dA * 2 relu(u m) * u.
template <typename T>
void relu2Backward(const T *u, int64_t rows, int64_t f, const T *mask, int64_t fActive, const T *dA,
                   T *du, T *dMask);

/// out = h + gamma * block over n elements (the depth gate; gamma = 1 for a plain residual).
template <typename T> void depthGateForward(const T *h, const T *block, int64_t n, T gamma, T *out);
/// dBlock = gamma * dy; *dGamma = sum dy * block.
template <typename T>
void depthGateBackward(const T *block, const T *dy, int64_t n, T gamma, T *dBlock, T *dGamma);

/// Mean over non-ignored rows of -log softmax(logits)[target] (0 when every row is ignored).
template <typename T>
T crossEntropyForward(const T *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                      int64_t ignoreIndex);
/// dLogits = dLoss / count * (softmax - onehot(target)), 0 on ignored rows.
template <typename T>
void crossEntropyBackward(const T *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                          int64_t ignoreIndex, T dLoss, T *dLogits);

/// Forward KL from teacher to student per row, mean over rows, both at `temperature`:
/// sum_v p_T (log p_T - log p_S).
template <typename T>
T klForward(const T *student, const T *teacher, int64_t rows, int64_t vocab, double temperature);
/// dStudent = dLoss / (rows * temperature) * (p_S - p_T).
template <typename T>
void klBackward(const T *student, const T *teacher, int64_t rows, int64_t vocab, double temperature,
                T dLoss, T *dStudent);

/// out = a + b over n elements.
template <typename T> void add(const T *a, const T *b, int64_t n, T *out);

//===----------------------------------------------------------------------===//
// Mamba2 mixer pieces (Mamba.cpp). The in_proj output `proj` is [rows, W] with the column
// blocks [z (H*P) | x (H*P) | B (G*N) | C (G*N) | dt (H)], W = 2HP + 2GN + H. `mzx` is the
// per-channel multiplier of z and x: mzx[h*P + p] = heads.m[h] * channels.m[p] (nullptr: 1).
// `hActive` heads per group (of H/G) and `pActive` channels per head are active.
//===----------------------------------------------------------------------===//

struct MambaShape {
  int64_t batch = 0, length = 0; // rows = batch * length
  int64_t heads = 0, headDim = 0, groups = 0, stateSize = 0, convKernel = 0;
  int64_t hActive = 0, pActive = 0; // prefix-dense extents (= heads / groups and headDim: full)
  int64_t rows() const { return batch * length; }
  int64_t hp() const { return heads * headDim; }
  int64_t gn() const { return groups * stateSize; }
  int64_t convChannels() const { return hp() + 2 * gn(); }
  int64_t projWidth() const { return 2 * hp() + 2 * gn() + heads; }
};

/// mzx[h*P + p] = heads[h] * channels[p] (either mask may be null = all ones).
template <typename T>
void mambaMaskExpand(const MambaShape &s, const T *headMask, const T *channelMask, T *mzx);
/// The in_proj rows a budget reads (2HP + 2GN + H entries, 0 or 1 under hard masks): z and x
/// rows are mzx, the B and C rows 1, dt row h heads[h] (0 outside the active heads).
template <typename T>
void mambaProjSelect(const MambaShape &s, const T *headMask, const T *channelMask, T *select);
/// The cotangents of the two masks from dMzx (HP) and the gated norm's (dphi, dsigma):
/// dHead[h] = sum_p dMzx[hP+p] ch[p], dHead[H] = dphi * ch.phi, dHead[H+1] = dsigma * ch.sigma;
/// dChannel[p] = sum_h dMzx[hP+p] head[h], then dphi * head.phi, dsigma * head.sigma.
/// Either output may be null.
template <typename T>
void mambaMaskBackward(const MambaShape &s, const T *headMask, const T *channelMask, const T *dMzx,
                       T dPhi, T dSigma, T *dHead, T *dChannel);

/// Depthwise causal conv (kernel K, zero left padding, bias) over the x|B|C columns of proj,
/// the x channels multiplied by mzx before it, then SiLU, then x channels multiplied by mzx
/// again: xbc[r, c] for c < HP + 2GN.
template <typename T>
void mambaConvForward(const MambaShape &s, const T *proj, const T *convW, const T *convB,
                      const T *mzx, T *xbc);
/// From dXbc: dProj's x|B|C columns (accumulates into dProj, which has W columns), dConvW,
/// dConvB (overwritten) and dMzx (accumulates, HP entries; may be null when mzx is null).
template <typename T>
void mambaConvBackward(const MambaShape &s, const T *proj, const T *convW, const T *convB,
                       const T *mzx, const T *dXbc, T *dProj, T *dConvW, T *dConvB, T *dMzx);

/// The SSM scan of every (sequence, head), chunked (METHOD.md §9): delta = softplus(dt * mh +
/// dt_bias) with dt from proj's dt column and mh = headMask.m (nullptr: 1), A = -exp(aLog),
/// x/B/C from xbc; y[r, h*P + p] is the scan output (before the gate), skip D included.
template <typename T>
void mambaScanForward(const MambaShape &s, const T *proj, const T *xbc, const T *dtBias,
                      const T *aLog, const T *dSkip, const T *headMask, int64_t chunk, T *y);
/// From dY: dXbc (accumulates), dProj's dt column (accumulates), dDtBias, dALog, dD
/// (overwritten), and the head mask's multiplier cotangent dHeadM (H entries, accumulates; may
/// be null).
template <typename T>
void mambaScanBackward(const MambaShape &s, const T *proj, const T *xbc, const T *dtBias,
                       const T *aLog, const T *dSkip, const T *headMask, int64_t chunk, const T *dY,
                       T *dXbc, T *dProj, T *dDtBias, T *dALog, T *dD, T *dHeadM);

/// mambaConvForward for L new rows per sequence continuing from `state` [batch, K-1, HP+2GN],
/// the last K-1 unmasked x|B|C inputs of each sequence, oldest first (zeros: an empty
/// context); `state` is then advanced to the last K-1 inputs after the new rows.
template <typename T>
void mambaConvStep(const MambaShape &s, const T *proj, const T *convW, const T *convB, const T *mzx,
                   T *state, T *xbc);
/// mambaScanForward for L new rows per sequence continuing from `state` [batch, H, P, N] (the
/// SSM state after the rows read so far), which is left at the state after the new rows.
template <typename T>
void mambaScanStep(const MambaShape &s, const T *proj, const T *xbc, const T *dtBias, const T *aLog,
                   const T *dSkip, const T *headMask, T *state, T *y);

/// Gate and group-wise RMSNorm: g = y * silu(z * mzx); per row and group of HP/G channels,
/// out = sigma * w * g / sqrt(mean(g^2) + eps * phi), with phi = heads.phi * channels.phi and
/// sigma = heads.sigma * channels.sigma passed in.
template <typename T>
void mambaGateNormForward(const MambaShape &s, const T *y, const T *proj, const T *mzx,
                          const T *normW, double eps, T phi, T sigma, T *out);
/// From dOut: dY (overwritten), dProj's z columns (accumulates), dNormW (overwritten), dMzx
/// (accumulates; may be null), *dPhi and *dSigma (overwritten).
template <typename T>
void mambaGateNormBackward(const MambaShape &s, const T *y, const T *proj, const T *mzx,
                           const T *normW, double eps, T phi, T sigma, const T *dOut, T *dY,
                           T *dProj, T *dNormW, T *dMzx, T *dPhi, T *dSigma);

//===----------------------------------------------------------------------===//
// Causal GQA attention (Attention.cpp), flash-style: never more than a tile of the score
// matrix is materialised. q [rows, nh*hd], k and v [rows, nkv*hd], a [rows, nh*hd]; query head
// h reads KV head h / (nh / nkv); scale 1/sqrt(hd). `qActive` query heads per KV group are
// active (head h when h % (nh/nkv) < qActive); inactive heads' outputs are 0.
//===----------------------------------------------------------------------===//

struct AttentionShape {
  int64_t batch = 0, length = 0, heads = 0, kvHeads = 0, headDim = 0;
  int64_t qActive = 0; // active query heads per KV group (= heads / kvHeads: full)
};

/// a = softmax(q k^T * scale, causal) v per head; lse[(b*nh + h)*L + i] = the row's
/// log-sum-exp of the scaled scores (kept for the backward).
template <typename T>
void attentionForward(const AttentionShape &s, const T *q, const T *k, const T *v, T *a, T *lse);
/// Attention of s.length new tokens per sequence at positions position .. position+L-1 over a
/// KV cache of `context` rows per sequence ([batch, context, nkv*hd]): k and v are written into
/// the caches at those rows, then query i attends to rows 0 .. position+i. The caller checks
/// position + L <= context.
template <typename T>
void attentionStep(const AttentionShape &s, int64_t context, int64_t position, const T *q,
                   const T *k, const T *v, T *kCache, T *vCache, T *a);
/// dq, dk, dv (overwritten) from da, recomputing the probabilities tile by tile from lse.
template <typename T>
void attentionBackward(const AttentionShape &s, const T *q, const T *k, const T *v, const T *a,
                       const T *lse, const T *da, T *dq, T *dk, T *dv);

//===----------------------------------------------------------------------===//
// Optimizer (Rows.cpp).
//===----------------------------------------------------------------------===//

/// One AdamW step on n parameters (decoupled weight decay):
/// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) +
/// eps) + wd * p), with t = step (1-based). gradScale multiplies g first (gradient clipping).
template <typename T>
void adamw(T *p, const T *g, T *m, T *v, int64_t n, double lr, double beta1, double beta2,
           double eps, double weightDecay, int64_t step, double gradScale);

} // namespace nestor::cpu

#endif // NESTOR_CODEGEN_CPU_KERNELS_H
