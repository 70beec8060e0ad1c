//===- ElasticInterfaces.td - Interfaces of the elastic dialect -*- tablegen -*-===//
#ifndef NESTOR_ELASTIC_INTERFACES_TD
#define NESTOR_ELASTIC_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Elastic_MaskedOpInterface : OpInterface<"MaskedOpInterface"> {
  let cppNamespace = "::nestor::elastic";
  let description = [{
    An op that takes `!elastic.mask` operands. It states, for each mask operand, which axis of
    which size (and group count) the mask applies to, as derived from the op's other operands.
    The dialect-wide `ElasticMaskConsistency` trait checks the mask types against these; slicing
    and prefix-dense lowering read the same declarations to learn which dimension each mask cuts.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{Appends one `MaskUse` per present mask operand. Returns failure (after
                 emitting nothing) when the op's shapes are too malformed to tell; the op's
                 own verifier then reports the problem.}],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"getMaskUses",
      /*args=*/(ins "::llvm::SmallVectorImpl<::nestor::elastic::MaskUse> &":$uses)>
  ];
}

def Elastic_GradientOpInterface : OpInterface<"GradientOpInterface"> {
  let cppNamespace = "::nestor::elastic";
  let description = [{
    An op that knows its vector-Jacobian product. `elastic-autodiff` asks each op on the path
    from the parameters to the loss to build the ops computing the cotangents of its operands
    from the cotangents of its results; it never switches over op kinds. The cotangent of a
    tensor has the tensor's type; the cotangent of a `!elastic.mask<axis, n>` is a
    `tensor<(n+2)xT>` holding `[d m_0 .. d m_{n-1}, d phi, d sigma]` (see `MaskType`).
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{Builds the VJP at `b`'s insertion point. `resultGrads` has one entry per
                 result, null where no cotangent flows (at least one is set). Appends one
                 entry per operand to `operandGrads`: the cotangent, or null for operands
                 that are not differentiable (integers, run-time flags).}],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"buildVJP",
      /*args=*/(ins "::mlir::OpBuilder &":$b, "::mlir::ValueRange":$resultGrads,
                    "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>
  ];
}

def Elastic_SliceOpInterface : OpInterface<"SliceOpInterface"> {
  let cppNamespace = "::nestor::elastic";
  let description = [{
    An op that knows its dense form at one budget (`elastic-slice`, METHOD.md §8). The pass
    asks the op producing each value the dense model needs, starting from the logits, through
    a `SliceState`; it never switches over op kinds. A model op (embed, norm, mixer, residual,
    head) builds its dense counterpart: masks folded to their active prefix (per group for
    grouped axes), every weight it reads cut to the indices that prefix keeps (recorded as the
    slice map), a dropped layer's residual passed through. A routing op (one_hot, router,
    gumbel_softmax, prefix_mask, layer_keep) is evaluated instead: its value, or a mask's active
    size, becomes known to the state, and the op itself has no dense counterpart.
  }];
  let methods = [
    InterfaceMethod<
      /*desc=*/[{Slices or evaluates this op through `state`: maps each result to its dense
                 value (`state.map`), or records its value (`state.setValue`) or a mask's active
                 size (`state.setActiveSize`). Emits an error and fails when it cannot.}],
      /*retTy=*/"::llvm::LogicalResult",
      /*methodName=*/"sliceAtBudget",
      /*args=*/(ins "::nestor::elastic::SliceState &":$state)>
  ];
}

#endif // NESTOR_ELASTIC_INTERFACES_TD
