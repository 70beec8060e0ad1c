//===- Reference.cpp - The float64 reference evaluator ---------------------===//
//
// Straight loops over the formulas of ElasticOps.td / METHOD.md; clarity over speed. The
// evaluator dispatches on op kinds because it is the test oracle that defines what every
// backend must compute; compiler transformations go through the dialect's interfaces instead.
//
//===----------------------------------------------------------------------===//
#include "nestor/Reference.h"

#include "dialects/elastic/ElasticOps.h"
#include "nestor/ParamCount.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <variant>

using namespace mlir;
using namespace nestor;
using namespace nestor::ref;
namespace el = nestor::elastic;

namespace {

using namespace nestor::ref::math;
namespace host = nestor::ref::host;

/// No mask: every channel kept with multiplier 1.
Mask fullMask(int64_t size) { return Mask{std::vector<double>(size, 1.0), 1.0, 1.0}; }

using RValue = std::variant<Tensor, Mask>;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }
double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

void applyMask(Tensor &x, const Mask *mask) {
  if (!mask)
    return;
  int64_t c = static_cast<int64_t>(mask->m.size());
  for (int64_t i = 0; i < x.numel(); ++i)
    x[i] *= mask->m[i % c];
}

class Evaluator {
public:
  llvm::Expected<std::vector<Tensor>> run(func::FuncOp func, ArrayRef<Tensor> args);

private:
  const Tensor &tensor(Value v) { return std::get<Tensor>(values.at(v)); }
  const Mask *mask(Value v) { return v ? &std::get<Mask>(values.at(v)) : nullptr; }
  llvm::Error fail(Operation *op, const llvm::Twine &message) {
    return llvm::createStringError((op->getName().getStringRef() + ": " + message).str().c_str());
  }

  llvm::Error eval(Operation *op);
  llvm::Expected<Tensor> embed(el::EmbedOp op);
  Tensor rmsnorm(el::RMSNormOp op);
  Tensor mamba2(el::Mamba2Op op);
  Tensor attention(el::AttentionOp op);
  Tensor mlp(el::MLPOp op);
  Mask prefixMask(el::PrefixMaskOp op);
  Tensor paramCount(el::ParamCountOp op);
  /// hidden, ffn, attn_heads, mamba_heads, mamba_head_dim, keep of a param_count-like op.
  template <typename OpT> host::CountOperands countOperands(OpT op) {
    return {&tensor(op.getHidden()),     &tensor(op.getFfn()),          &tensor(op.getAttnHeads()),
            &tensor(op.getMambaHeads()), &tensor(op.getMambaHeadDim()), &tensor(op.getKeep())};
  }
  llvm::Expected<Tensor> resourceLoss(el::ResourceLossOp op);
  void embedGrad(el::EmbedGradOp op);
  void routerGrad(el::RouterGradOp op);
  void attentionGrad(el::AttentionGradOp op);
  void mamba2Grad(el::Mamba2GradOp op);
  llvm::Error resourceLossGrad(el::ResourceLossGradOp op);
  void rmsnormGrad(el::RMSNormGradOp op);
  void mlpGrad(el::MLPGradOp op);
  Tensor prefixMaskGrad(el::PrefixMaskGradOp op);

  // A node-based map: the evaluators hold references to operand values while they insert
  // results, so insertion must not move existing entries (a DenseMap rehash did, and the
  // backward of multi-result ops then read freed memory).
  struct ValueHash {
    size_t operator()(Value v) const { return hash_value(v); }
  };
  std::unordered_map<Value, RValue, ValueHash> values;
};

llvm::Expected<Tensor> Evaluator::embed(el::EmbedOp op) {
  const Tensor &tokens = tensor(op.getTokens()), &table = tensor(op.getTable());
  int64_t vocab = table.dim(0), d = table.dim(1);
  Tensor h({tokens.dim(0), tokens.dim(1), d});
  for (int64_t t = 0; t < tokens.numel(); ++t) {
    double tok = tokens[t];
    if (tok < 0 || tok >= vocab)
      return fail(op, "token " + llvm::Twine(static_cast<int64_t>(tok)) +
                          " is outside the vocabulary [0, " + llvm::Twine(vocab) + ")");
    std::copy_n(&table.data[static_cast<int64_t>(tok) * d], d, &h.data[t * d]);
  }
  applyMask(h, mask(op.getHiddenMask()));
  return h;
}

Tensor Evaluator::rmsnorm(el::RMSNormOp op) {
  const Tensor &x = tensor(op.getInput()), &w = tensor(op.getWeight());
  int64_t d = w.dim(0), rows = x.numel() / d;
  double eps = op.getEpsilon().convertToDouble();
  Mask full = fullMask(d);
  const Mask &m = op.getHiddenMask() ? *mask(op.getHiddenMask()) : full;
  Tensor y(x.shape);
  for (int64_t r = 0; r < rows; ++r) {
    const double *xr = &x.data[r * d];
    double ss = 0.0;
    for (int64_t c = 0; c < d; ++c)
      ss += xr[c] * xr[c];
    double inv = 1.0 / std::sqrt(ss / d + eps * m.phi);
    for (int64_t c = 0; c < d; ++c)
      y[r * d + c] = m.m[c] * m.sigma * w[c] * xr[c] * inv;
  }
  return y;
}

Tensor Evaluator::mamba2(el::Mamba2Op op) {
  const Tensor &x = tensor(op.getInput());
  const Tensor &convW = tensor(op.getConvWeight()), &convB = tensor(op.getConvBias());
  const Tensor &dtBias = tensor(op.getDtBias()), &aLog = tensor(op.getALog());
  const Tensor &dSkip = tensor(op.getDSkip()), &normW = tensor(op.getNormWeight());
  int64_t H = op.getNumHeads(), P = op.getHeadDim(), G = op.getNGroups();
  int64_t N = op.getStateSize(), K = convW.dim(1), HP = H * P, GN = G * N;
  int64_t conv = HP + 2 * GN, B = x.dim(0), L = x.dim(1);
  double eps = op.getEpsilon().convertToDouble();

  Mask heads = op.getHeadsMask() ? *mask(op.getHeadsMask()) : fullMask(H);
  Mask chans = op.getChannelsMask() ? *mask(op.getChannelsMask()) : fullMask(P);
  // Per-channel mask of z and x: head mask times channel mask.
  std::vector<double> mzx(HP);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < P; ++p)
      mzx[h * P + p] = heads.m[h] * chans.m[p];

  Tensor proj = linear(x, tensor(op.getInProj())); // [B, L, 2HP + 2GN + H]
  int64_t R = proj.dim(2);
  auto at = [&](int64_t b, int64_t t, int64_t c) -> double & { return proj[(b * L + t) * R + c]; };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t) {
      for (int64_t c = 0; c < HP; ++c) {
        at(b, t, c) *= mzx[c];      // z
        at(b, t, HP + c) *= mzx[c]; // x before the convolution
      }
      for (int64_t h = 0; h < H; ++h)
        at(b, t, HP + conv + h) *= heads.m[h]; // dt
    }

  // Depthwise causal convolution over [x, B, C] with zero left padding, then SiLU; the conv-x
  // channels are masked again.
  Tensor xbc({B, L, conv});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < conv; ++c) {
        double acc = convB[c];
        for (int64_t k = 0; k < K; ++k) {
          int64_t src = t - (K - 1) + k;
          if (src >= 0)
            acc += convW[c * K + k] * at(b, src, HP + c);
        }
        double v = silu(acc);
        xbc[(b * L + t) * conv + c] = c < HP ? v * mzx[c] : v;
      }

  // The SSM recurrence per head, sequential (METHOD.md §1).
  Tensor gated({B, L, HP});
  int64_t headsPerGroup = H / G;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      int64_t g = h / headsPerGroup;
      double A = -std::exp(aLog[h]);
      std::vector<double> S(P * N, 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const double *row = &xbc.data[(b * L + t) * conv];
        const double *xs = row + h * P, *Bt = row + HP + g * N, *Ct = row + HP + GN + g * N;
        double delta = softplus(at(b, t, HP + conv + h) + dtBias[h]);
        double decay = std::exp(delta * A);
        for (int64_t p = 0; p < P; ++p) {
          double y = dSkip[h] * xs[p];
          for (int64_t n = 0; n < N; ++n) {
            double &s = S[p * N + n];
            s = decay * s + delta * xs[p] * Bt[n];
            y += s * Ct[n];
          }
          double z = at(b, t, h * P + p);
          gated[(b * L + t) * HP + h * P + p] = y * silu(z);
        }
      }
    }

  // Group-wise RMSNorm with the masked-norm correction f = kept fraction of each group.
  double phi = heads.phi * chans.phi, sigma = heads.sigma * chans.sigma;
  int64_t groupSize = HP / G;
  Tensor normed({B, L, HP});
  for (int64_t r = 0; r < B * L; ++r)
    for (int64_t g = 0; g < G; ++g) {
      const double *v = &gated.data[r * HP + g * groupSize];
      double ss = 0.0;
      for (int64_t c = 0; c < groupSize; ++c)
        ss += v[c] * v[c];
      double inv = 1.0 / std::sqrt(ss / groupSize + eps * phi);
      for (int64_t c = 0; c < groupSize; ++c)
        normed[r * HP + g * groupSize + c] = sigma * normW[g * groupSize + c] * v[c] * inv;
    }
  Tensor y = linear(normed, tensor(op.getOutProj()));
  applyMask(y, mask(op.getHiddenMask()));
  return y;
}

Tensor Evaluator::attention(el::AttentionOp op) {
  const Tensor &x = tensor(op.getInput());
  int64_t nh = op.getNumHeads(), nkv = op.getNumKvHeads(), hd = op.getHeadDim();
  int64_t B = x.dim(0), L = x.dim(1);
  Tensor q = linear(x, tensor(op.getQProj())), k = linear(x, tensor(op.getKProj()));
  Tensor v = linear(x, tensor(op.getVProj()));
  Mask heads = op.getHeadsMask() ? *mask(op.getHeadsMask()) : fullMask(nh);
  Tensor o({B, L, nh * hd});
  double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<double> scores(L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < nh; ++h) {
      int64_t kvh = h / (nh / nkv);
      for (int64_t i = 0; i < L; ++i) {
        const double *qi = &q.data[(b * L + i) * nh * hd + h * hd];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= i; ++j) {
          const double *kj = &k.data[(b * L + j) * nkv * hd + kvh * hd];
          double s = 0.0;
          for (int64_t e = 0; e < hd; ++e)
            s += qi[e] * kj[e];
          scores[j] = s * scale;
          mx = std::max(mx, scores[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j)
          sum += (scores[j] = std::exp(scores[j] - mx));
        double *oi = &o.data[(b * L + i) * nh * hd + h * hd];
        for (int64_t j = 0; j <= i; ++j) {
          const double *vj = &v.data[(b * L + j) * nkv * hd + kvh * hd];
          for (int64_t e = 0; e < hd; ++e)
            oi[e] += heads.m[h] * scores[j] / sum * vj[e];
        }
      }
    }
  Tensor y = linear(o, tensor(op.getOProj()));
  applyMask(y, mask(op.getHiddenMask()));
  return y;
}

Tensor Evaluator::mlp(el::MLPOp op) {
  Tensor u = linear(tensor(op.getInput()), tensor(op.getUpProj()));
  applyMask(u, mask(op.getFfnMask()));
  for (double &e : u.data)
    e = e > 0.0 ? e * e : 0.0;
  Tensor y = linear(u, tensor(op.getDownProj()));
  applyMask(y, mask(op.getHiddenMask()));
  return y;
}

/// The attributes of a prefix mask op as the host semantics take them.
template <typename OpT> host::PrefixMaskAttrs prefixMaskAttrs(OpT op, el::MaskType type) {
  host::PrefixMaskAttrs a;
  a.choices.assign(op.getChoices().begin(), op.getChoices().end());
  a.soft = op.getMode() == el::MaskMode::Soft;
  a.row = op.getRow() ? static_cast<int64_t>(*op.getRow()) : -1;
  a.size = type.getSize();
  a.groups = type.getGroups();
  return a;
}

Mask Evaluator::prefixMask(el::PrefixMaskOp op) {
  return host::prefixMask(tensor(op.getProbs()), prefixMaskAttrs(op, op.getType()));
}

/// The fixed sizes and size operands of a param_count-like op (forward or backward: the
/// same operands first).
template <typename OpT> spec::FixedSizes fixedSizesOf(OpT op) {
  spec::FixedSizes fixed;
  // The op's verifier has checked the pattern.
  spec::layerKindsOf(op.getPattern().str(), fixed.layers);
  fixed.mambaGroups = op.getMambaGroups();
  fixed.ssmStateSize = op.getSsmStateSize();
  fixed.convKernel = op.getConvKernel();
  fixed.numKeyValueHeads = op.getNumKvHeads();
  fixed.attnHeadDim = op.getHeadDim();
  fixed.vocabSize = op.getVocabSize();
  fixed.tiedEmbeddings = op.getTiedEmbeddings();
  return fixed;
}

template <typename OpT> host::ResourceAttrs resourceAttrs(OpT op) {
  host::ResourceAttrs a;
  a.fractions.assign(op.getFractions().begin(), op.getFractions().end());
  a.fullParams = op.getFullParams().convertToDouble();
  a.deadZone = op.getDeadZone().convertToDouble();
  a.anchorWeight = op.getAnchorWeight().convertToDouble();
  return a;
}

Tensor Evaluator::paramCount(el::ParamCountOp op) {
  return host::paramCount(fixedSizesOf(op), countOperands(op));
}

llvm::Expected<Tensor> Evaluator::resourceLoss(el::ResourceLossOp op) {
  std::vector<const Tensor *> anchors;
  for (Value v : op.getAnchors())
    anchors.push_back(&tensor(v));
  Tensor out;
  if (std::string err = host::resourceLoss(tensor(op.getParams()), tensor(op.getBudget()), anchors,
                                           resourceAttrs(op), out);
      !err.empty())
    return fail(op, err);
  return out;
}

/// Packs a mask cotangent: [dm..., dphi, dsigma].
Tensor maskGrad(const std::vector<double> &dm, double dphi, double dsigma) {
  Tensor t({static_cast<int64_t>(dm.size()) + 2});
  std::copy(dm.begin(), dm.end(), t.data.begin());
  t[t.numel() - 2] = dphi;
  t[t.numel() - 1] = dsigma;
  return t;
}

void Evaluator::embedGrad(el::EmbedGradOp op) {
  const Tensor &tokens = tensor(op.getTokens()), &table = tensor(op.getTable());
  const Tensor &dh = tensor(op.getResultGrad());
  int64_t d = table.dim(1);
  const Mask *m = mask(op.getHiddenMask());
  Tensor dtable(table.shape);
  std::vector<double> dm(d, 0.0);
  for (int64_t t = 0; t < tokens.numel(); ++t) {
    auto tok = static_cast<int64_t>(tokens[t]);
    for (int64_t c = 0; c < d; ++c) {
      dtable[tok * d + c] += dh[t * d + c] * (m ? m->m[c] : 1.0);
      dm[c] += dh[t * d + c] * table[tok * d + c];
    }
  }
  values[op.getTableGrad()] = std::move(dtable);
  if (m)
    values[op.getHiddenMaskGrad()] = maskGrad(dm, 0.0, 0.0);
}

void Evaluator::rmsnormGrad(el::RMSNormGradOp op) {
  const Tensor &x = tensor(op.getInput()), &w = tensor(op.getWeight());
  const Tensor &dy = tensor(op.getResultGrad());
  int64_t d = w.dim(0), rows = x.numel() / d;
  double eps = op.getEpsilon().convertToDouble();
  Mask full = fullMask(d);
  const Mask &m = op.getHiddenMask() ? *mask(op.getHiddenMask()) : full;
  Tensor dx(x.shape), dw({d});
  std::vector<double> dm(d, 0.0);
  double dphi = 0.0, dsigma = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const double *xr = &x.data[r * d], *dyr = &dy.data[r * d];
    double ss = 0.0;
    for (int64_t c = 0; c < d; ++c)
      ss += xr[c] * xr[c];
    double inv = 1.0 / std::sqrt(ss / d + eps * m.phi);
    double gx = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      double g = dyr[c] * m.m[c] * m.sigma * w[c];
      gx += g * xr[c];
      dw[c] += dyr[c] * m.m[c] * m.sigma * xr[c] * inv;
      dm[c] += dyr[c] * m.sigma * w[c] * xr[c] * inv;
      dsigma += dyr[c] * m.m[c] * w[c] * xr[c] * inv;
    }
    double inv3 = inv * inv * inv;
    for (int64_t c = 0; c < d; ++c)
      dx[r * d + c] = dyr[c] * m.m[c] * m.sigma * w[c] * inv - xr[c] * inv3 / d * gx;
    dphi += -0.5 * eps * inv3 * gx;
  }
  values[op.getInputGrad()] = std::move(dx);
  values[op.getWeightGrad()] = std::move(dw);
  if (op.getHiddenMask())
    values[op.getHiddenMaskGrad()] = maskGrad(dm, dphi, dsigma);
}

void Evaluator::mlpGrad(el::MLPGradOp op) {
  const Tensor &x = tensor(op.getInput()), &up = tensor(op.getUpProj());
  const Tensor &down = tensor(op.getDownProj()), &dy = tensor(op.getResultGrad());
  const Mask *mf = mask(op.getFfnMask()), *mh = mask(op.getHiddenMask());
  int64_t f = up.dim(0), d = up.dim(1);
  Tensor pre = linear(x, up); // x up^T, before the FFN mask
  Tensor u = pre;
  applyMask(u, mf);
  Tensor a(u.shape);
  for (int64_t i = 0; i < u.numel(); ++i)
    a[i] = u[i] > 0.0 ? u[i] * u[i] : 0.0;
  Tensor out = linear(a, down); // before the hidden mask
  Tensor dz = dy;
  applyMask(dz, mh);
  std::vector<double> dmh(d, 0.0), dmf(f, 0.0);
  for (int64_t i = 0; i < dy.numel(); ++i)
    dmh[i % d] += dy[i] * out[i];
  Tensor ddown = weightGrad(a, dz, f, d);
  Tensor du = inputGrad(dz, down, a.shape);
  for (int64_t i = 0; i < du.numel(); ++i) {
    du[i] *= u[i] > 0.0 ? 2.0 * u[i] : 0.0;
    dmf[i % f] += du[i] * pre[i];
  }
  applyMask(du, mf); // d pre
  Tensor dup = weightGrad(x, du, d, f);
  values[op.getInputGrad()] = inputGrad(du, up, x.shape);
  values[op.getUpProjGrad()] = std::move(dup);
  values[op.getDownProjGrad()] = std::move(ddown);
  if (mf)
    values[op.getFfnMaskGrad()] = maskGrad(dmf, 0.0, 0.0);
  if (mh)
    values[op.getHiddenMaskGrad()] = maskGrad(dmh, 0.0, 0.0);
}

Tensor Evaluator::prefixMaskGrad(el::PrefixMaskGradOp op) {
  return host::prefixMaskGrad(tensor(op.getProbs()), tensor(op.getMaskGrad()),
                              prefixMaskAttrs(op, cast<el::MaskType>(op.getMask())));
}

void Evaluator::routerGrad(el::RouterGradOp op) {
  host::RouterGrads g = host::routerGrad(
      tensor(op.getInput()), tensor(op.getW1()), tensor(op.getB1()), tensor(op.getW2()),
      tensor(op.getResultGrad()), op.getNegativeSlope().convertToDouble());
  values[op.getW1Grad()] = std::move(g.w1);
  values[op.getB1Grad()] = std::move(g.b1);
  values[op.getW2Grad()] = std::move(g.w2);
  values[op.getB2Grad()] = std::move(g.b2);
}

llvm::Error Evaluator::resourceLossGrad(el::ResourceLossGradOp op) {
  std::vector<const Tensor *> anchors;
  for (Value v : op.getAnchors())
    anchors.push_back(&tensor(v));
  Tensor dp;
  std::vector<Tensor> da;
  if (std::string err =
          host::resourceLossGrad(tensor(op.getParams()), tensor(op.getBudget()),
                                 tensor(op.getResultGrad())[0], anchors, resourceAttrs(op), dp, da);
      !err.empty())
    return fail(op, err);
  values[op.getParamsGrad()] = std::move(dp);
  for (auto [grad, g] : llvm::zip(op.getAnchorsGrad(), da))
    values[grad] = std::move(g);
  return llvm::Error::success();
}

void Evaluator::attentionGrad(el::AttentionGradOp op) {
  const Tensor &x = tensor(op.getInput()), &wq = tensor(op.getQProj());
  const Tensor &wk = tensor(op.getKProj()), &wv = tensor(op.getVProj());
  const Tensor &wo = tensor(op.getOProj()), &dy = tensor(op.getResultGrad());
  int64_t nh = op.getNumHeads(), nkv = op.getNumKvHeads(), hd = op.getHeadDim();
  int64_t B = x.dim(0), L = x.dim(1), d = x.dim(2);
  const Mask *mhid = mask(op.getHiddenMask());
  Mask heads = op.getHeadsMask() ? *mask(op.getHeadsMask()) : fullMask(nh);
  Tensor q = linear(x, wq), k = linear(x, wk), v = linear(x, wv);
  double scale = 1.0 / std::sqrt(static_cast<double>(hd));

  // Forward again, keeping the probabilities and the unmasked head outputs a.
  Tensor a({B, L, nh * hd}), o({B, L, nh * hd});
  std::vector<double> probs(B * nh * L * L, 0.0);
  auto P = [&](int64_t b, int64_t h, int64_t i, int64_t j) -> double & {
    return probs[((b * nh + h) * L + i) * L + j];
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < nh; ++h) {
      int64_t kvh = h / (nh / nkv);
      for (int64_t i = 0; i < L; ++i) {
        const double *qi = &q.data[(b * L + i) * nh * hd + h * hd];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j <= i; ++j) {
          const double *kj = &k.data[(b * L + j) * nkv * hd + kvh * hd];
          double sc = 0.0;
          for (int64_t e = 0; e < hd; ++e)
            sc += qi[e] * kj[e];
          P(b, h, i, j) = sc * scale;
          mx = std::max(mx, P(b, h, i, j));
        }
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j)
          sum += (P(b, h, i, j) = std::exp(P(b, h, i, j) - mx));
        for (int64_t j = 0; j <= i; ++j) {
          P(b, h, i, j) /= sum;
          const double *vj = &v.data[(b * L + j) * nkv * hd + kvh * hd];
          for (int64_t e = 0; e < hd; ++e)
            a[(b * L + i) * nh * hd + h * hd + e] += P(b, h, i, j) * vj[e];
        }
      }
    }
  for (int64_t i = 0; i < a.numel(); ++i)
    o[i] = a[i] * heads.m[(i % (nh * hd)) / hd];

  Tensor out = linear(o, wo);
  std::vector<double> dmhid(d, 0.0);
  for (int64_t i = 0; i < dy.numel(); ++i)
    dmhid[i % d] += dy[i] * out[i];
  Tensor dz = dy;
  applyMask(dz, mhid);
  Tensor dwo = weightGrad(o, dz, nh * hd, d);
  Tensor dout = inputGrad(dz, wo, o.shape); // d o
  std::vector<double> dmh(nh, 0.0);
  Tensor dq(q.shape), dk(k.shape), dv(v.shape);
  std::vector<double> dp(L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < nh; ++h) {
      int64_t kvh = h / (nh / nkv);
      for (int64_t i = 0; i < L; ++i) {
        int64_t row = (b * L + i) * nh * hd + h * hd;
        for (int64_t e = 0; e < hd; ++e)
          dmh[h] += dout[row + e] * a[row + e];
        double dot = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          int64_t kv = (b * L + j) * nkv * hd + kvh * hd;
          dp[j] = 0.0;
          for (int64_t e = 0; e < hd; ++e) {
            double da = heads.m[h] * dout[row + e];
            dp[j] += da * v[kv + e];
            dv[kv + e] += P(b, h, i, j) * da;
          }
          dot += P(b, h, i, j) * dp[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          int64_t kv = (b * L + j) * nkv * hd + kvh * hd;
          double ds = P(b, h, i, j) * (dp[j] - dot) * scale;
          for (int64_t e = 0; e < hd; ++e) {
            dq[row + e] += ds * k[kv + e];
            dk[kv + e] += ds * q[row + e];
          }
        }
      }
    }
  Tensor dx = inputGrad(dq, wq, x.shape);
  Tensor dxk = inputGrad(dk, wk, x.shape), dxv = inputGrad(dv, wv, x.shape);
  for (int64_t i = 0; i < dx.numel(); ++i)
    dx[i] += dxk[i] + dxv[i];
  values[op.getInputGrad()] = std::move(dx);
  values[op.getQProjGrad()] = weightGrad(x, dq, d, nh * hd);
  values[op.getKProjGrad()] = weightGrad(x, dk, d, nkv * hd);
  values[op.getVProjGrad()] = weightGrad(x, dv, d, nkv * hd);
  values[op.getOProjGrad()] = std::move(dwo);
  if (op.getHeadsMask())
    values[op.getHeadsMaskGrad()] = maskGrad(dmh, 0.0, 0.0);
  if (mhid)
    values[op.getHiddenMaskGrad()] = maskGrad(dmhid, 0.0, 0.0);
}

void Evaluator::mamba2Grad(el::Mamba2GradOp op) {
  const Tensor &x = tensor(op.getInput()), &win = tensor(op.getInProj());
  const Tensor &convW = tensor(op.getConvWeight()), &convB = tensor(op.getConvBias());
  const Tensor &dtBias = tensor(op.getDtBias()), &aLog = tensor(op.getALog());
  const Tensor &dSkip = tensor(op.getDSkip()), &normW = tensor(op.getNormWeight());
  const Tensor &wout = tensor(op.getOutProj()), &dyOut = tensor(op.getResultGrad());
  int64_t H = op.getNumHeads(), P = op.getHeadDim(), G = op.getNGroups();
  int64_t N = op.getStateSize(), K = convW.dim(1), HP = H * P, GN = G * N;
  int64_t conv = HP + 2 * GN, B = x.dim(0), L = x.dim(1), d = x.dim(2);
  double eps = op.getEpsilon().convertToDouble();
  Mask heads = op.getHeadsMask() ? *mask(op.getHeadsMask()) : fullMask(H);
  Mask chans = op.getChannelsMask() ? *mask(op.getChannelsMask()) : fullMask(P);
  const Mask *mhid = mask(op.getHiddenMask());
  std::vector<double> mzx(HP);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < P; ++p)
      mzx[h * P + p] = heads.m[h] * chans.m[p];

  // Forward again, keeping every intermediate (the reference trades memory for clarity).
  Tensor proj = linear(x, win); // unmasked
  int64_t R = proj.dim(2);
  auto pr = [&](int64_t b, int64_t t, int64_t c) { return proj[(b * L + t) * R + c]; };
  auto cin = [&](int64_t b, int64_t t, int64_t c) { // conv input, x part masked
    double v = pr(b, t, HP + c);
    return c < HP ? v * mzx[c] : v;
  };
  Tensor pre({B, L, conv}), xbc({B, L, conv});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < conv; ++c) {
        double acc = convB[c];
        for (int64_t k = 0; k < K; ++k)
          if (int64_t src = t - (K - 1) + k; src >= 0)
            acc += convW[c * K + k] * cin(b, src, c);
        int64_t i = (b * L + t) * conv + c;
        pre[i] = acc;
        xbc[i] = c < HP ? silu(acc) * mzx[c] : silu(acc);
      }
  int64_t perGroup = H / G;
  Tensor delta({B, L, H}), ssmY({B, L, HP}), gated({B, L, HP});
  std::vector<double> states(B * H * (L + 1) * P * N, 0.0); // S_0 .. S_L
  auto S = [&](int64_t b, int64_t h, int64_t t) {
    return &states[((b * H + h) * (L + 1) + t) * P * N];
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      int64_t g = h / perGroup;
      double A = -std::exp(aLog[h]);
      for (int64_t t = 0; t < L; ++t) {
        const double *row = &xbc.data[(b * L + t) * conv];
        const double *xs = row + h * P, *Bt = row + HP + g * N, *Ct = row + HP + GN + g * N;
        double dl = softplus(pr(b, t, HP + conv + h) * heads.m[h] + dtBias[h]);
        delta[(b * L + t) * H + h] = dl;
        double decay = std::exp(dl * A);
        const double *prev = S(b, h, t);
        double *cur = S(b, h, t + 1);
        for (int64_t p = 0; p < P; ++p) {
          double y = dSkip[h] * xs[p];
          for (int64_t n = 0; n < N; ++n) {
            cur[p * N + n] = decay * prev[p * N + n] + dl * xs[p] * Bt[n];
            y += cur[p * N + n] * Ct[n];
          }
          int64_t i = (b * L + t) * HP + h * P + p;
          ssmY[i] = y;
          gated[i] = y * silu(pr(b, t, h * P + p) * mzx[h * P + p]);
        }
      }
    }
  double phi = heads.phi * chans.phi, sigma = heads.sigma * chans.sigma;
  int64_t groupSize = HP / G;
  Tensor normed({B, L, HP});
  std::vector<double> rinv(B * L * G);
  for (int64_t r = 0; r < B * L; ++r)
    for (int64_t g = 0; g < G; ++g) {
      const double *v = &gated.data[r * HP + g * groupSize];
      double ss = 0.0;
      for (int64_t c = 0; c < groupSize; ++c)
        ss += v[c] * v[c];
      double inv = rinv[r * G + g] = 1.0 / std::sqrt(ss / groupSize + eps * phi);
      for (int64_t c = 0; c < groupSize; ++c)
        normed[r * HP + g * groupSize + c] = sigma * normW[g * groupSize + c] * v[c] * inv;
    }
  Tensor out = linear(normed, wout);

  // Backward: out_proj and the hidden mask.
  std::vector<double> dmhid(d, 0.0);
  for (int64_t i = 0; i < dyOut.numel(); ++i)
    dmhid[i % d] += dyOut[i] * out[i];
  Tensor dz = dyOut;
  applyMask(dz, mhid);
  Tensor dwout = weightGrad(normed, dz, HP, d);
  Tensor dn = inputGrad(dz, wout, normed.shape);
  // The gated group norm.
  Tensor dgated({B, L, HP}), dnormW({HP});
  double dphi = 0.0, dsigma = 0.0;
  for (int64_t r = 0; r < B * L; ++r)
    for (int64_t g = 0; g < G; ++g) {
      int64_t base = r * HP + g * groupSize;
      double inv = rinv[r * G + g], gx = 0.0;
      for (int64_t c = 0; c < groupSize; ++c) {
        double v = gated[base + c];
        gx += dn[base + c] * sigma * normW[g * groupSize + c] * v;
        dnormW[g * groupSize + c] += dn[base + c] * sigma * v * inv;
        dsigma += dn[base + c] * normW[g * groupSize + c] * v * inv;
      }
      double inv3 = inv * inv * inv;
      for (int64_t c = 0; c < groupSize; ++c)
        dgated[base + c] = dn[base + c] * sigma * normW[g * groupSize + c] * inv -
                           gated[base + c] * inv3 / groupSize * gx;
      dphi += -0.5 * eps * inv3 * gx;
    }
  // The gate, then the recurrence backward (METHOD.md §9) per head.
  Tensor dproj(proj.shape), dxbc({B, L, conv}), ddtBias({H}), daLog({H}), dD({H});
  std::vector<double> dmzx(HP, 0.0), dmh(H, 0.0);
  std::vector<double> dyS(P), dS(P * N), dSnext(P * N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      int64_t g = h / perGroup;
      double A = -std::exp(aLog[h]), dA = 0.0;
      std::fill(dSnext.begin(), dSnext.end(), 0.0);
      double decayNext = 0.0;
      for (int64_t t = L - 1; t >= 0; --t) {
        const double *row = &xbc.data[(b * L + t) * conv];
        const double *xs = row + h * P, *Bt = row + HP + g * N, *Ct = row + HP + GN + g * N;
        double *dxs = &dxbc.data[(b * L + t) * conv + h * P];
        double *dBt = &dxbc.data[(b * L + t) * conv + HP + g * N];
        double *dCt = &dxbc.data[(b * L + t) * conv + HP + GN + g * N];
        for (int64_t p = 0; p < P; ++p) {
          int64_t i = (b * L + t) * HP + h * P + p, c = h * P + p;
          double zm = pr(b, t, c) * mzx[c], sg = sigmoid(zm);
          dyS[p] = dgated[i] * silu(zm);
          double dzm = dgated[i] * ssmY[i] * sg * (1.0 + zm * (1.0 - sg));
          dproj[(b * L + t) * R + c] += dzm * mzx[c];
          dmzx[c] += dzm * pr(b, t, c);
        }
        double dl = delta[(b * L + t) * H + h], decay = std::exp(dl * A);
        const double *cur = S(b, h, t + 1), *prev = S(b, h, t);
        double dDelta = 0.0, dotPrev = 0.0;
        for (int64_t p = 0; p < P; ++p) {
          double dxp = dSkip[h] * dyS[p];
          dD[h] += dyS[p] * xs[p];
          for (int64_t n = 0; n < N; ++n) {
            double ds = dS[p * N + n] = dyS[p] * Ct[n] + decayNext * dSnext[p * N + n];
            dCt[n] += cur[p * N + n] * dyS[p];
            dBt[n] += dl * ds * xs[p];
            dxp += dl * ds * Bt[n];
            dDelta += xs[p] * ds * Bt[n];
            dotPrev += ds * prev[p * N + n];
          }
          dxs[p] += dxp;
        }
        dDelta += A * decay * dotPrev;
        dA += dl * decay * dotPrev;
        double dtIn = pr(b, t, HP + conv + h) * heads.m[h] + dtBias[h];
        double ddt = dDelta * sigmoid(dtIn);
        ddtBias[h] += ddt;
        dproj[(b * L + t) * R + HP + conv + h] += ddt * heads.m[h];
        dmh[h] += ddt * pr(b, t, HP + conv + h);
        std::swap(dS, dSnext);
        decayNext = decay;
      }
      daLog[h] += dA * A;
    }
  // SiLU, the conv-x mask, and the causal convolution.
  Tensor dconvW(convW.shape), dconvB(convB.shape);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < conv; ++c) {
        int64_t i = (b * L + t) * conv + c;
        double sg = sigmoid(pre[i]);
        double act = pre[i] * sg, dact = dxbc[i];
        if (c < HP) {
          dmzx[c] += dact * act;
          dact *= mzx[c];
        }
        double dpre = dact * sg * (1.0 + pre[i] * (1.0 - sg));
        dconvB[c] += dpre;
        for (int64_t k = 0; k < K; ++k)
          if (int64_t src = t - (K - 1) + k; src >= 0) {
            dconvW[c * K + k] += dpre * cin(b, src, c);
            double dcin = dpre * convW[c * K + k];
            if (c < HP) {
              dproj[(b * L + src) * R + HP + c] += dcin * mzx[c];
              dmzx[c] += dcin * pr(b, src, HP + c);
            } else {
              dproj[(b * L + src) * R + HP + c] += dcin;
            }
          }
      }
  std::vector<double> dmp(P, 0.0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < P; ++p) {
      dmh[h] += dmzx[h * P + p] * chans.m[p];
      dmp[p] += dmzx[h * P + p] * heads.m[h];
    }
  values[op.getInputGrad()] = inputGrad(dproj, win, x.shape);
  values[op.getInProjGrad()] = weightGrad(x, dproj, d, R);
  values[op.getConvWeightGrad()] = std::move(dconvW);
  values[op.getConvBiasGrad()] = std::move(dconvB);
  values[op.getDtBiasGrad()] = std::move(ddtBias);
  values[op.getALogGrad()] = std::move(daLog);
  values[op.getDSkipGrad()] = std::move(dD);
  values[op.getNormWeightGrad()] = std::move(dnormW);
  values[op.getOutProjGrad()] = std::move(dwout);
  if (op.getHeadsMask())
    values[op.getHeadsMaskGrad()] = maskGrad(dmh, dphi * chans.phi, dsigma * chans.sigma);
  if (op.getChannelsMask())
    values[op.getChannelsMaskGrad()] = maskGrad(dmp, dphi * heads.phi, dsigma * heads.sigma);
  if (mhid)
    values[op.getHiddenMaskGrad()] = maskGrad(dmhid, 0.0, 0.0);
}

llvm::Error Evaluator::eval(Operation *op) {
  auto set = [&](Value v, RValue r) { values[v] = std::move(r); };
  return llvm::TypeSwitch<Operation *, llvm::Error>(op)
      .Case([&](el::EmbedOp o) -> llvm::Error {
        auto h = embed(o);
        if (!h)
          return h.takeError();
        set(o, std::move(*h));
        return llvm::Error::success();
      })
      .Case([&](el::RMSNormOp o) {
        set(o, rmsnorm(o));
        return llvm::Error::success();
      })
      .Case([&](el::Mamba2Op o) {
        set(o, mamba2(o));
        return llvm::Error::success();
      })
      .Case([&](el::AttentionOp o) {
        set(o, attention(o));
        return llvm::Error::success();
      })
      .Case([&](el::MLPOp o) {
        set(o, mlp(o));
        return llvm::Error::success();
      })
      .Case([&](el::DepthGateOp o) {
        Tensor h = tensor(o.getResidual());
        const Tensor &block = tensor(o.getBlock());
        double gamma = o.getKeep() ? tensor(o.getKeep())[*o.getLayer()] : 1.0;
        for (int64_t i = 0; i < h.numel(); ++i)
          h[i] += gamma * block[i];
        set(o, std::move(h));
        return llvm::Error::success();
      })
      .Case([&](el::LMHeadOp o) {
        set(o, linear(tensor(o.getInput()), tensor(o.getWeight())));
        return llvm::Error::success();
      })
      .Case([&](el::OneHotOp o) -> llvm::Error {
        Tensor u;
        int64_t n = cast<RankedTensorType>(o.getType()).getDimSize(0);
        if (std::string err = host::oneHot(n, static_cast<int64_t>(tensor(o.getIndex())[0]), u);
            !err.empty())
          return fail(o, err);
        set(o, std::move(u));
        return llvm::Error::success();
      })
      .Case([&](el::RouterOp o) {
        auto shape = cast<RankedTensorType>(o.getType()).getShape();
        set(o, host::router(tensor(o.getInput()), tensor(o.getW1()), tensor(o.getB1()),
                            tensor(o.getW2()), tensor(o.getB2()),
                            o.getNegativeSlope().convertToDouble(),
                            std::vector<int64_t>(shape.begin(), shape.end())));
        return llvm::Error::success();
      })
      .Case([&](el::GumbelNoiseOp o) {
        auto shape = cast<RankedTensorType>(o.getType()).getShape();
        auto seed = static_cast<uint64_t>(static_cast<int64_t>(tensor(o.getSeed())[0]));
        set(o, host::gumbelNoiseTensor(std::vector<int64_t>(shape.begin(), shape.end()), seed,
                                       o.getStream()));
        return llvm::Error::success();
      })
      .Case([&](el::GumbelSoftmaxOp o) {
        set(o,
            host::gumbelSoftmax(tensor(o.getLogits()), tensor(o.getNoise()), tensor(o.getTau())[0],
                                tensor(o.getScale())[0], tensor(o.getHard())[0] != 0.0));
        return llvm::Error::success();
      })
      .Case([&](el::PrefixMaskOp o) {
        set(o, prefixMask(o));
        return llvm::Error::success();
      })
      .Case([&](el::LayerKeepOp o) {
        set(o, host::layerKeep(tensor(o.getProbs()),
                               std::vector<int64_t>(o.getOrder().begin(), o.getOrder().end()),
                               o.getMode() == el::MaskMode::Soft));
        return llvm::Error::success();
      })
      .Case([&](el::CrossEntropyOp o) {
        const Tensor &logits = tensor(o.getLogits()), &targets = tensor(o.getTargets());
        int64_t v = logits.shape.back();
        double sum = 0.0;
        int64_t count = 0;
        for (int64_t t = 0; t < targets.numel(); ++t) {
          auto target = static_cast<int64_t>(targets[t]);
          if (target == o.getIgnoreIndexAttr().getInt())
            continue;
          sum -= logSoftmaxRow(&logits.data[t * v], v, 1.0)[target];
          ++count;
        }
        set(o, Tensor::scalar(count ? sum / count : 0.0));
        return llvm::Error::success();
      })
      .Case([&](el::KLDistillOp o) {
        const Tensor &s = tensor(o.getStudent()), &t = tensor(o.getTeacher());
        double temperature = o.getTemperature().convertToDouble();
        int64_t v = s.shape.back(), tokens = s.numel() / v;
        double sum = 0.0;
        for (int64_t r = 0; r < tokens; ++r) {
          auto ls = logSoftmaxRow(&s.data[r * v], v, temperature);
          auto lt = logSoftmaxRow(&t.data[r * v], v, temperature);
          for (int64_t i = 0; i < v; ++i)
            sum += std::exp(lt[i]) * (lt[i] - ls[i]);
        }
        set(o, Tensor::scalar(tokens ? sum / tokens : 0.0));
        return llvm::Error::success();
      })
      .Case([&](el::ExpectedSizeOp o) {
        set(o,
            host::expectedSize(tensor(o.getProbs()),
                               std::vector<int64_t>(o.getChoices().begin(), o.getChoices().end()),
                               o.getMode() == el::MaskMode::Soft));
        return llvm::Error::success();
      })
      .Case([&](el::ParamCountOp o) {
        set(o, paramCount(o));
        return llvm::Error::success();
      })
      .Case([&](el::ResourceLossOp o) -> llvm::Error {
        auto loss = resourceLoss(o);
        if (!loss)
          return loss.takeError();
        set(o, std::move(*loss));
        return llvm::Error::success();
      })
      .Case([&](el::EmbedGradOp o) {
        embedGrad(o);
        return llvm::Error::success();
      })
      .Case([&](el::RMSNormGradOp o) {
        rmsnormGrad(o);
        return llvm::Error::success();
      })
      .Case([&](el::MLPGradOp o) {
        mlpGrad(o);
        return llvm::Error::success();
      })
      .Case([&](el::LMHeadGradOp o) {
        const Tensor &x = tensor(o.getInput()), &w = tensor(o.getWeight());
        const Tensor &dl = tensor(o.getResultGrad());
        values[o.getInputGrad()] = inputGrad(dl, w, x.shape);
        values[o.getWeightGrad()] = weightGrad(x, dl, w.dim(1), w.dim(0));
        return llvm::Error::success();
      })
      .Case([&](el::DepthGateGradOp o) {
        const Tensor &block = tensor(o.getBlock()), &dh = tensor(o.getResultGrad());
        double gamma = o.getKeep() ? tensor(o.getKeep())[*o.getLayer()] : 1.0;
        Tensor db(block.shape);
        double dgamma = 0.0;
        for (int64_t i = 0; i < db.numel(); ++i) {
          db[i] = gamma * dh[i];
          dgamma += dh[i] * block[i];
        }
        values[o.getBlockGrad()] = std::move(db);
        if (o.getKeep()) {
          Tensor dkeep(tensor(o.getKeep()).shape);
          dkeep[*o.getLayer()] = dgamma;
          values[o.getKeepGrad()] = std::move(dkeep);
        }
        return llvm::Error::success();
      })
      .Case([&](el::CrossEntropyGradOp o) {
        const Tensor &logits = tensor(o.getLogits()), &targets = tensor(o.getTargets());
        double dloss = tensor(o.getResultGrad())[0];
        int64_t v = logits.shape.back(), count = 0;
        for (int64_t t = 0; t < targets.numel(); ++t)
          count += static_cast<int64_t>(targets[t]) != o.getIgnoreIndexAttr().getInt();
        Tensor g(logits.shape);
        for (int64_t t = 0; t < targets.numel() && count > 0; ++t) {
          auto target = static_cast<int64_t>(targets[t]);
          if (target == o.getIgnoreIndexAttr().getInt())
            continue;
          auto lp = logSoftmaxRow(&logits.data[t * v], v, 1.0);
          for (int64_t i = 0; i < v; ++i)
            g[t * v + i] = dloss / count * (std::exp(lp[i]) - (i == target ? 1.0 : 0.0));
        }
        values[o.getLogitsGrad()] = std::move(g);
        return llvm::Error::success();
      })
      .Case([&](el::KLDistillGradOp o) {
        const Tensor &s = tensor(o.getStudent()), &t = tensor(o.getTeacher());
        double dloss = tensor(o.getResultGrad())[0];
        double temperature = o.getTemperature().convertToDouble();
        int64_t v = s.shape.back(), tokens = s.numel() / v;
        Tensor g(s.shape);
        for (int64_t r = 0; r < tokens; ++r) {
          auto ls = logSoftmaxRow(&s.data[r * v], v, temperature);
          auto lt = logSoftmaxRow(&t.data[r * v], v, temperature);
          for (int64_t i = 0; i < v; ++i)
            g[r * v + i] = dloss / (tokens * temperature) * (std::exp(ls[i]) - std::exp(lt[i]));
        }
        values[o.getStudentGrad()] = std::move(g);
        return llvm::Error::success();
      })
      .Case([&](el::PrefixMaskGradOp o) {
        set(o, prefixMaskGrad(o));
        return llvm::Error::success();
      })
      .Case([&](el::Mamba2GradOp o) {
        mamba2Grad(o);
        return llvm::Error::success();
      })
      .Case([&](el::AttentionGradOp o) {
        attentionGrad(o);
        return llvm::Error::success();
      })
      .Case([&](el::RouterGradOp o) {
        routerGrad(o);
        return llvm::Error::success();
      })
      .Case([&](el::GumbelSoftmaxGradOp o) {
        set(o, host::gumbelSoftmaxGrad(tensor(o.getLogits()), tensor(o.getNoise()),
                                       tensor(o.getTau())[0], tensor(o.getScale())[0],
                                       tensor(o.getResultGrad())));
        return llvm::Error::success();
      })
      .Case([&](el::LayerKeepGradOp o) {
        set(o, host::layerKeepGrad(tensor(o.getProbs()), tensor(o.getResultGrad()),
                                   std::vector<int64_t>(o.getOrder().begin(), o.getOrder().end()),
                                   o.getMode() == el::MaskMode::Soft));
        return llvm::Error::success();
      })
      .Case([&](el::ExpectedSizeGradOp o) {
        set(o, host::expectedSizeGrad(
                   tensor(o.getProbs()), tensor(o.getResultGrad()),
                   std::vector<int64_t>(o.getChoices().begin(), o.getChoices().end()),
                   o.getMode() == el::MaskMode::Soft));
        return llvm::Error::success();
      })
      .Case([&](el::ParamCountGradOp o) {
        auto grads =
            host::paramCountGrad(fixedSizesOf(o), countOperands(o), tensor(o.getResultGrad())[0]);
        for (int operand = 0; operand < 6; ++operand)
          values[o->getResult(operand)] = std::move(grads[operand]);
        return llvm::Error::success();
      })
      .Case([&](el::ResourceLossGradOp o) { return resourceLossGrad(o); })
      .Case([&](arith::ConstantOp o) -> llvm::Error {
        auto dense = dyn_cast<DenseElementsAttr>(o.getValue());
        auto type = dyn_cast<RankedTensorType>(o.getType());
        if (!dense || !type || !isa<FloatType>(type.getElementType()))
          return fail(o, "only float tensor constants are supported");
        Tensor t(std::vector<int64_t>(type.getShape().begin(), type.getShape().end()));
        int64_t i = 0;
        for (APFloat v : dense.getValues<APFloat>())
          t[i++] = v.convertToDouble();
        set(o, std::move(t));
        return llvm::Error::success();
      })
      .Case<arith::AddFOp, arith::MulFOp>([&](auto o) {
        Tensor r = tensor(o.getLhs());
        const Tensor &rhs = tensor(o.getRhs());
        for (int64_t i = 0; i < r.numel(); ++i)
          r[i] = std::is_same_v<decltype(o), arith::AddFOp> ? r[i] + rhs[i] : r[i] * rhs[i];
        set(o, std::move(r));
        return llvm::Error::success();
      })
      .Default([&](Operation *other) {
        return fail(other, "is not supported by the reference evaluator");
      });
}

llvm::Expected<std::vector<Tensor>> Evaluator::run(func::FuncOp func, ArrayRef<Tensor> args) {
  if (args.size() != func.getNumArguments())
    return llvm::createStringError("@%s takes %u arguments, got %zu",
                                   func.getSymName().str().c_str(), func.getNumArguments(),
                                   args.size());
  for (auto [i, arg] : llvm::enumerate(func.getArguments())) {
    auto type = dyn_cast<RankedTensorType>(arg.getType());
    bool ok = type && type.getRank() == static_cast<int64_t>(args[i].shape.size());
    for (int64_t d = 0; ok && d < type.getRank(); ++d)
      ok = type.isDynamicDim(d) || type.getDimSize(d) == args[i].shape[d];
    int64_t n = 1;
    for (int64_t d : args[i].shape)
      n *= d;
    if (!ok || n != args[i].numel())
      return llvm::createStringError("argument #%zu of @%s has the wrong shape", i,
                                     func.getSymName().str().c_str());
    values[arg] = args[i];
  }
  for (Operation &op : func.front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      std::vector<Tensor> results;
      for (Value v : ret.getOperands()) {
        // A mask result is returned in its packed [m..., phi, sigma] layout.
        if (auto *m = std::get_if<Mask>(&values.at(v)))
          results.push_back(m->packed());
        else
          results.push_back(tensor(v));
      }
      return results;
    }
    if (llvm::Error err = eval(&op))
      return err;
  }
  return llvm::createStringError("@%s has no return", func.getSymName().str().c_str());
}

} // namespace

llvm::Expected<std::vector<Tensor>> nestor::ref::evaluate(func::FuncOp func,
                                                          ArrayRef<Tensor> args) {
  return Evaluator().run(func, args);
}
