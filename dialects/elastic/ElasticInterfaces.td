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

#endif // NESTOR_ELASTIC_INTERFACES_TD
