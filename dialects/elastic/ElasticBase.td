//===- ElasticBase.td - The elastic dialect, enums and base op -*- tablegen -*-===//
//
// The `elastic` dialect represents an elastic ("many-in-one") hybrid Mamba2/Attention model:
// masked width and depth ops, the routers that choose the masks, and the training losses of the
// Nemotron Elastic method (METHOD.md). Values are tensors; the batch and sequence dimensions are
// dynamic.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_ELASTIC_BASE_TD
#define NESTOR_ELASTIC_BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def Elastic_Dialect : Dialect {
  let name = "elastic";
  let summary = "Elastic hybrid Mamba2/Attention models: masked ops, routers and losses";
  let description = [{
    Every width choice of an elastic model is a prefix mask over one axis (hidden channels, FFN
    neurons, attention query heads per KV group, Mamba heads per group, Mamba head channels);
    every depth choice is a per-layer keep gate. Masks are values of type `!elastic.mask`, built
    from router probabilities by `elastic.prefix_mask`; the ops that consume them check, through
    the dialect-wide `ElasticMaskConsistency` trait, that each mask's axis and size match the
    dimension it masks.
  }];
  let cppNamespace = "::nestor::elastic";
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
  // `elastic.param` on a function argument names a weight: a statically shaped tensor.
  let hasRegionArgAttrVerify = 1;
  let extraClassDeclaration = [{
    void registerTypes();
  }];
}

def Elastic_AxisKind : I32EnumAttr<"AxisKind", "an elastic width axis", [
    I32EnumAttrCase<"Hidden", 0, "hidden">,
    I32EnumAttrCase<"FFN", 1, "ffn">,
    I32EnumAttrCase<"AttnHeads", 2, "attn_heads">,
    I32EnumAttrCase<"MambaHeads", 3, "mamba_heads">,
    I32EnumAttrCase<"MambaHeadDim", 4, "mamba_head_dim">
  ]> {
  let cppNamespace = "::nestor::elastic";
  let genSpecializedAttr = 0;
}

def Elastic_MaskMode : I32EnumAttr<"MaskMode", "how router probabilities become a mask", [
    I32EnumAttrCase<"Soft", 0, "soft">,
    I32EnumAttrCase<"Hard", 1, "hard">
  ]> {
  let cppNamespace = "::nestor::elastic";
  let genSpecializedAttr = 0;
}

def Elastic_MaskModeAttr : EnumAttr<Elastic_Dialect, Elastic_MaskMode, "mask_mode"> {
  let assemblyFormat = "`<` $value `>`";
}

// The dialect-wide invariant: every operand of mask type is declared by the op's
// MaskedOpInterface and matches the axis, size and group count the op expects.
def Elastic_MaskConsistency : NativeOpTrait<"ElasticMaskConsistency"> {
  let cppNamespace = "::nestor::elastic";
}

class Elastic_Op<string mnemonic, list<Trait> traits = []>
    : Op<Elastic_Dialect, mnemonic, !listconcat(traits, [Elastic_MaskConsistency])>;

#endif // NESTOR_ELASTIC_BASE_TD
