//===- ArithGradients.cpp - VJP rules for the arith ops elastic IR uses ----===//
//
// The importer combines losses with arith.addf / arith.mulf on 0-d tensors; autodiff reaches
// them through GradientOpInterface external models, like any elastic op.
//
//===----------------------------------------------------------------------===//
#include "dialects/elastic/ElasticOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/DialectRegistry.h"

using namespace mlir;
using namespace nestor::elastic;

namespace {

struct AddFGradient : public GradientOpInterface::ExternalModel<AddFGradient, arith::AddFOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b, ValueRange resultGrads,
                         SmallVectorImpl<Value> &operandGrads) const {
    operandGrads.append({resultGrads[0], resultGrads[0]});
    return success();
  }
};

struct MulFGradient : public GradientOpInterface::ExternalModel<MulFGradient, arith::MulFOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b, ValueRange resultGrads,
                         SmallVectorImpl<Value> &operandGrads) const {
    auto mul = cast<arith::MulFOp>(op);
    operandGrads.push_back(arith::MulFOp::create(b, op->getLoc(), resultGrads[0], mul.getRhs()));
    operandGrads.push_back(arith::MulFOp::create(b, op->getLoc(), resultGrads[0], mul.getLhs()));
    return success();
  }
};

} // namespace

void nestor::elastic::registerArithGradientModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, arith::ArithDialect *) {
    arith::AddFOp::attachInterface<AddFGradient>(*context);
    arith::MulFOp::attachInterface<MulFGradient>(*context);
  });
}
