//===- ElasticAutodiff.cpp - Reverse-mode differentiation of elastic IR ----===//
//
// Builds `@<f>_train_step` from `@<f>`: the forward ops, then the backward ops each forward
// op builds through GradientOpInterface, in reverse order, with cotangents accumulated over
// uses. The pass never looks at op kinds.
//
//===----------------------------------------------------------------------===//
#include "passes/Passes.h"

#include "dialects/elastic/ElasticOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/DenseSet.h"

namespace nestor {
#define GEN_PASS_DEF_ELASTICAUTODIFFPASS
#include "passes/Passes.h.inc"
} // namespace nestor

using namespace mlir;
using namespace nestor::elastic;

namespace {

bool isDifferentiable(Value v) {
  if (isa<MaskType>(v.getType()))
    return true;
  auto shaped = dyn_cast<ShapedType>(v.getType());
  return shaped && isa<FloatType>(shaped.getElementType());
}

struct ElasticAutodiffPass : nestor::impl::ElasticAutodiffPassBase<ElasticAutodiffPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>(function);
    if (!forward) {
      module.emitError() << "elastic-autodiff: no function @" << function;
      return signalPassFailure();
    }
    if (!llvm::hasSingleElement(forward.getBody())) {
      forward.emitError("elastic-autodiff expects a function with a single block");
      return signalPassFailure();
    }
    auto forwardReturn = cast<func::ReturnOp>(forward.front().getTerminator());
    if (lossIndex >= forwardReturn.getNumOperands()) {
      forward.emitError() << "elastic-autodiff: loss-index " << static_cast<unsigned>(lossIndex)
                          << " but @" << function << " has " << forwardReturn.getNumOperands()
                          << " results";
      return signalPassFailure();
    }
    auto lossType = dyn_cast<RankedTensorType>(forwardReturn.getOperand(lossIndex).getType());
    if (!lossType || lossType.getRank() != 0 || !isa<FloatType>(lossType.getElementType())) {
      forward.emitError() << "elastic-autodiff: result #" << static_cast<unsigned>(lossIndex)
                          << " is not a scalar float tensor loss";
      return signalPassFailure();
    }

    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(forward);
    auto step = cast<func::FuncOp>(b.clone(*forward));
    step.setSymName(function + "_train_step");
    Block &body = step.front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    Value loss = ret.getOperand(lossIndex);

    // Activity: values that depend on a parameter and reach the loss.
    SmallVector<BlockArgument> params;
    llvm::DenseSet<Value> varied, useful;
    for (BlockArgument arg : step.getArguments())
      if (step.getArgAttr(arg.getArgNumber(), "elastic.param") && isDifferentiable(arg)) {
        params.push_back(arg);
        varied.insert(arg);
      }
    for (Operation &op : body.without_terminator())
      if (llvm::any_of(op.getOperands(), [&](Value v) { return varied.contains(v); }))
        varied.insert(op.result_begin(), op.result_end());
    useful.insert(loss);
    for (Operation &op : llvm::reverse(body.without_terminator()))
      if (llvm::any_of(op.getResults(), [&](Value v) { return useful.contains(v); }))
        useful.insert(op.operand_begin(), op.operand_end());
    auto active = [&](Value v) {
      return varied.contains(v) && useful.contains(v) && isDifferentiable(v);
    };

    // The reverse sweep.
    b.setInsertionPoint(ret);
    Location loc = step.getLoc();
    llvm::DenseMap<Value, Value> grads;
    grads[loss] = arith::ConstantOp::create(
        b, loc, lossType,
        DenseElementsAttr::get(lossType, b.getFloatAttr(lossType.getElementType(), 1.0)));
    SmallVector<Operation *> forwardOps;
    for (Operation &op : body.without_terminator())
      forwardOps.push_back(&op);
    for (Operation *op : llvm::reverse(forwardOps)) {
      SmallVector<Value> resultGrads;
      bool any = false;
      for (Value r : op->getResults()) {
        Value g = active(r) ? grads.lookup(r) : Value();
        resultGrads.push_back(g);
        any = any || g;
      }
      if (!any)
        continue;
      auto gradient = dyn_cast<GradientOpInterface>(op);
      if (!gradient) {
        op->emitOpError("is on the path from the parameters to the loss but has no gradient "
                        "rule (GradientOpInterface)");
        return signalPassFailure();
      }
      SmallVector<Value> operandGrads;
      if (failed(gradient.buildVJP(b, resultGrads, operandGrads)) ||
          operandGrads.size() != op->getNumOperands()) {
        op->emitOpError("failed to build its vector-Jacobian product");
        return signalPassFailure();
      }
      for (auto [operand, g] : llvm::zip(op->getOperands(), operandGrads)) {
        if (!g || !active(operand))
          continue;
        Value &acc = grads[operand];
        acc = acc ? Value(arith::AddFOp::create(b, loc, acc, g)) : g;
      }
    }

    // Results: the forward results, then one gradient per parameter.
    SmallVector<Value> results(ret.getOperands());
    SmallVector<Attribute> resultAttrs;
    ArrayAttr names = forward->getAttrOfType<ArrayAttr>("elastic.result_names");
    for (unsigned i = 0; i < ret.getNumOperands(); ++i)
      resultAttrs.push_back(names && i < names.size()
                                ? b.getDictionaryAttr(b.getNamedAttr("elastic.result", names[i]))
                                : b.getDictionaryAttr({}));
    for (BlockArgument arg : params) {
      Value g = grads.lookup(arg);
      if (!g) {
        auto type = cast<RankedTensorType>(arg.getType());
        g = arith::ConstantOp::create(
            b, loc, type, DenseElementsAttr::get(type, b.getFloatAttr(type.getElementType(), 0.0)));
      }
      results.push_back(g);
      resultAttrs.push_back(b.getDictionaryAttr(
          b.getNamedAttr("elastic.grad_of", step.getArgAttr(arg.getArgNumber(), "elastic.param"))));
    }
    func::ReturnOp::create(b, ret.getLoc(), results);
    ret.erase();
    step.setType(b.getFunctionType(step.getArgumentTypes(), ValueRange(results).getTypes()));
    step.setAllResultAttrs(resultAttrs);
    step->removeAttr("elastic.result_names");

    // Backward ops build every operand's cotangent; drop the ones nothing uses.
    SmallVector<Operation *> ops;
    for (Operation &op : body.without_terminator())
      ops.push_back(&op);
    for (Operation *op : llvm::reverse(ops))
      if (isOpTriviallyDead(op))
        op->erase();
  }
};

} // namespace
