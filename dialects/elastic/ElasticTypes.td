//===- ElasticTypes.td - Types of the elastic dialect -----------*- tablegen -*-===//
#ifndef NESTOR_ELASTIC_TYPES_TD
#define NESTOR_ELASTIC_TYPES_TD

include "dialects/elastic/ElasticBase.td"
include "mlir/IR/BuiltinTypeInterfaces.td"

class Elastic_Type<string name, string typeMnemonic, list<Trait> traits = []>
    : TypeDef<Elastic_Dialect, name, traits> {
  let mnemonic = typeMnemonic;
}

def Elastic_MaskType : Elastic_Type<"Mask", "mask"> {
  let summary = "a prefix mask over one elastic width axis";
  let description = [{
    A mask over `size` channels of one axis. With `groups = g` (attention heads per KV group,
    Mamba heads per group) the axis is `g` contiguous groups of `size / g` channels and the
    prefix is taken within each group. At run time a mask carries:
    - the per-channel multiplier `m` (soft mode: `sum_i pi_i I_i`; hard mode:
      `I_argmax * max pi`), where `I_i` keeps the first `k_i / g` channels of every group;
    - the active extent (channels per group that are non-zero; the full size in soft mode), the
      run-time bound of prefix-dense kernels;
    - the norm correction: the kept fraction `phi = sum_i pi_i k_i / size` and scale
      `sigma = sum_i pi_i sqrt(k_i / size)` (hard mode: the argmax choice's, times 1).

    Example:

    ```mlir
    !elastic.mask<hidden, 256>
    !elastic.mask<mamba_heads, 8, groups = 2>
    ```
  }];
  let parameters = (ins
    EnumParameter<Elastic_AxisKind>:$axis,
    "int64_t":$size,
    DefaultValuedParameter<"int64_t", "1">:$groups);
  let assemblyFormat = "`<` $axis `,` $size (`,` `groups` `=` $groups^)? `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Channels per group.
    int64_t getGroupSize() const { return getSize() / getGroups(); }
  }];
}

#endif // NESTOR_ELASTIC_TYPES_TD
