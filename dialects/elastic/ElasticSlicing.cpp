//===- ElasticSlicing.cpp - How each op slices itself at a budget ----------===//
//
// SliceOpInterface of the elastic ops (METHOD.md §8). Routing ops evaluate the routers at the
// budget: the argmax choice of every axis, the layers the depth router drops. Model ops build
// their dense form with every mask folded to the prefix it keeps (weights are permuted by
// importance, so the kept channels are a prefix of each axis, per group for grouped axes) and
// every weight cut to those indices. With the masked-norm correction the dense op computes
// exactly what the masked op computes (METHOD.md §5), so no mask is left.
//
//===----------------------------------------------------------------------===//
#include "dialects/elastic/ElasticSlicing.h"
#include "dialects/elastic/ElasticOps.h"
#include "nestor/SliceIndices.h"

#include "mlir/IR/BuiltinTypes.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace nestor::elastic;
using nestor::slice::concat;
using nestor::slice::expand;
using nestor::slice::groupPrefixes;
using nestor::slice::range;
using nestor::slice::shifted;

namespace {

int64_t dimOf(Value v, unsigned d) { return cast<RankedTensorType>(v.getType()).getDimSize(d); }

/// `tensor<?x?xW x T>`: an activation of width `width`, element type of `like`.
RankedTensorType activation(Value like, int64_t width) {
  auto t = cast<RankedTensorType>(like.getType());
  return RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic, width},
                               t.getElementType());
}

int64_t argmax(ArrayRef<double> v) {
  return static_cast<int64_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

/// The dense input and its width.
struct DenseInput {
  Value value;
  int64_t width;
};

FailureOr<DenseInput> denseInput(SliceState &state, Value input) {
  FailureOr<Value> v = state.lookup(input);
  if (failed(v))
    return failure();
  return DenseInput{*v, dimOf(*v, 2)};
}

/// The active total of a grouped mask, checked to keep the same count in every group.
FailureOr<int64_t> activeGrouped(Operation *op, SliceState &state, Value mask, int64_t full,
                                 int64_t groups, StringRef what) {
  FailureOr<int64_t> n = state.activeSize(mask, full);
  if (failed(n))
    return failure();
  if (*n <= 0 || *n > full || *n % groups != 0)
    return op->emitOpError() << "keeps " << *n << " " << what << " at this budget, not a positive "
                             << "multiple of " << groups << " up to " << full;
  return n;
}

} // namespace

//===----------------------------------------------------------------------===//
// Routing ops: evaluated at the budget
//===----------------------------------------------------------------------===//

LogicalResult OneHotOp::sliceAtBudget(SliceState &state) {
  FailureOr<ArrayRef<double>> index = state.evaluate(getIndex());
  if (failed(index))
    return failure();
  int64_t n = dimOf(getResult(), 0), b = static_cast<int64_t>((*index)[0]);
  if (b < 0 || b >= n)
    return emitOpError() << "budget index " << b << " is not in [0, " << n << ")";
  std::vector<double> u(n, 0.0);
  u[b] = 1.0;
  state.setValue(getResult(), std::move(u));
  return success();
}

LogicalResult RouterOp::sliceAtBudget(SliceState &state) {
  SmallVector<ArrayRef<double>> in;
  for (Value v : {getInput(), getW1(), getB1(), getW2(), getB2()}) {
    FailureOr<ArrayRef<double>> x = state.evaluate(v);
    if (failed(x))
      return failure();
    in.push_back(*x);
  }
  ArrayRef<double> u = in[0], w1 = in[1], b1 = in[2], w2 = in[3], b2 = in[4];
  size_t hidden = b1.size(), inputs = u.size(), outputs = b2.size();
  std::vector<double> h(hidden), z(outputs);
  double slope = getNegativeSlope().convertToDouble();
  for (size_t j = 0; j < hidden; ++j) {
    double a = b1[j];
    for (size_t i = 0; i < inputs; ++i)
      a += w1[j * inputs + i] * u[i];
    h[j] = a >= 0 ? a : slope * a;
  }
  for (size_t o = 0; o < outputs; ++o) {
    double a = b2[o];
    for (size_t j = 0; j < hidden; ++j)
      a += w2[o * hidden + j] * h[j];
    z[o] = a;
  }
  state.setValue(getResult(), std::move(z));
  return success();
}

LogicalResult GumbelSoftmaxOp::sliceAtBudget(SliceState &state) {
  // Deployment takes the router's argmax (METHOD.md §8): no noise, and the temperature and
  // logit scale do not move an argmax. The value is the one-hot of each row's argmax.
  FailureOr<ArrayRef<double>> z = state.evaluate(getLogits());
  if (failed(z))
    return failure();
  int64_t n = cast<RankedTensorType>(getLogits().getType()).getShape().back();
  std::vector<double> pi(z->size(), 0.0);
  for (size_t row = 0; row * n < z->size(); ++row)
    pi[row * n + argmax(z->slice(row * n, n))] = 1.0;
  state.setValue(getResult(), std::move(pi));
  return success();
}

LogicalResult PrefixMaskOp::sliceAtBudget(SliceState &state) {
  FailureOr<ArrayRef<double>> pi = state.evaluate(getProbs());
  if (failed(pi))
    return failure();
  int64_t n = static_cast<int64_t>(getChoices().size());
  int64_t row = getRow() ? static_cast<int64_t>(*getRow()) : 0;
  if ((row + 1) * n > static_cast<int64_t>(pi->size()))
    return emitOpError() << "row " << row << " is outside its probabilities";
  state.setActiveSize(getResult(), getChoices()[argmax(pi->slice(row * n, n))]);
  return success();
}

LogicalResult LayerKeepOp::sliceAtBudget(SliceState &state) {
  FailureOr<ArrayRef<double>> pi = state.evaluate(getProbs());
  if (failed(pi))
    return failure();
  // The argmax k drops the k least important layers: the first k of `order`.
  int64_t k = argmax(*pi);
  std::vector<double> keep(getOrder().size(), 1.0);
  for (int64_t i = 0; i < k && i < static_cast<int64_t>(keep.size()); ++i)
    keep[getOrder()[i]] = 0.0;
  state.setValue(getResult(), std::move(keep));
  return success();
}

//===----------------------------------------------------------------------===//
// Model ops: the dense op on the kept prefix
//===----------------------------------------------------------------------===//

LogicalResult EmbedOp::sliceAtBudget(SliceState &state) {
  int64_t vocab = dimOf(getTable(), 0), full = dimOf(getTable(), 1);
  FailureOr<int64_t> d = state.activeSize(getHiddenMask(), full);
  FailureOr<Value> tokens = state.lookup(getTokens());
  if (failed(d) || failed(tokens))
    return failure();
  FailureOr<Value> table = state.sliceWeight(*this, getTable(), {range(vocab), range(*d)});
  if (failed(table))
    return failure();
  OpBuilder &b = state.builder();
  state.map(getResult(),
            EmbedOp::create(b, getLoc(), activation(getResult(), *d), *tokens, *table, Value()));
  return success();
}

LogicalResult RMSNormOp::sliceAtBudget(SliceState &state) {
  FailureOr<DenseInput> x = denseInput(state, getInput());
  if (failed(x))
    return failure();
  FailureOr<Value> w = state.sliceWeight(*this, getWeight(), {range(x->width)});
  if (failed(w))
    return failure();
  OpBuilder &b = state.builder();
  state.map(getResult(), RMSNormOp::create(b, getLoc(), x->value.getType(), x->value, *w, Value(),
                                           getEpsilonAttr()));
  return success();
}

LogicalResult LMHeadOp::sliceAtBudget(SliceState &state) {
  FailureOr<DenseInput> x = denseInput(state, getInput());
  if (failed(x))
    return failure();
  int64_t vocab = dimOf(getWeight(), 0);
  FailureOr<Value> w = state.sliceWeight(*this, getWeight(), {range(vocab), range(x->width)});
  if (failed(w))
    return failure();
  OpBuilder &b = state.builder();
  state.map(getResult(),
            LMHeadOp::create(b, getLoc(), getResult().getType(), x->value, *w).getResult());
  return success();
}

LogicalResult MLPOp::sliceAtBudget(SliceState &state) {
  FailureOr<DenseInput> x = denseInput(state, getInput());
  int64_t full = dimOf(getUpProj(), 0);
  FailureOr<int64_t> f = state.activeSize(getFfnMask(), full);
  if (failed(x) || failed(f))
    return failure();
  std::vector<int64_t> hidden = range(x->width), ffn = range(*f);
  FailureOr<Value> up = state.sliceWeight(*this, getUpProj(), {ffn, hidden});
  FailureOr<Value> down = state.sliceWeight(*this, getDownProj(), {hidden, ffn});
  if (failed(up) || failed(down))
    return failure();
  OpBuilder &b = state.builder();
  state.map(getResult(),
            MLPOp::create(b, getLoc(), x->value.getType(), x->value, *up, *down, Value(), Value()));
  return success();
}

LogicalResult AttentionOp::sliceAtBudget(SliceState &state) {
  int64_t nh = getNumHeads(), nkv = getNumKvHeads(), hd = getHeadDim();
  FailureOr<DenseInput> x = denseInput(state, getInput());
  FailureOr<int64_t> heads =
      activeGrouped(*this, state, getHeadsMask(), nh, nkv, "attention heads");
  if (failed(x) || failed(heads))
    return failure();
  // Query heads: the first heads/nkv of every KV group; K and V stay whole.
  std::vector<int64_t> hidden = range(x->width);
  std::vector<int64_t> q = expand(groupPrefixes(nkv, nh / nkv, *heads / nkv), hd, hd);
  FailureOr<Value> wq = state.sliceWeight(*this, getQProj(), {q, hidden});
  FailureOr<Value> wk = state.sliceWeight(*this, getKProj(), {range(nkv * hd), hidden});
  FailureOr<Value> wv = state.sliceWeight(*this, getVProj(), {range(nkv * hd), hidden});
  FailureOr<Value> wo = state.sliceWeight(*this, getOProj(), {hidden, q});
  if (failed(wq) || failed(wk) || failed(wv) || failed(wo))
    return failure();
  OpBuilder &b = state.builder();
  state.map(getResult(),
            AttentionOp::create(b, getLoc(), x->value.getType(), x->value, *wq, *wk, *wv, *wo,
                                Value(), Value(), b.getI64IntegerAttr(*heads), getNumKvHeadsAttr(),
                                getHeadDimAttr()));
  return success();
}

LogicalResult Mamba2Op::sliceAtBudget(SliceState &state) {
  int64_t H = getNumHeads(), P = getHeadDim(), G = getNGroups(), N = getStateSize();
  int64_t HP = H * P, GN = G * N, K = dimOf(getConvWeight(), 1);
  FailureOr<DenseInput> x = denseInput(state, getInput());
  FailureOr<int64_t> heads = activeGrouped(*this, state, getHeadsMask(), H, G, "Mamba heads");
  FailureOr<int64_t> headDim = state.activeSize(getChannelsMask(), P);
  if (failed(x) || failed(heads) || failed(headDim))
    return failure();
  if (*headDim <= 0 || *headDim > P)
    return emitOpError() << "keeps " << *headDim << " channels per head, not in (0, " << P << "]";
  // Heads: the first heads/G of every group; channels: one prefix shared by every kept head;
  // B and C stay whole. in_proj rows are [z (HP), x (HP), B (GN), C (GN), dt (H)], the conv
  // channels [x (HP), B (GN), C (GN)].
  std::vector<int64_t> hidden = range(x->width);
  std::vector<int64_t> keptHeads = groupPrefixes(G, H / G, *heads / G);
  std::vector<int64_t> chans = expand(keptHeads, P, *headDim);
  std::vector<int64_t> bc = range(2 * GN);
  std::vector<int64_t> inRows =
      concat({chans, shifted(chans, HP), shifted(bc, 2 * HP), shifted(keptHeads, 2 * HP + 2 * GN)});
  std::vector<int64_t> conv = concat({chans, shifted(bc, HP)});
  FailureOr<Value> inProj = state.sliceWeight(*this, getInProj(), {inRows, hidden});
  FailureOr<Value> convW = state.sliceWeight(*this, getConvWeight(), {conv, range(K)});
  FailureOr<Value> convB = state.sliceWeight(*this, getConvBias(), {conv});
  FailureOr<Value> dtBias = state.sliceWeight(*this, getDtBias(), {keptHeads});
  FailureOr<Value> aLog = state.sliceWeight(*this, getALog(), {keptHeads});
  FailureOr<Value> dSkip = state.sliceWeight(*this, getDSkip(), {keptHeads});
  FailureOr<Value> norm = state.sliceWeight(*this, getNormWeight(), {chans});
  FailureOr<Value> outProj = state.sliceWeight(*this, getOutProj(), {hidden, chans});
  for (const FailureOr<Value> &w : {inProj, convW, convB, dtBias, aLog, dSkip, norm, outProj})
    if (failed(w))
      return failure();
  OpBuilder &b = state.builder();
  state.map(getResult(),
            Mamba2Op::create(b, getLoc(), x->value.getType(), x->value, *inProj, *convW, *convB,
                             *dtBias, *aLog, *dSkip, *norm, *outProj, Value(), Value(), Value(),
                             b.getI64IntegerAttr(*heads), b.getI64IntegerAttr(*headDim),
                             getNGroupsAttr(), getStateSizeAttr(), getEpsilonAttr()));
  return success();
}

LogicalResult DepthGateOp::sliceAtBudget(SliceState &state) {
  if (getKeep()) {
    FailureOr<ArrayRef<double>> keep = state.evaluate(getKeep());
    if (failed(keep))
      return failure();
    int64_t layer = getLayer() ? static_cast<int64_t>(*getLayer()) : 0;
    if (layer >= static_cast<int64_t>(keep->size()))
      return emitOpError() << "layer " << layer << " is outside its keep gates";
    if ((*keep)[layer] == 0.0) {
      // A dropped layer is the identity: its block is never sliced, so it disappears.
      FailureOr<Value> residual = state.lookup(getResidual());
      if (failed(residual))
        return failure();
      state.map(getResult(), *residual);
      return success();
    }
  }
  FailureOr<Value> residual = state.lookup(getResidual());
  FailureOr<Value> block = state.lookup(getBlock());
  if (failed(residual) || failed(block))
    return failure();
  if (residual->getType() != block->getType())
    return emitOpError() << "slices its residual to " << residual->getType() << " but its block to "
                         << block->getType();
  OpBuilder &b = state.builder();
  state.map(getResult(), DepthGateOp::create(b, getLoc(), residual->getType(), *residual, *block,
                                             Value(), IntegerAttr()));
  return success();
}
