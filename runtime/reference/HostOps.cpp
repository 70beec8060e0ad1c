//===- HostOps.cpp - Reference semantics of the router and budget ops ------===//
//
// Straight loops over the formulas of ElasticOps.td / METHOD.md, in float64; the reference
// evaluator and the runtime's host steps both call these (no MLIR, no LLVM).
//
//===----------------------------------------------------------------------===//
#include "nestor/HostOps.h"

#include <algorithm>
#include <cmath>
#include <limits>

using namespace nestor;
using namespace nestor::ref;

Tensor::Tensor(std::vector<int64_t> shape, double fill) : shape(std::move(shape)) {
  int64_t n = 1;
  for (int64_t d : this->shape)
    n *= d;
  data.assign(n, fill);
}

Tensor::Tensor(std::vector<int64_t> shape, std::vector<double> data)
    : shape(std::move(shape)), data(std::move(data)) {}

Tensor Mask::packed() const {
  Tensor t({static_cast<int64_t>(m.size()) + 2});
  std::copy(m.begin(), m.end(), t.data.begin());
  t[t.numel() - 2] = phi;
  t[t.numel() - 1] = sigma;
  return t;
}

double nestor::ref::gumbelNoise(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + stream * 0xD1B54A32D192ED03ull + index;
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  double u = (static_cast<double>(x >> 11) + 0.5) * 0x1.0p-53;
  return -std::log(-std::log(u));
}

//===----------------------------------------------------------------------===//
// math
//===----------------------------------------------------------------------===//

int64_t nestor::ref::math::argmax(const double *p, int64_t n) {
  return std::max_element(p, p + n) - p;
}

Tensor nestor::ref::math::linear(const Tensor &x, const Tensor &w) {
  int64_t in = w.dim(1), out = w.dim(0), rows = x.numel() / in;
  std::vector<int64_t> shape = x.shape;
  shape.back() = out;
  Tensor y(shape);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0.0;
      for (int64_t i = 0; i < in; ++i)
        acc += x[r * in + i] * w[o * in + i];
      y[r * out + o] = acc;
    }
  return y;
}

Tensor nestor::ref::math::weightGrad(const Tensor &x, const Tensor &dy, int64_t a, int64_t b) {
  int64_t rows = x.numel() / a;
  Tensor g({b, a});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < b; ++o)
      for (int64_t i = 0; i < a; ++i)
        g[o * a + i] += dy[r * b + o] * x[r * a + i];
  return g;
}

Tensor nestor::ref::math::inputGrad(const Tensor &dy, const Tensor &w, std::vector<int64_t> shape) {
  int64_t out = w.dim(0), in = w.dim(1), rows = dy.numel() / out;
  Tensor dx(std::move(shape));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i)
        dx[r * in + i] += dy[r * out + o] * w[o * in + i];
  return dx;
}

std::vector<double> nestor::ref::math::logSoftmaxRow(const double *x, int64_t n,
                                                     double temperature) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i)
    mx = std::max(mx, x[i] / temperature);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i)
    sum += std::exp(x[i] / temperature - mx);
  double lse = mx + std::log(sum);
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i)
    out[i] = x[i] / temperature - lse;
  return out;
}

//===----------------------------------------------------------------------===//
// host ops
//===----------------------------------------------------------------------===//

using namespace nestor::ref::math;
namespace host = nestor::ref::host;

std::string host::oneHot(int64_t n, int64_t index, Tensor &out) {
  if (index < 0 || index >= n)
    return "index " + std::to_string(index) + " is outside [0, " + std::to_string(n) + ")";
  out = Tensor({n});
  out[index] = 1.0;
  return "";
}

Tensor host::router(const Tensor &u, const Tensor &w1, const Tensor &b1, const Tensor &w2,
                    const Tensor &b2, double slope, std::vector<int64_t> shape) {
  Tensor hidden = linear(u, w1);
  for (int64_t i = 0; i < hidden.numel(); ++i) {
    double v = hidden[i] + b1[i];
    hidden[i] = v > 0.0 ? v : slope * v;
  }
  Tensor z = linear(hidden, w2);
  for (int64_t i = 0; i < z.numel(); ++i)
    z[i] += b2[i];
  z.shape = std::move(shape);
  return z;
}

host::RouterGrads host::routerGrad(const Tensor &u, const Tensor &w1, const Tensor &b1,
                                   const Tensor &w2, const Tensor &dzIn, double slope) {
  Tensor a = linear(u, w1);
  Tensor h(a.shape);
  for (int64_t i = 0; i < a.numel(); ++i) {
    a[i] += b1[i];
    h[i] = a[i] > 0.0 ? a[i] : slope * a[i];
  }
  Tensor dz({dzIn.numel()}, dzIn.data);
  Tensor dh = inputGrad(dz, w2, h.shape);
  for (int64_t i = 0; i < dh.numel(); ++i)
    dh[i] *= a[i] > 0.0 ? 1.0 : slope;
  RouterGrads g;
  g.w1 = weightGrad(u, dh, u.numel(), h.numel());
  g.b1 = dh;
  g.w2 = weightGrad(h, dz, h.numel(), dz.numel());
  g.b2 = dz;
  return g;
}

Tensor host::gumbelNoiseTensor(std::vector<int64_t> shape, uint64_t seed, uint64_t stream) {
  Tensor g(std::move(shape));
  for (int64_t i = 0; i < g.numel(); ++i)
    g[i] = gumbelNoise(seed, stream, static_cast<uint64_t>(i));
  return g;
}

Tensor host::gumbelSoftmax(const Tensor &logits, const Tensor &noise, double tau, double scale,
                           bool hard) {
  int64_t n = logits.shape.back();
  Tensor pi(logits.shape);
  std::vector<double> row(n);
  for (int64_t r = 0; r < logits.numel() / n; ++r) {
    for (int64_t i = 0; i < n; ++i)
      row[i] = scale * logits[r * n + i] + noise[r * n + i];
    std::vector<double> lp = logSoftmaxRow(row.data(), n, tau);
    int64_t a = argmax(lp.data(), n);
    for (int64_t i = 0; i < n; ++i)
      pi[r * n + i] = hard ? (i == a ? 1.0 : 0.0) : std::exp(lp[i]);
  }
  return pi;
}

Tensor host::gumbelSoftmaxGrad(const Tensor &logits, const Tensor &noise, double tau, double scale,
                               const Tensor &dpi) {
  int64_t n = logits.shape.back();
  Tensor g(logits.shape);
  std::vector<double> row(n);
  for (int64_t r = 0; r < logits.numel() / n; ++r) {
    for (int64_t i = 0; i < n; ++i)
      row[i] = scale * logits[r * n + i] + noise[r * n + i];
    std::vector<double> lp = logSoftmaxRow(row.data(), n, tau);
    double dot = 0.0;
    for (int64_t i = 0; i < n; ++i)
      dot += dpi[r * n + i] * std::exp(lp[i]);
    for (int64_t i = 0; i < n; ++i)
      g[r * n + i] = scale / tau * std::exp(lp[i]) * (dpi[r * n + i] - dot);
  }
  return g;
}

Mask host::prefixMask(const Tensor &probs, const PrefixMaskAttrs &a) {
  const std::vector<int64_t> &choices = a.choices;
  int64_t n = static_cast<int64_t>(choices.size());
  const double *pi = &probs.data[a.row >= 0 ? a.row * n : 0];
  int64_t size = a.size, groups = a.groups, groupSize = size / groups;
  Mask out{std::vector<double>(size, 0.0), 0.0, 0.0};
  auto addChoice = [&](int64_t i, double weight) {
    int64_t keep = choices[i] / groups;
    for (int64_t c = 0; c < size; ++c)
      if (c % groupSize < keep)
        out.m[c] += weight;
  };
  if (a.soft) {
    for (int64_t i = 0; i < n; ++i) {
      addChoice(i, pi[i]);
      double frac = static_cast<double>(choices[i]) / size;
      out.phi += pi[i] * frac;
      out.sigma += pi[i] * std::sqrt(frac);
    }
  } else {
    int64_t c = argmax(pi, n);
    addChoice(c, pi[c]);
    double frac = static_cast<double>(choices[c]) / size;
    out.phi = frac;
    out.sigma = std::sqrt(frac);
  }
  return out;
}

Tensor host::prefixMaskGrad(const Tensor &probs, const Tensor &dmask, const PrefixMaskAttrs &a) {
  const std::vector<int64_t> &choices = a.choices;
  int64_t n = static_cast<int64_t>(choices.size()), size = a.size;
  int64_t groupSize = size / a.groups;
  int64_t offset = a.row >= 0 ? a.row * n : 0;
  const double *pi = &probs.data[offset];
  double dphi = dmask[size], dsigma = dmask[size + 1];
  auto maskDot = [&](int64_t i) {
    int64_t keep = choices[i] / a.groups;
    double sum = 0.0;
    for (int64_t c = 0; c < size; ++c)
      if (c % groupSize < keep)
        sum += dmask[c];
    return sum;
  };
  Tensor g(probs.shape);
  if (a.soft) {
    for (int64_t i = 0; i < n; ++i) {
      double frac = static_cast<double>(choices[i]) / size;
      g[offset + i] = maskDot(i) + dphi * frac + dsigma * std::sqrt(frac);
    }
  } else {
    int64_t c = argmax(pi, n);
    g[offset + c] = maskDot(c);
  }
  return g;
}

Tensor host::layerKeep(const Tensor &pi, const std::vector<int64_t> &order, bool soft) {
  int64_t options = pi.numel(), layers = static_cast<int64_t>(order.size());
  int64_t a = argmax(pi.data.data(), options);
  Tensor keep({layers});
  for (int64_t rank = 0; rank < layers; ++rank) {
    int64_t layer = order[rank];
    if (soft) {
      for (int64_t k = 0; k <= std::min(rank, options - 1); ++k)
        keep[layer] += pi[k];
    } else {
      keep[layer] = a <= rank ? pi[a] : 0.0;
    }
  }
  return keep;
}

Tensor host::layerKeepGrad(const Tensor &pi, const Tensor &dkeep, const std::vector<int64_t> &order,
                           bool soft) {
  int64_t options = pi.numel(), layers = static_cast<int64_t>(order.size());
  int64_t a = argmax(pi.data.data(), options);
  Tensor g(pi.shape);
  for (int64_t rank = 0; rank < layers; ++rank)
    for (int64_t k = 0; k <= std::min(rank, options - 1); ++k)
      if (soft || k == a)
        g[k] += dkeep[order[rank]];
  return g;
}

Tensor host::expectedSize(const Tensor &pi, const std::vector<int64_t> &choices, bool soft) {
  int64_t n = static_cast<int64_t>(choices.size()), rows = pi.numel() / n;
  std::vector<int64_t> shape(pi.shape.begin(), pi.shape.end() - 1);
  Tensor e(shape);
  for (int64_t r = 0; r < rows; ++r) {
    const double *p = &pi.data[r * n];
    if (soft) {
      for (int64_t i = 0; i < n; ++i)
        e[r] += p[i] * choices[i];
    } else {
      int64_t a = argmax(p, n);
      e[r] = p[a] * choices[a];
    }
  }
  return e;
}

Tensor host::expectedSizeGrad(const Tensor &pi, const Tensor &de,
                              const std::vector<int64_t> &choices, bool soft) {
  int64_t n = static_cast<int64_t>(choices.size());
  Tensor g(pi.shape);
  for (int64_t r = 0; r < pi.numel() / n; ++r) {
    int64_t a = argmax(&pi.data[r * n], n);
    for (int64_t i = 0; i < n; ++i)
      if (soft || i == a)
        g[r * n + i] = de[r] * choices[i];
  }
  return g;
}

namespace {

/// Forward-mode dual number: differentiates the one closed-form count (ParamFormula.h).
struct Dual {
  double v = 0.0, d = 0.0;
  Dual() = default;
  Dual(double v) : v(v) {} // NOLINT: the formula's constants convert implicitly
  Dual(double v, double d) : v(v), d(d) {}
};
Dual operator+(Dual a, Dual b) { return {a.v + b.v, a.d + b.d}; }
Dual operator*(Dual a, Dual b) { return {a.v * b.v, a.d * b.v + a.v * b.d}; }

/// The count with operand element `sizes[seedOperand][seedIndex]` as the differentiation
/// direction (-1: none). A scalar operand applies to every layer of its kind; a vector gives
/// one value per such layer.
Dual countWithSeed(const spec::FixedSizes &fixed, const host::CountOperands &sizes, int seedOperand,
                   int64_t seedIndex) {
  auto at = [&](int operand, int64_t index) {
    const Tensor &t = *sizes[operand];
    int64_t i = t.shape.empty() ? 0 : index;
    return Dual(t[i], operand == seedOperand && i == seedIndex ? 1.0 : 0.0);
  };
  spec::ModelSizes<Dual> s;
  s.hidden = at(0, 0);
  int64_t seen[3] = {0, 0, 0};
  for (size_t i = 0; i < fixed.layers.size(); ++i) {
    spec::LayerSizes<Dual> l;
    l.keep = at(5, static_cast<int64_t>(i));
    switch (fixed.layers[i]) {
    case spec::LayerKind::Mamba:
      l.mambaHeads = at(3, seen[0]);
      l.mambaHeadDim = at(4, seen[0]++);
      break;
    case spec::LayerKind::Attention:
      l.attnHeads = at(2, seen[1]++);
      break;
    case spec::LayerKind::MLP:
      l.ffn = at(1, seen[2]++);
      break;
    }
    s.layers.push_back(l);
  }
  return spec::countParams(fixed, s).total();
}

} // namespace

Tensor host::paramCount(const spec::FixedSizes &fixed, const CountOperands &sizes) {
  return Tensor::scalar(countWithSeed(fixed, sizes, -1, 0).v);
}

std::array<Tensor, 6> host::paramCountGrad(const spec::FixedSizes &fixed,
                                           const CountOperands &sizes, double dl) {
  std::array<Tensor, 6> grads;
  for (int operand = 0; operand < 6; ++operand) {
    Tensor g(sizes[operand]->shape);
    for (int64_t i = 0; i < g.numel(); ++i)
      g[i] = dl * countWithSeed(fixed, sizes, operand, i).d;
    grads[operand] = std::move(g);
  }
  return grads;
}

namespace {

/// The budget's fraction, or an error message when the index names no budget.
std::string budgetFraction(const Tensor &budget, const host::ResourceAttrs &a, double &b) {
  double index = budget[0];
  int64_t n = static_cast<int64_t>(a.fractions.size());
  if (!(index >= 0 && index < static_cast<double>(n)))
    return "budget index " + std::to_string(static_cast<int64_t>(index)) + " is outside the " +
           std::to_string(n) + " budgets";
  b = a.fractions[static_cast<int64_t>(index)];
  return "";
}

} // namespace

std::string host::resourceLoss(const Tensor &paramsIn, const Tensor &budget,
                               const std::vector<const Tensor *> &anchors, const ResourceAttrs &a,
                               Tensor &out) {
  double b = 0;
  if (std::string err = budgetFraction(budget, a, b); !err.empty())
    return err;
  double params = paramsIn[0];
  double loss = std::abs(params / (b * a.fullParams) - 1.0);
  if (b < 1.0 && loss < a.deadZone)
    loss = 0.0;
  if (b == 1.0) {
    double anchor = 0.0;
    for (const Tensor *t : anchors) {
      const Tensor &pi = *t;
      int64_t n = pi.shape.back(), rows = pi.numel() / n;
      double se = 0.0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < n; ++i) {
          double target = i == 0 ? 1.0 : 0.0;
          se += (pi[r * n + i] - target) * (pi[r * n + i] - target);
        }
      anchor += se / pi.numel();
    }
    loss += a.anchorWeight * anchor;
  }
  out = Tensor::scalar(loss);
  return "";
}

std::string host::resourceLossGrad(const Tensor &paramsIn, const Tensor &budget, double dl,
                                   const std::vector<const Tensor *> &anchors,
                                   const ResourceAttrs &a, Tensor &paramsGrad,
                                   std::vector<Tensor> &anchorsGrad) {
  double b = 0;
  if (std::string err = budgetFraction(budget, a, b); !err.empty())
    return err;
  double params = paramsIn[0], full = a.fullParams;
  double ratio = params / (b * full) - 1.0;
  double dp = (ratio > 0 ? 1.0 : -1.0) / (b * full);
  if (b < 1.0 && std::abs(ratio) < a.deadZone)
    dp = 0.0;
  paramsGrad = Tensor::scalar(dl * dp);
  anchorsGrad.clear();
  for (const Tensor *t : anchors) {
    const Tensor &pi = *t;
    Tensor g(pi.shape);
    if (b == 1.0) {
      int64_t n = pi.shape.back();
      for (int64_t i = 0; i < pi.numel(); ++i)
        g[i] = dl * a.anchorWeight * 2.0 * (pi[i] - (i % n == 0 ? 1.0 : 0.0)) / pi.numel();
    }
    anchorsGrad.push_back(std::move(g));
  }
  return "";
}
