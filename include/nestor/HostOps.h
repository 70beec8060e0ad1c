//===- HostOps.h - Reference semantics of the router and budget ops -*- C++ -*-===//
//
// The float64 semantics of the elastic ops that run on the host (routers, Gumbel-softmax, mask
// construction, depth keep, expected sizes, the parameter count and the resource loss, and
// their backward ops), written once. The reference evaluator (Reference.h) calls them for
// those ops, and the runtime's host steps (engine/) call them for `kernel.host` regions: one
// definition, no MLIR or LLVM (standard library only).
//
// Formulas: METHOD.md §4-§6 and each op's description in dialects/elastic/ElasticOps.td.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_HOSTOPS_H
#define NESTOR_HOSTOPS_H

#include "nestor/ParamFormula.h"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace nestor::ref {

/// A dense row-major float64 tensor. Integer tensors (tokens, budget, seed, flags) hold their
/// values exactly as doubles.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<double> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape, double fill = 0.0);
  Tensor(std::vector<int64_t> shape, std::vector<double> data);
  static Tensor scalar(double value) {
    return Tensor(std::vector<int64_t>{}, std::vector<double>{value});
  }

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(size_t i) const { return shape[i]; }
  double &operator[](int64_t i) { return data[i]; }
  double operator[](int64_t i) const { return data[i]; }
};

/// The run-time value of a `!elastic.mask` (see ElasticTypes.td).
struct Mask {
  std::vector<double> m; // per-channel multiplier
  double phi = 1.0;      // kept fraction for the norm correction
  double sigma = 1.0;    // norm output scale
  /// The packed layout kernels read: [m..., phi, sigma].
  Tensor packed() const;
};

/// Gumbel(0, 1) noise element `index` of stream `stream` under `seed` (elastic.gumbel_noise).
double gumbelNoise(uint64_t seed, uint64_t stream, uint64_t index);

namespace math {
int64_t argmax(const double *p, int64_t n);
/// y[r, :] = x[r, :] * W^T for x [rows, in], W [out, in].
Tensor linear(const Tensor &x, const Tensor &w);
/// x^T y over rows: x [rows, a], y [rows, b] -> [b, a] (the weight gradient of y = x W^T).
Tensor weightGrad(const Tensor &x, const Tensor &dy, int64_t a, int64_t b);
/// dx = dy W for y = x W^T: dy [rows, out], W [out, in] -> [rows, in].
Tensor inputGrad(const Tensor &dy, const Tensor &w, std::vector<int64_t> shape);
/// Log-softmax of a row of `n` values, scaled by 1/temperature first.
std::vector<double> logSoftmaxRow(const double *x, int64_t n, double temperature);
} // namespace math

namespace host {

/// elastic.one_hot: a vector of `n` with 1 at `index`. Fails (returns the message) when
/// `index` is outside [0, n).
std::string oneHot(int64_t n, int64_t index, Tensor &out);

/// elastic.router: `W2 LeakyReLU(W1 u + b1) + b2`, reshaped to `shape`.
Tensor router(const Tensor &u, const Tensor &w1, const Tensor &b1, const Tensor &w2,
              const Tensor &b2, double slope, std::vector<int64_t> shape);
struct RouterGrads {
  Tensor w1, b1, w2, b2;
};
/// elastic.router_grad: the weight cotangents for the result cotangent `dz`.
RouterGrads routerGrad(const Tensor &u, const Tensor &w1, const Tensor &b1, const Tensor &w2,
                       const Tensor &dz, double slope);

/// elastic.gumbel_noise.
Tensor gumbelNoiseTensor(std::vector<int64_t> shape, uint64_t seed, uint64_t stream);
/// elastic.gumbel_softmax: softmax((scale * logits + noise) / tau) per row (last dim), or its
/// one-hot argmax when `hard`.
Tensor gumbelSoftmax(const Tensor &logits, const Tensor &noise, double tau, double scale,
                     bool hard);
/// elastic.gumbel_softmax_grad: the soft path's vector-Jacobian product (straight-through for
/// the hard sample).
Tensor gumbelSoftmaxGrad(const Tensor &logits, const Tensor &noise, double tau, double scale,
                         const Tensor &dpi);

/// The attributes of elastic.prefix_mask and its backward.
struct PrefixMaskAttrs {
  std::vector<int64_t> choices;
  bool soft = false;
  int64_t row = -1; // heterogeneous: the row of `probs` to read; -1: the whole (1-row) probs
  int64_t size = 0, groups = 1; // the mask type
};
Mask prefixMask(const Tensor &probs, const PrefixMaskAttrs &attrs);
Tensor prefixMaskGrad(const Tensor &probs, const Tensor &maskGrad, const PrefixMaskAttrs &attrs);

/// elastic.layer_keep / _grad.
Tensor layerKeep(const Tensor &probs, const std::vector<int64_t> &order, bool soft);
Tensor layerKeepGrad(const Tensor &probs, const Tensor &keepGrad, const std::vector<int64_t> &order,
                     bool soft);

/// elastic.expected_size / _grad.
Tensor expectedSize(const Tensor &probs, const std::vector<int64_t> &choices, bool soft);
Tensor expectedSizeGrad(const Tensor &probs, const Tensor &sizeGrad,
                        const std::vector<int64_t> &choices, bool soft);

/// elastic.param_count / _grad. `sizes` are the operands hidden, ffn, attn_heads, mamba_heads,
/// mamba_head_dim, keep (a scalar applies to every layer of its kind).
using CountOperands = std::array<const Tensor *, 6>;
Tensor paramCount(const spec::FixedSizes &fixed, const CountOperands &sizes);
std::array<Tensor, 6> paramCountGrad(const spec::FixedSizes &fixed, const CountOperands &sizes,
                                     double resultGrad);

/// The attributes of elastic.resource_loss and its backward.
struct ResourceAttrs {
  std::vector<double> fractions;
  double fullParams = 0, deadZone = 0.05, anchorWeight = 10.0;
};
/// Fails (returns the message) when the budget index is outside the fractions.
std::string resourceLoss(const Tensor &params, const Tensor &budget,
                         const std::vector<const Tensor *> &anchors, const ResourceAttrs &attrs,
                         Tensor &out);
std::string resourceLossGrad(const Tensor &params, const Tensor &budget, double resultGrad,
                             const std::vector<const Tensor *> &anchors, const ResourceAttrs &attrs,
                             Tensor &paramsGrad, std::vector<Tensor> &anchorsGrad);

} // namespace host
} // namespace nestor::ref

#endif // NESTOR_HOSTOPS_H
