//===- ElasticSlice.cpp - The dense model at one budget --------------------===//
//
// Demand-driven: starting from the logits, the pass asks the producer of every value the dense
// model needs to slice itself (SliceOpInterface). Routing values are evaluated on the way, so
// only what the chosen sub-network computes is ever built: a dropped layer's block is never
// asked for, and the routers, masks and losses are left behind with the elastic function.
//
//===----------------------------------------------------------------------===//
#include "dialects/elastic/ElasticOps.h"
#include "dialects/elastic/ElasticSlicing.h"
#include "passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Regex.h"

#include <map>

namespace nestor {
#define GEN_PASS_DEF_ELASTICSLICEPASS
#include "passes/Passes.h.inc"
} // namespace nestor

using namespace mlir;
using namespace nestor::elastic;

namespace {

StringRef argName(func::FuncOp f, unsigned i, StringRef kind) {
  auto name = f.getArgAttrOfType<StringAttr>(i, kind);
  return name ? name.getValue() : StringRef();
}

/// A weight of the dense function: which parent argument it cuts and how.
struct DenseWeight {
  unsigned parentArg;
  std::vector<std::vector<int64_t>> indices;
  BlockArgument value;
};

class Slicer final : public SliceState {
public:
  Slicer(func::FuncOp elastic, int64_t budgetIndex)
      : elastic(elastic), budgetIndex(budgetIndex), b(elastic.getContext()) {}

  /// Builds the dense function (not yet inserted anywhere) or fails with a diagnostic.
  FailureOr<func::FuncOp> run();

  OpBuilder &builder() override { return b; }

  FailureOr<Value> lookup(Value value) override {
    if (Value d = dense.lookup(value))
      return d;
    if (auto arg = dyn_cast<BlockArgument>(value)) {
      StringRef name = argName(elastic, arg.getArgNumber(), "elastic.input");
      return emitError(elastic.getLoc())
             << "the dense model would need the run-time input '" << name << "' (argument "
             << arg.getArgNumber() << "); only 'tokens' survives slicing";
    }
    if (failed(sliceProducer(value)))
      return failure();
    if (Value d = dense.lookup(value))
      return d;
    return value.getDefiningOp()->emitOpError() << "gave no dense value when sliced";
  }

  void map(Value value, Value d) override { dense[value] = d; }

  FailureOr<ArrayRef<double>> evaluate(Value value) override {
    auto it = values.find(value);
    if (it != values.end())
      return ArrayRef<double>(it->second);
    if (auto arg = dyn_cast<BlockArgument>(value)) {
      unsigned i = arg.getArgNumber();
      if (argName(elastic, i, "elastic.input") == "budget")
        return ArrayRef<double>(values[value] = {double(budgetIndex)});
      if (StringRef param = argName(elastic, i, "elastic.param"); !param.empty())
        return emitError(elastic.getLoc())
               << "router weight '" << param << "' is an argument of @" << elastic.getSymName()
               << ": elastic-slice evaluates the routers, so their trained weights must be "
                  "constants (nestor slice binds them from the checkpoint)";
      return emitError(elastic.getLoc())
             << "argument " << i << " has no value at deployment; routers may depend only on "
             << "the budget and constants";
    }
    Operation *op = value.getDefiningOp();
    if (auto c = dyn_cast<arith::ConstantOp>(op)) {
      auto attr = dyn_cast<DenseElementsAttr>(c.getValue());
      if (!attr)
        return c.emitOpError() << "is not a dense tensor constant";
      std::vector<double> v;
      if (isa<FloatType>(attr.getElementType()))
        for (const APFloat &x : attr.getValues<APFloat>())
          v.push_back(x.convertToDouble());
      else
        for (const APInt &x : attr.getValues<APInt>())
          v.push_back(double(x.getSExtValue()));
      return ArrayRef<double>(values[value] = std::move(v));
    }
    if (failed(sliceProducer(value)))
      return failure();
    it = values.find(value);
    if (it == values.end())
      return op->emitOpError() << "has no value at the budget";
    return ArrayRef<double>(it->second);
  }

  void setValue(Value value, std::vector<double> data) override { values[value] = std::move(data); }

  FailureOr<int64_t> activeSize(Value mask, int64_t fullSize) override {
    if (!mask)
      return fullSize;
    auto it = sizes.find(mask);
    if (it == sizes.end()) {
      if (isa<BlockArgument>(mask))
        return emitError(elastic.getLoc()) << "a mask argument has no value at deployment";
      if (failed(sliceProducer(mask)))
        return failure();
      it = sizes.find(mask);
      if (it == sizes.end())
        return mask.getDefiningOp()->emitOpError() << "gave no active size when sliced";
    }
    return it->second;
  }

  void setActiveSize(Value mask, int64_t size) override { sizes[mask] = size; }

  FailureOr<Value> sliceWeight(Operation *user, Value weight,
                               ArrayRef<std::vector<int64_t>> indices) override {
    auto arg = dyn_cast<BlockArgument>(weight);
    if (!arg || arg.getOwner() != &elastic.front() ||
        argName(elastic, arg.getArgNumber(), "elastic.param").empty())
      return user->emitOpError() << "reads a weight that is not a parameter of @"
                                 << elastic.getSymName() << "; only parameters can be sliced";
    unsigned i = arg.getArgNumber();
    auto type = cast<RankedTensorType>(weight.getType());
    if (static_cast<size_t>(type.getRank()) != indices.size())
      return user->emitOpError() << "slices a rank-" << type.getRank() << " weight with "
                                 << indices.size() << " index lists";
    for (auto [d, list] : llvm::enumerate(indices))
      for (int64_t x : list)
        if (x < 0 || x >= type.getDimSize(d))
          return user->emitOpError()
                 << "keeps index " << x << " of dimension " << d << " of '"
                 << argName(elastic, i, "elastic.param") << "' (size " << type.getDimSize(d) << ")";
    auto it = weights.find(i);
    if (it != weights.end()) {
      if (it->second.indices != std::vector<std::vector<int64_t>>(indices.begin(), indices.end()))
        return user->emitOpError() << "slices '" << argName(elastic, i, "elastic.param")
                                   << "' differently from an earlier use";
      return Value(it->second.value);
    }
    SmallVector<int64_t> shape;
    for (const auto &list : indices)
      shape.push_back(static_cast<int64_t>(list.size()));
    BlockArgument d =
        body->addArgument(RankedTensorType::get(shape, type.getElementType()), weight.getLoc());
    weights[i] = DenseWeight{i, {indices.begin(), indices.end()}, d};
    order.push_back(i);
    return Value(d);
  }

private:
  LogicalResult sliceProducer(Value value) {
    Operation *op = value.getDefiningOp();
    if (!visited.insert(op).second)
      return op->emitOpError() << "was already sliced";
    auto slicing = dyn_cast<SliceOpInterface>(op);
    if (!slicing)
      return op->emitOpError() << "has no slicing rule (SliceOpInterface), but the dense model "
                                  "needs its result";
    return slicing.sliceAtBudget(*this);
  }

  func::FuncOp elastic;
  int64_t budgetIndex;
  OpBuilder b;
  Block *body = nullptr;
  llvm::DenseMap<Value, Value> dense;
  llvm::DenseMap<Value, std::vector<double>> values;
  llvm::DenseMap<Value, int64_t> sizes;
  llvm::DenseSet<Operation *> visited;
  llvm::DenseMap<unsigned, DenseWeight> weights;
  SmallVector<unsigned> order; // parent arguments in the order they were sliced
};

/// `[begin, end)` runs of a sorted-or-not index list, in order.
SmallVector<int64_t> runsOf(ArrayRef<int64_t> indices) {
  SmallVector<int64_t> runs;
  for (int64_t x : indices) {
    if (!runs.empty() && runs.back() == x) {
      ++runs.back();
      continue;
    }
    runs.push_back(x);
    runs.push_back(x + 1);
  }
  return runs;
}

FailureOr<func::FuncOp> Slicer::run() {
  MLIRContext *ctx = elastic.getContext();
  std::optional<unsigned> tokens;
  for (unsigned i = 0; i < elastic.getNumArguments(); ++i)
    if (argName(elastic, i, "elastic.input") == "tokens")
      tokens = i;
  if (!tokens)
    return elastic.emitError() << "has no argument marked elastic.input = \"tokens\"";
  // The logits: the result named so, else the first.
  unsigned logitsIndex = 0;
  if (auto names = elastic->getAttrOfType<ArrayAttr>("elastic.result_names"))
    for (auto [i, n] : llvm::enumerate(names))
      if (auto s = dyn_cast<StringAttr>(n); s && s.getValue() == "logits")
        logitsIndex = static_cast<unsigned>(i);
  if (logitsIndex >= elastic.getNumResults())
    return elastic.emitError() << "has no logits result";

  auto fn =
      func::FuncOp::create(elastic.getLoc(), elastic.getSymName(), FunctionType::get(ctx, {}, {}));
  body = fn.addEntryBlock();
  b.setInsertionPointToEnd(body);
  map(elastic.getArgument(*tokens),
      body->addArgument(elastic.getArgument(*tokens).getType(), elastic.getLoc()));

  auto ret = cast<func::ReturnOp>(elastic.front().getTerminator());
  FailureOr<Value> logits = lookup(ret.getOperand(logitsIndex));
  if (failed(logits)) {
    fn.erase();
    return failure();
  }
  func::ReturnOp::create(b, ret.getLoc(), ValueRange{*logits});

  // Dense names: parent layers renumbered over the kept ones (the weights of a dropped layer
  // were never asked for).
  llvm::Regex layerRe("^backbone\\.layers\\.([0-9]+)\\.(.*)$");
  std::map<int64_t, int64_t> keptLayers;
  for (unsigned i : order) {
    SmallVector<StringRef> m;
    if (layerRe.match(argName(elastic, i, "elastic.param"), &m))
      keptLayers[std::stoll(m[1].str())] = 0;
  }
  int64_t next = 0;
  for (auto &[parent, denseIndex] : keptLayers)
    denseIndex = next++;

  SmallVector<Type> argTypes{body->getArgument(0).getType()};
  SmallVector<DictionaryAttr> argAttrs{
      b.getDictionaryAttr(b.getNamedAttr("elastic.input", b.getStringAttr("tokens")))};
  for (unsigned i : order) {
    const DenseWeight &w = weights[i];
    StringRef parentName = argName(elastic, i, "elastic.param");
    std::string denseName = parentName.str();
    SmallVector<StringRef> m;
    if (layerRe.match(parentName, &m))
      denseName =
          ("backbone.layers." + llvm::Twine(keptLayers[std::stoll(m[1].str())]) + "." + m[2]).str();
    SmallVector<Attribute> runs;
    for (const auto &list : w.indices)
      runs.push_back(b.getDenseI64ArrayAttr(runsOf(list)));
    argTypes.push_back(w.value.getType());
    argAttrs.push_back(
        b.getDictionaryAttr({b.getNamedAttr("elastic.param", b.getStringAttr(denseName)),
                             b.getNamedAttr("elastic.slice", b.getArrayAttr(runs)),
                             b.getNamedAttr("elastic.slice_of", b.getStringAttr(parentName))}));
  }
  fn.setFunctionType(FunctionType::get(ctx, argTypes, {(*logits).getType()}));
  fn.setAllArgAttrs(argAttrs);
  fn->setAttr("elastic.result_names", b.getStrArrayAttr({"logits"}));
  return fn;
}

struct ElasticSlicePass : nestor::impl::ElasticSlicePassBase<ElasticSlicePass> {
  using ElasticSlicePassBase::ElasticSlicePassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto elastic = module.lookupSymbol<func::FuncOp>(function);
    if (!elastic) {
      module.emitError() << "elastic-slice: no function @" << function;
      return signalPassFailure();
    }
    auto budgets = elastic->getAttrOfType<ArrayAttr>("elastic.budgets");
    if (!budgets) {
      elastic.emitError() << "elastic-slice: @" << function
                          << " has no elastic.budgets (is it an elastic model?)";
      return signalPassFailure();
    }
    std::optional<int64_t> index;
    SmallVector<StringRef> names;
    for (auto [i, a] : llvm::enumerate(budgets)) {
      StringRef name = cast<StringAttr>(a).getValue();
      names.push_back(name);
      if (name == budget)
        index = static_cast<int64_t>(i);
    }
    if (!index) {
      elastic.emitError() << "elastic-slice: unknown budget '" << budget
                          << "'; the budgets are: " << llvm::join(names, ", ");
      return signalPassFailure();
    }
    Slicer slicer(elastic, *index);
    FailureOr<func::FuncOp> dense = slicer.run();
    if (failed(dense))
      return signalPassFailure();
    (*dense)->setAttr("elastic.budget", StringAttr::get(&getContext(), budget));
    module.getBody()->getOperations().insert(elastic->getIterator(), *dense);
    elastic.erase();
  }
};

} // namespace
