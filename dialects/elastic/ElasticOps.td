//===- ElasticOps.td - Ops of the elastic dialect ---------------*- tablegen -*-===//
//
// The ops are coarse on purpose: each carries one piece of the method's semantics (METHOD.md
// section numbers below) so that autodiff, slicing and kernel emission can each be defined once
// per op. Activations are `tensor<BxLxDxT>` with dynamic B (batch) and L (sequence); weights are
// static; T is f32 or f64 (f64 for numerical checks).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_ELASTIC_OPS_TD
#define NESTOR_ELASTIC_OPS_TD

include "dialects/elastic/ElasticBase.td"
include "dialects/elastic/ElasticTypes.td"
include "dialects/elastic/ElasticInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/CommonAttrConstraints.td"

def Elastic_FloatTensor : RankedTensorOf<[F32, F64]>;
def Elastic_Activation : 3DTensorOf<[F32, F64]>;
// Weights (and the per-layer vectors beside them) have the sizes of the spec: static shapes;
// only activations have dynamic (batch, sequence) extents.
def Elastic_Matrix : RankedTensorOf<[F32, F64], [HasAnyRankOfPred<[2]>, HasStaticShapePred],
                                    "statically shaped 2D tensor">;
def Elastic_Vector : RankedTensorOf<[F32, F64], [HasAnyRankOfPred<[1]>, HasStaticShapePred],
                                    "statically shaped 1D tensor">;
def Elastic_Scalar : 0DTensorOf<[F32, F64]>;
def Elastic_Tokens : 2DTensorOf<[I32]>;
def Elastic_OptionalMask : Optional<Elastic_MaskType>;

class Elastic_MaskedOp<string mnemonic, list<Trait> traits = []>
    : Elastic_Op<mnemonic, !listconcat(traits, [Pure,
        DeclareOpInterfaceMethods<Elastic_MaskedOpInterface>])>;

//===----------------------------------------------------------------------===//
// Model ops (METHOD.md §1, §5)
//===----------------------------------------------------------------------===//

def Elastic_EmbedOp : Elastic_MaskedOp<"embed", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "token embedding lookup, optionally masked over hidden channels";
  let description = [{
    `h0[b, l, :] = table[tokens[b, l], :] * m` where `m` is the hidden mask (METHOD.md §5,
    Nestor: the embedding output is masked so the whole residual stream is). Tokens outside
    `[0, V)` are a run-time error.

    ```mlir
    %h = elastic.embed %tokens, %table hidden(%m : !elastic.mask<hidden, 256>)
        : (tensor<?x?xi32>, tensor<256x256xf32>) -> tensor<?x?x256xf32>
    ```
  }];
  let arguments = (ins Elastic_Tokens:$tokens, Elastic_Matrix:$table,
                       Elastic_OptionalMask:$hidden_mask);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $tokens `,` $table (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($tokens) `,` type($table) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_RMSNormOp : Elastic_MaskedOp<"rmsnorm", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "RMSNorm with the masked-norm correction";
  let description = [{
    Unmasked: `y = x / sqrt(mean_c x_c^2 + eps) * w`. With a hidden mask `m` (kept fraction
    `phi`, scale `sigma`, METHOD.md §5) and an input already zero outside the kept prefix:
    `y_c = m_c * sigma * w_c * x_c / sqrt(sum_c x_c^2 / d + eps * phi)`, which equals the RMSNorm
    of the sliced model on the kept prefix exactly.

    ```mlir
    %y = elastic.rmsnorm %x, %w hidden(%m : !elastic.mask<hidden, 256>) {epsilon = 1.0e-05 : f64}
        : (tensor<?x?x256xf32>, tensor<256xf32>) -> tensor<?x?x256xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Vector:$weight,
                       Elastic_OptionalMask:$hidden_mask,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $input `,` $weight (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($weight) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_Mamba2Op : Elastic_MaskedOp<"mamba2", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "Mamba2 mixer (in_proj, causal conv, SSD scan, gated group norm, out_proj)";
  let description = [{
    The Mamba2 mixer of METHOD.md §1 with H = `num_heads` heads of P = `head_dim` channels,
    G = `n_groups` groups, N = `state_size` and a depthwise causal convolution of width K (the
    last dimension of `conv_weight`):
    - `in_proj: d -> [z (H*P), x (H*P), B (G*N), C (G*N), dt (H)]`
    - causal conv (zero left padding, with bias) over `[x, B, C]`, then SiLU
    - `A = -exp(A_log)`, `dt' = softplus(dt + dt_bias)`, head h reads group `h / (H/G)`;
      `S_t = exp(dt' A) S_{t-1} + dt' x_t (x) B_t`, `y_t = S_t C_t + D x_t`
    - `o = RMSNorm_g(y * silu(z)) * norm_weight` over G groups of H*P/G channels
    - `out_proj: H*P -> d`.
    Masks (METHOD.md §5): `heads` (per-group prefix) and `channels` (one prefix shared by all
    heads) mask z, x and dt of the dropped heads/channels and the conv-x channels (B, C stay);
    the group norm uses the kept fraction `f` and scale `sqrt(f)`; `hidden` masks the output.

    ```mlir
    %y = elastic.mamba2 %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w, %out_proj
        heads(%mh : !elastic.mask<mamba_heads, 8, groups = 2>)
        channels(%mc : !elastic.mask<mamba_head_dim, 16>)
        hidden(%md : !elastic.mask<hidden, 64>)
        {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64}
        : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>,
           tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>)
        -> tensor<?x?x64xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$in_proj,
                       Elastic_Matrix:$conv_weight, Elastic_Vector:$conv_bias,
                       Elastic_Vector:$dt_bias, Elastic_Vector:$a_log, Elastic_Vector:$d_skip,
                       Elastic_Vector:$norm_weight, Elastic_Matrix:$out_proj,
                       Elastic_OptionalMask:$heads_mask, Elastic_OptionalMask:$channels_mask,
                       Elastic_OptionalMask:$hidden_mask,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                       ConfinedAttr<I64Attr, [IntPositive]>:$n_groups,
                       ConfinedAttr<I64Attr, [IntPositive]>:$state_size,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $input `,` $in_proj `,` $conv_weight `,` $conv_bias `,` $dt_bias `,` $a_log `,` $d_skip `,`
    $norm_weight `,` $out_proj
    (`heads` `(` $heads_mask^ `:` qualified(type($heads_mask)) `)`)?
    (`channels` `(` $channels_mask^ `:` qualified(type($channels_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($in_proj) `,` type($conv_weight) `,`
    type($conv_bias) `,` type($dt_bias) `,` type($a_log) `,` type($d_skip) `,`
    type($norm_weight) `,` type($out_proj) `)` `->` type($result)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Channels of the causal convolution: x, B and C.
    int64_t getConvChannels() {
      return getNumHeads() * getHeadDim() + 2 * getNGroups() * getStateSize();
    }
    /// Rows of in_proj: z, x, B, C, dt.
    int64_t getInProjRows() {
      return 2 * getNumHeads() * getHeadDim() + 2 * getNGroups() * getStateSize() +
             getNumHeads();
    }
  }];
}

def Elastic_AttentionOp : Elastic_MaskedOp<"attention", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, AttrSizedOperandSegments,
    DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "causal grouped-query attention without positional encoding";
  let description = [{
    `softmax(Q K^T / sqrt(head_dim))` under a causal mask, no biases, no positional encoding;
    query head h uses KV head `h / (num_heads / num_kv_heads)`. The `heads` mask (per KV group
    prefix) masks the dropped query heads' outputs before `o_proj`; `hidden` masks the output.

    ```mlir
    %y = elastic.attention %x, %wq, %wk, %wv, %wo
        heads(%mh : !elastic.mask<attn_heads, 4, groups = 2>)
        {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64}
        : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>,
           tensor<64x64xf32>) -> tensor<?x?x64xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$q_proj,
                       Elastic_Matrix:$k_proj, Elastic_Matrix:$v_proj, Elastic_Matrix:$o_proj,
                       Elastic_OptionalMask:$heads_mask, Elastic_OptionalMask:$hidden_mask,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $input `,` $q_proj `,` $k_proj `,` $v_proj `,` $o_proj
    (`heads` `(` $heads_mask^ `:` qualified(type($heads_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($q_proj) `,` type($k_proj) `,` type($v_proj) `,`
    type($o_proj) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Incremental decoding (the decode-step entry point)
//===----------------------------------------------------------------------===//

// The state of a decode step (KV caches, convolution windows, SSM states) is the caller's:
// state operands must be arguments of the enclosing function, and the ops update them in
// place, like `kernel.adamw` updates the optimizer's buffers. The ops are therefore not Pure.
class Elastic_StepOp<string mnemonic, list<Trait> traits = []>
    : Elastic_Op<mnemonic, !listconcat(traits, [MemoryEffects<[MemRead, MemWrite]>,
        DeclareOpInterfaceMethods<Elastic_MaskedOpInterface>])>;

def Elastic_Mamba2StepOp : Elastic_StepOp<"mamba2_step", [AttrSizedOperandSegments]> {
  let summary = "Mamba2 mixer over the next tokens of sequences whose past is a state";
  let description = [{
    `elastic.mamba2` (same operands, masks and attributes) continued from a state instead of
    from zeros: `conv_state` `[B, K-1, H*P + 2*G*N]` holds the last K-1 unmasked conv inputs
    (x|B|C columns of in_proj) of each sequence, oldest first, and `ssm_state` `[B, H, P, N]`
    the SSM state after the tokens read so far. Both start at zero for an empty context and
    are updated in place to the state after the L tokens of `input`; for any split of a
    sequence into pieces the outputs equal those of `elastic.mamba2` over the whole sequence.
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$in_proj,
                       Elastic_Matrix:$conv_weight, Elastic_Vector:$conv_bias,
                       Elastic_Vector:$dt_bias, Elastic_Vector:$a_log, Elastic_Vector:$d_skip,
                       Elastic_Vector:$norm_weight, Elastic_Matrix:$out_proj,
                       3DTensorOf<[F32, F64]>:$conv_state, 4DTensorOf<[F32, F64]>:$ssm_state,
                       Elastic_OptionalMask:$heads_mask, Elastic_OptionalMask:$channels_mask,
                       Elastic_OptionalMask:$hidden_mask,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                       ConfinedAttr<I64Attr, [IntPositive]>:$n_groups,
                       ConfinedAttr<I64Attr, [IntPositive]>:$state_size,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $input `,` $in_proj `,` $conv_weight `,` $conv_bias `,` $dt_bias `,` $a_log `,` $d_skip `,`
    $norm_weight `,` $out_proj `state` `(` $conv_state `,` $ssm_state `)`
    (`heads` `(` $heads_mask^ `:` qualified(type($heads_mask)) `)`)?
    (`channels` `(` $channels_mask^ `:` qualified(type($channels_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($in_proj) `,` type($conv_weight) `,`
    type($conv_bias) `,` type($dt_bias) `,` type($a_log) `,` type($d_skip) `,`
    type($norm_weight) `,` type($out_proj) `,` type($conv_state) `,` type($ssm_state) `)`
    `->` type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_AttentionStepOp : Elastic_StepOp<"attention_step", [AttrSizedOperandSegments,
    AllTypesMatch<["k_cache", "v_cache"]>]> {
  let summary = "causal GQA attention of the next tokens over a KV cache";
  let description = [{
    `elastic.attention` for the L tokens of `input` at positions `position .. position+L-1` of
    sequences whose earlier keys and values are in `k_cache` and `v_cache` `[B, T,
    num_kv_heads * head_dim]` (T: the longest context). The new keys and values are written
    into the caches in place at those positions, then each token attends to the cache up to
    and including itself. `position + L > T` is a run-time error.
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$q_proj,
                       Elastic_Matrix:$k_proj, Elastic_Matrix:$v_proj, Elastic_Matrix:$o_proj,
                       3DTensorOf<[F32, F64]>:$k_cache, 3DTensorOf<[F32, F64]>:$v_cache,
                       0DTensorOf<[I64]>:$position,
                       Elastic_OptionalMask:$heads_mask, Elastic_OptionalMask:$hidden_mask,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $input `,` $q_proj `,` $k_proj `,` $v_proj `,` $o_proj `cache` `(` $k_cache `,` $v_cache `)`
    `at` $position
    (`heads` `(` $heads_mask^ `:` qualified(type($heads_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($q_proj) `,` type($k_proj) `,` type($v_proj) `,`
    type($o_proj) `,` type($k_cache) `,` type($position) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_MLPOp : Elastic_MaskedOp<"mlp", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, AttrSizedOperandSegments, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "squared-ReLU MLP: down(relu(up(x))^2)";
  let description = [{
    `y = down(relu(up(x))^2)`, not gated. The `ffn` mask masks the up-projection output
    (`relu^2(0) = 0`); `hidden` masks the output.

    ```mlir
    %y = elastic.mlp %x, %up, %down ffn(%mf : !elastic.mask<ffn, 128>)
        : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) -> tensor<?x?x64xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$up_proj,
                       Elastic_Matrix:$down_proj, Elastic_OptionalMask:$ffn_mask,
                       Elastic_OptionalMask:$hidden_mask);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $input `,` $up_proj `,` $down_proj
    (`ffn` `(` $ffn_mask^ `:` qualified(type($ffn_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($up_proj) `,` type($down_proj) `)`
    `->` type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_DepthGateOp : Elastic_Op<"depth_gate",
    [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, Pure, AllTypesMatch<["residual", "block", "result"]>, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "residual connection with an elastic depth gate";
  let description = [{
    `h' = h + gamma * block` with `gamma = keep[layer]` (METHOD.md §5, depth); without `keep`,
    a plain residual add (`gamma = 1`). A layer with `gamma = 0` is the identity.

    ```mlir
    %h1 = elastic.depth_gate %h0, %block keep(%keep : tensor<8xf32>) {layer = 3 : i64}
        : tensor<?x?x64xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$residual, Elastic_Activation:$block,
                       Optional<Elastic_Vector>:$keep,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntNonNegative]>>:$layer);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $residual `,` $block (`keep` `(` $keep^ `:` type($keep) `)`)? attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_LMHeadOp : Elastic_Op<"lm_head", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "output projection to vocabulary logits";
  let description = [{
    `logits[b, l, v] = sum_c x[b, l, c] * w[v, c]`.

    ```mlir
    %logits = elastic.lm_head %x, %w
        : (tensor<?x?x64xf32>, tensor<256x64xf32>) -> tensor<?x?x256xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$weight);
  let results = (outs Elastic_Activation:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` `(` type($input) `,` type($weight) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Router ops (METHOD.md §4, §5)
//===----------------------------------------------------------------------===//

def Elastic_OneHotOp : Elastic_Op<"one_hot", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, Pure]> {
  let summary = "one-hot encoding of the budget index";
  let description = [{
    `u[i] = (i == budget)`; the router input. A budget outside `[0, num_classes)` is a run-time
    error.

    ```mlir
    %u = elastic.one_hot %budget : tensor<i32> -> tensor<3xf32>
    ```
  }];
  let arguments = (ins 0DTensorOf<[I32]>:$index);
  let results = (outs Elastic_Vector:$result);
  let assemblyFormat = "$index attr-dict `:` type($index) `->` type($result)";
}

def Elastic_RouterOp : Elastic_Op<"router", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "router MLP: W2 LeakyReLU(W1 u + b1) + b2";
  let description = [{
    `z = W2 * LeakyReLU(W1 u + b1) + b2` (METHOD.md §4). The result is `tensor<C>` (one logit per
    choice, homogeneous) or `tensor<RxC>` (one row of choices per layer, heterogeneous); `W2` has
    `R*C` rows, row-major in (layer, choice).

    ```mlir
    %z = elastic.router %u, %w1, %b1, %w2, %b2 {negative_slope = 1.000000e-01 : f64}
        : (tensor<3xf32>, tensor<256x3xf32>, tensor<256xf32>, tensor<3x256xf32>, tensor<3xf32>)
        -> tensor<3xf32>
    ```
  }];
  let arguments = (ins Elastic_Vector:$input, Elastic_Matrix:$w1, Elastic_Vector:$b1,
                       Elastic_Matrix:$w2, Elastic_Vector:$b2,
                       DefaultValuedAttr<F64Attr, "0.1">:$negative_slope);
  let results = (outs Elastic_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $w1 `,` $b1 `,` $w2 `,` $b2 attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Elastic_GumbelNoiseOp : Elastic_Op<"gumbel_noise", [Pure]> {
  let summary = "Gumbel(0, 1) noise from a counter-based generator";
  let description = [{
    Deterministic noise: element i (row-major) of the result is `-log(-log(u))` with `u` in
    (0, 1) from a counter-based generator, so the CPU and CUDA backends and a resumed run draw
    the same noise; each router uses its own `stream`. In 64-bit unsigned arithmetic:
    `x = seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03 + i`, then the SplitMix64
    finaliser `x += 0x9E3779B97F4A7C15; x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB; x ^= x >> 31`, and `u = ((x >> 11) + 0.5) / 2^53`.

    ```mlir
    %g = elastic.gumbel_noise %seed {stream = 2 : i64} : tensor<i64> -> tensor<3xf32>
    ```
  }];
  let arguments = (ins 0DTensorOf<[I64]>:$seed,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$stream);
  let results = (outs Elastic_FloatTensor:$result);
  let assemblyFormat = "$seed attr-dict `:` type($seed) `->` type($result)";
  let hasVerifier = 1;
}

def Elastic_GumbelSoftmaxOp : Elastic_Op<"gumbel_softmax", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "Gumbel-softmax over the last dimension, optionally straight-through hard";
  let description = [{
    `pi = softmax((scale * logits + noise) / tau)` over the last dimension (METHOD.md §4). When
    `hard` is true, the forward value is `one_hot(argmax pi)` and the gradient is that of the
    soft `pi` (straight-through).

    ```mlir
    %pi = elastic.gumbel_softmax %z, %g, %tau, %scale, %hard
        : (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>, tensor<i1>) -> tensor<3xf32>
    ```
  }];
  let arguments = (ins Elastic_FloatTensor:$logits, Elastic_FloatTensor:$noise,
                       Elastic_Scalar:$tau, Elastic_Scalar:$scale, 0DTensorOf<[I1]>:$hard);
  let results = (outs Elastic_FloatTensor:$result);
  let assemblyFormat = [{
    $logits `,` $noise `,` $tau `,` $scale `,` $hard attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Elastic_PrefixMaskOp : Elastic_Op<"prefix_mask", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "prefix mask over a width axis from router probabilities";
  let description = [{
    Builds the mask of one axis from the probabilities `pi` over its `choices` (channel counts,
    largest first, the first equal to the axis size; for grouped axes totals that are multiples
    of the group count, trimmed per group). `I_i[c] = 1` if `c mod (size/g) < k_i / g`.
    Soft: `m = sum_i pi_i I_i`; hard: `m = I_argmax * max pi` (METHOD.md §5). For a
    heterogeneous axis `probs` has one row per layer and `row` picks this layer's.

    ```mlir
    %m = elastic.prefix_mask %pi {choices = array<i64: 8, 6, 4>,
                                  mode = #elastic.mask_mode<hard>}
        : tensor<3xf32> -> !elastic.mask<mamba_heads, 8, groups = 2>
    ```
  }];
  let arguments = (ins Elastic_FloatTensor:$probs, DenseI64ArrayAttr:$choices,
                       Elastic_MaskModeAttr:$mode,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntNonNegative]>>:$row);
  let results = (outs Elastic_MaskType:$result);
  let assemblyFormat = [{
    $probs attr-dict `:` type($probs) `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

def Elastic_LayerKeepOp : Elastic_Op<"layer_keep", [DeclareOpInterfaceMethods<Elastic_SliceOpInterface>, Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "per-layer keep gates from the depth router";
  let description = [{
    The depth router's `probs[k]` is the probability of dropping the k least important layers,
    `k = 0..K`. `order` lists layers least important first (a permutation of the layers), so
    layer j at position `r_j` is kept when `k <= r_j`: soft `keep_j = sum_{k <= r_j} pi_k`
    (a cumulative sum), hard `keep_j = max pi * (argmax <= r_j)`.

    ```mlir
    %keep = elastic.layer_keep %pi {order = array<i64: 3, 1, 0, 2>,
                                    mode = #elastic.mask_mode<soft>}
        : tensor<3xf32> -> tensor<4xf32>
    ```
  }];
  let arguments = (ins Elastic_Vector:$probs, DenseI64ArrayAttr:$order,
                       Elastic_MaskModeAttr:$mode);
  let results = (outs Elastic_Vector:$result);
  let assemblyFormat = "$probs attr-dict `:` type($probs) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Losses (METHOD.md §6)
//===----------------------------------------------------------------------===//

def Elastic_CrossEntropyOp : Elastic_Op<"cross_entropy", [Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "next-token cross-entropy, mean over tokens";
  let description = [{
    `mean_{b,l} (logsumexp(logits[b, l]) - logits[b, l, targets[b, l]])`. Targets equal to
    `ignore_index` are left out of the sum and of the count.

    ```mlir
    %ce = elastic.cross_entropy %logits, %targets
        : (tensor<?x?x256xf32>, tensor<?x?xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$logits, Elastic_Tokens:$targets,
                       DefaultValuedAttr<I64Attr, "-1">:$ignore_index);
  let results = (outs Elastic_Scalar:$result);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` `(` type($logits) `,` type($targets) `)` `->`
    type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_KLDistillOp : Elastic_Op<"kl_distill", [Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "forward-KL distillation loss from teacher logits, mean over tokens";
  let description = [{
    `mean_{b,l} sum_v p_T(v) (log p_T(v) - log p_S(v))` with `p = softmax(logits / T)`
    (METHOD.md §6; temperature 1 by default). The teacher is not differentiated.

    ```mlir
    %kd = elastic.kl_distill %student, %teacher {temperature = 1.0 : f64}
        : (tensor<?x?x256xf32>, tensor<?x?x256xf32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$student, Elastic_Activation:$teacher,
                       DefaultValuedAttr<F64Attr, "1.0">:$temperature);
  let results = (outs Elastic_Scalar:$result);
  let assemblyFormat = [{
    $student `,` $teacher attr-dict `:` `(` type($student) `,` type($teacher) `)` `->`
    type($result)
  }];
  let hasVerifier = 1;
}

def Elastic_ExpectedSizeOp : Elastic_Op<"expected_size", [Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "expected axis size under the router distribution";
  let description = [{
    `e = sum_i pi_i k_i` over the last dimension of `probs` (one value, or one per layer for a
    heterogeneous axis). In hard mode the expectation is taken under the one-hot argmax scaled
    by max pi, matching the mask.

    ```mlir
    %e = elastic.expected_size %pi {choices = array<i64: 256, 192, 128>,
                                    mode = #elastic.mask_mode<soft>}
        : tensor<3xf32> -> tensor<f32>
    ```
  }];
  let arguments = (ins Elastic_FloatTensor:$probs, DenseI64ArrayAttr:$choices,
                       Elastic_MaskModeAttr:$mode);
  let results = (outs Elastic_FloatTensor:$result);
  let assemblyFormat = "$probs attr-dict `:` type($probs) `->` type($result)";
  let hasVerifier = 1;
}

def Elastic_ParamCountOp : Elastic_Op<"param_count", [Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "closed-form, differentiable parameter count of the hybrid model";
  let description = [{
    The parameter count of METHOD.md §1 as a function of (possibly fractional) axis sizes and
    per-layer keep probabilities: `hidden` (scalar), `ffn` (scalar or one per MLP layer),
    `attn_heads` (scalar or one per attention layer), `mamba_heads` and `mamba_head_dim`
    (scalar or one per Mamba layer) and `keep` (one per layer). The fixed sizes are attributes.
    The same formula as `nestor params` (include/nestor/ParamCount.h).

    ```mlir
    %p = elastic.param_count hidden(%d) ffn(%f) attn_heads(%a) mamba_heads(%h)
        mamba_head_dim(%hp) keep(%keep)
        {pattern = "M-*", mamba_groups = 2 : i64, ssm_state_size = 8 : i64,
         conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64,
         vocab_size = 256 : i64, tied_embeddings = false}
        : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>)
        -> tensor<f32>
    ```
  }];
  let arguments = (ins Elastic_Scalar:$hidden, Elastic_FloatTensor:$ffn,
                       Elastic_FloatTensor:$attn_heads, Elastic_FloatTensor:$mamba_heads,
                       Elastic_FloatTensor:$mamba_head_dim, Elastic_Vector:$keep,
                       StrAttr:$pattern,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$mamba_groups,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$ssm_state_size,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$conv_kernel,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$head_dim,
                       ConfinedAttr<I64Attr, [IntPositive]>:$vocab_size,
                       BoolAttr:$tied_embeddings);
  let results = (outs Elastic_Scalar:$result);
  let assemblyFormat = [{
    `hidden` `(` $hidden `)` `ffn` `(` $ffn `)` `attn_heads` `(` $attn_heads `)`
    `mamba_heads` `(` $mamba_heads `)` `mamba_head_dim` `(` $mamba_head_dim `)`
    `keep` `(` $keep `)` attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Elastic_ResourceLossOp : Elastic_Op<"resource_loss", [Pure, DeclareOpInterfaceMethods<Elastic_GradientOpInterface>]> {
  let summary = "router resource loss with dead zone and full-budget anchor";
  let description = [{
    With `b = fractions[budget]` and `P` the expected parameter count (METHOD.md §6):
    `L = |P / (b * full_params) - 1|`, set to 0 when below `dead_zone` for `b < 1`; for `b = 1`
    add `anchor_weight * sum_axes MSE(pi, one_hot(0))` over the `anchors` (the probabilities of
    every router, whose choice 0 is the full size).

    ```mlir
    %l = elastic.resource_loss %p, %budget anchors(%pi0, %pi1)
        {fractions = array<f64: 1.0, 0.75, 0.5>, full_params = 2.0e+06 : f64}
        : (tensor<f32>, tensor<i32>, tensor<3xf32>, tensor<3xf32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins Elastic_Scalar:$params, 0DTensorOf<[I32]>:$budget,
                       Variadic<Elastic_FloatTensor>:$anchors,
                       DenseF64ArrayAttr:$fractions, F64Attr:$full_params,
                       DefaultValuedAttr<F64Attr, "0.05">:$dead_zone,
                       DefaultValuedAttr<F64Attr, "10.0">:$anchor_weight);
  let results = (outs Elastic_Scalar:$result);
  let assemblyFormat = [{
    $params `,` $budget (`anchors` `(` $anchors^ `)`)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}


//===----------------------------------------------------------------------===//
// Backward ops: the vector-Jacobian products `elastic-autodiff` builds (METHOD.md §5-§6).
// Each takes its forward op's operands and the cotangent of the forward result and returns the
// cotangents of the differentiable operands, in operand order. A mask's cotangent is a
// `tensor<(n+2)xT>`: `[d m_0 .. d m_{n-1}, d phi, d sigma]`.
//===----------------------------------------------------------------------===//

def Elastic_EmbedGradOp : Elastic_MaskedOp<"embed_grad"> {
  let summary = "VJP of elastic.embed";
  let description = [{
    `d table[tokens[t], c] += dh[t, c] * m_c`, `d m_c = sum_t dh[t, c] * table[tokens[t], c]`.

    ```mlir
    %dtable, %dm = elastic.embed_grad %tokens, %table, %dh hidden(%m : !elastic.mask<hidden, 64>)
        : (tensor<?x?xi32>, tensor<256x64xf32>, tensor<?x?x64xf32>)
        -> (tensor<256x64xf32>, tensor<66xf32>)
    ```
  }];
  let arguments = (ins Elastic_Tokens:$tokens, Elastic_Matrix:$table,
                       Elastic_Activation:$result_grad, Elastic_OptionalMask:$hidden_mask);
  let results = (outs Elastic_Matrix:$table_grad, Optional<Elastic_Vector>:$hidden_mask_grad);
  let assemblyFormat = [{
    $tokens `,` $table `,` $result_grad
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($tokens) `,` type($table) `,` type($result_grad) `)` `->`
    `(` type(results) `)`
  }];
  let hasVerifier = 1;
}

def Elastic_RMSNormGradOp : Elastic_MaskedOp<"rmsnorm_grad"> {
  let summary = "VJP of elastic.rmsnorm";
  let description = [{
    With `g_c = dy_c m_c sigma w_c` and `r = (sum x^2 / d + eps phi)^(-1/2)`:
    `dx_c = g_c r - x_c r^3 / d * sum_k g_k x_k`, `dw_c = sum dy_c m_c sigma x_c r`,
    `dm_c = sum dy_c sigma w_c x_c r`, `d phi = -eps / 2 * sum r^3 g.x`,
    `d sigma = sum dy.(m w x r)`.

    ```mlir
    %dx, %dw = elastic.rmsnorm_grad %x, %w, %dy
        : (tensor<?x?x64xf32>, tensor<64xf32>, tensor<?x?x64xf32>)
        -> (tensor<?x?x64xf32>, tensor<64xf32>)
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Vector:$weight,
                       Elastic_Activation:$result_grad, Elastic_OptionalMask:$hidden_mask,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs Elastic_Activation:$input_grad, Elastic_Vector:$weight_grad,
                      Optional<Elastic_Vector>:$hidden_mask_grad);
  let assemblyFormat = [{
    $input `,` $weight `,` $result_grad
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($weight) `,` type($result_grad) `)` `->`
    `(` type(results) `)`
  }];
  let hasVerifier = 1;
}

def Elastic_MLPGradOp : Elastic_MaskedOp<"mlp_grad",
    [AttrSizedOperandSegments, AttrSizedResultSegments]> {
  let summary = "VJP of elastic.mlp";
  let description = [{
    With `u = (x up^T) * m_f`, `a = relu(u)^2`, `y = (a down^T) * m_h`: `dz = dy * m_h`,
    `d m_h = sum dy * (a down^T)`, `d down = dz^T a`, `du = (dz down) * 2 relu(u)`,
    `d m_f = sum du * (x up^T)`, `d up = (du * m_f)^T x`, `dx = (du * m_f) up`.

    ```mlir
    %dx, %dup, %ddown, %dmf = elastic.mlp_grad %x, %up, %down, %dy
        ffn(%mf : !elastic.mask<ffn, 128>)
        : (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>, tensor<?x?x64xf32>)
        -> (tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<64x128xf32>) ffn(tensor<130xf32>)
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$up_proj,
                       Elastic_Matrix:$down_proj, Elastic_Activation:$result_grad,
                       Elastic_OptionalMask:$ffn_mask, Elastic_OptionalMask:$hidden_mask);
  let results = (outs Elastic_Activation:$input_grad, Elastic_Matrix:$up_proj_grad,
                      Elastic_Matrix:$down_proj_grad, Optional<Elastic_Vector>:$ffn_mask_grad,
                      Optional<Elastic_Vector>:$hidden_mask_grad);
  let assemblyFormat = [{
    $input `,` $up_proj `,` $down_proj `,` $result_grad
    (`ffn` `(` $ffn_mask^ `:` qualified(type($ffn_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($up_proj) `,` type($down_proj) `,`
    type($result_grad) `)` `->` `(` type($input_grad) `,` type($up_proj_grad) `,`
    type($down_proj_grad) `)` (`ffn` `(` type($ffn_mask_grad)^ `)`)?
    (`hidden` `(` type($hidden_mask_grad)^ `)`)?
  }];
  let hasVerifier = 1;
}

def Elastic_LMHeadGradOp : Elastic_Op<"lm_head_grad", [Pure]> {
  let summary = "VJP of elastic.lm_head";
  let description = [{
    `dx = dlogits w`, `dw = dlogits^T x` (summed over batch and sequence).

    ```mlir
    %dx, %dw = elastic.lm_head_grad %x, %w, %dl
        : (tensor<?x?x64xf32>, tensor<256x64xf32>, tensor<?x?x256xf32>)
        -> (tensor<?x?x64xf32>, tensor<256x64xf32>)
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$weight,
                       Elastic_Activation:$result_grad);
  let results = (outs Elastic_Activation:$input_grad, Elastic_Matrix:$weight_grad);
  let assemblyFormat = [{
    $input `,` $weight `,` $result_grad attr-dict `:` `(` type($input) `,` type($weight) `,`
    type($result_grad) `)` `->` `(` type(results) `)`
  }];
  let hasVerifier = 1;
}

def Elastic_DepthGateGradOp : Elastic_Op<"depth_gate_grad",
    [Pure, AllTypesMatch<["block", "result_grad", "block_grad"]>]> {
  let summary = "VJP of elastic.depth_gate with respect to the block and the keep gates";
  let description = [{
    `d block = gamma * dh'` and `d keep[layer] = sum dh' * block` (zero elsewhere); the
    residual's cotangent is `dh'` itself and needs no op.

    ```mlir
    %db, %dkeep = elastic.depth_gate_grad %block, %dh keep(%keep : tensor<8xf32>)
        {layer = 3 : i64} : tensor<?x?x64xf32>, tensor<8xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$block, Elastic_Activation:$result_grad,
                       Optional<Elastic_Vector>:$keep,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntNonNegative]>>:$layer);
  let results = (outs Elastic_Activation:$block_grad, Optional<Elastic_Vector>:$keep_grad);
  let assemblyFormat = [{
    $block `,` $result_grad (`keep` `(` $keep^ `:` type($keep) `)`)? attr-dict `:`
    type($block) (`,` type($keep_grad)^)?
  }];
  let hasVerifier = 1;
}

def Elastic_CrossEntropyGradOp : Elastic_Op<"cross_entropy_grad", [Pure]> {
  let summary = "VJP of elastic.cross_entropy";
  let description = [{
    `dlogits[t, v] = dL / N * (softmax(logits[t])_v - (v == targets[t]))` over the N counted
    tokens; zero for ignored ones.

    ```mlir
    %dl = elastic.cross_entropy_grad %logits, %targets, %dloss
        : (tensor<?x?x256xf32>, tensor<?x?xi32>, tensor<f32>) -> tensor<?x?x256xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$logits, Elastic_Tokens:$targets,
                       Elastic_Scalar:$result_grad,
                       DefaultValuedAttr<I64Attr, "-1">:$ignore_index);
  let results = (outs Elastic_Activation:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $targets `,` $result_grad attr-dict `:` `(` type($logits) `,` type($targets)
    `,` type($result_grad) `)` `->` type($logits_grad)
  }];
  let hasVerifier = 1;
}

def Elastic_KLDistillGradOp : Elastic_Op<"kl_distill_grad", [Pure]> {
  let summary = "VJP of elastic.kl_distill with respect to the student";
  let description = [{
    `dstudent[t, v] = dL / (N T) * (p_S(v) - p_T(v))` with `p = softmax(logits / T)`.

    ```mlir
    %ds = elastic.kl_distill_grad %student, %teacher, %dloss
        : (tensor<?x?x256xf32>, tensor<?x?x256xf32>, tensor<f32>) -> tensor<?x?x256xf32>
    ```
  }];
  let arguments = (ins Elastic_Activation:$student, Elastic_Activation:$teacher,
                       Elastic_Scalar:$result_grad,
                       DefaultValuedAttr<F64Attr, "1.0">:$temperature);
  let results = (outs Elastic_Activation:$student_grad);
  let assemblyFormat = [{
    $student `,` $teacher `,` $result_grad attr-dict `:` `(` type($student) `,` type($teacher)
    `,` type($result_grad) `)` `->` type($student_grad)
  }];
  let hasVerifier = 1;
}

def Elastic_PrefixMaskGradOp : Elastic_Op<"prefix_mask_grad", [Pure]> {
  let summary = "VJP of elastic.prefix_mask";
  let description = [{
    Soft: `d pi_i = sum_c dm_c I_i[c] + d phi k_i / n + d sigma sqrt(k_i / n)`. Hard: only the
    argmax choice a receives `d pi_a = sum_c dm_c I_a[c]` (phi and sigma are constants there).
    With `row`, only that row of `probs` gets a cotangent. `mask` is the forward mask type.

    ```mlir
    %dpi = elastic.prefix_mask_grad %pi, %dm {choices = array<i64: 64, 48, 32>,
                                              mode = #elastic.mask_mode<soft>,
                                              mask = !elastic.mask<hidden, 64>}
        : (tensor<3xf32>, tensor<66xf32>) -> tensor<3xf32>
    ```
  }];
  let arguments = (ins Elastic_FloatTensor:$probs, Elastic_Vector:$mask_grad,
                       DenseI64ArrayAttr:$choices, Elastic_MaskModeAttr:$mode,
                       TypeAttrOf<Elastic_MaskType>:$mask,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntNonNegative]>>:$row);
  let results = (outs Elastic_FloatTensor:$probs_grad);
  let assemblyFormat = [{
    $probs `,` $mask_grad attr-dict `:` `(` type($probs) `,` type($mask_grad) `)` `->`
    type($probs_grad)
  }];
  let hasVerifier = 1;
}

def Elastic_RouterGradOp : Elastic_Op<"router_grad", [Pure]> {
  let summary = "VJP of elastic.router with respect to its weights";
  let description = [{
    With `a = W1 u + b1`, `h = LeakyReLU(a)` and `dz` the flattened result cotangent:
    `db2 = dz`, `dW2 = dz h^T`, `da = (W2^T dz) * (a > 0 ? 1 : slope)`, `db1 = da`,
    `dW1 = da u^T`. The input (a one-hot budget) gets no cotangent.

    ```mlir
    %dw1, %db1, %dw2, %db2 = elastic.router_grad %u, %w1, %b1, %w2, %b2, %dz
        : (tensor<3xf32>, tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>,
           tensor<2x3xf32>) -> (tensor<16x3xf32>, tensor<16xf32>, tensor<6x16xf32>, tensor<6xf32>)
    ```
  }];
  let arguments = (ins Elastic_Vector:$input, Elastic_Matrix:$w1, Elastic_Vector:$b1,
                       Elastic_Matrix:$w2, Elastic_Vector:$b2, Elastic_FloatTensor:$result_grad,
                       DefaultValuedAttr<F64Attr, "0.1">:$negative_slope);
  let results = (outs Elastic_Matrix:$w1_grad, Elastic_Vector:$b1_grad, Elastic_Matrix:$w2_grad,
                      Elastic_Vector:$b2_grad);
  let assemblyFormat = [{
    $input `,` $w1 `,` $b1 `,` $w2 `,` $b2 `,` $result_grad attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Elastic_GumbelSoftmaxGradOp : Elastic_Op<"gumbel_softmax_grad", [Pure]> {
  let summary = "VJP of elastic.gumbel_softmax with respect to the logits";
  let description = [{
    The soft Jacobian, also for straight-through hard samples:
    `d logits = scale / tau * pi * (dpi - sum(dpi * pi))` per row, `pi` the soft probabilities.

    ```mlir
    %dz = elastic.gumbel_softmax_grad %z, %g, %tau, %scale, %hard, %dpi
        : (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<f32>, tensor<i1>, tensor<3xf32>)
        -> tensor<3xf32>
    ```
  }];
  let arguments = (ins Elastic_FloatTensor:$logits, Elastic_FloatTensor:$noise,
                       Elastic_Scalar:$tau, Elastic_Scalar:$scale, 0DTensorOf<[I1]>:$hard,
                       Elastic_FloatTensor:$result_grad);
  let results = (outs Elastic_FloatTensor:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $noise `,` $tau `,` $scale `,` $hard `,` $result_grad attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Elastic_LayerKeepGradOp : Elastic_Op<"layer_keep_grad", [Pure]> {
  let summary = "VJP of elastic.layer_keep";
  let description = [{
    With `r_j` layer j's position in `order`: soft `dpi_k = sum_{j : r_j >= k} dkeep_j`;
    hard, only the argmax a: `dpi_a = sum_{j : r_j >= a} dkeep_j`.

    ```mlir
    %dpi = elastic.layer_keep_grad %pi, %dkeep {order = array<i64: 3, 1, 0, 2>,
                                                mode = #elastic.mask_mode<soft>}
        : (tensor<3xf32>, tensor<4xf32>) -> tensor<3xf32>
    ```
  }];
  let arguments = (ins Elastic_Vector:$probs, Elastic_Vector:$result_grad,
                       DenseI64ArrayAttr:$order, Elastic_MaskModeAttr:$mode);
  let results = (outs Elastic_Vector:$probs_grad);
  let assemblyFormat = [{
    $probs `,` $result_grad attr-dict `:` `(` type($probs) `,` type($result_grad) `)` `->`
    type($probs_grad)
  }];
  let hasVerifier = 1;
}

def Elastic_ExpectedSizeGradOp : Elastic_Op<"expected_size_grad", [Pure]> {
  let summary = "VJP of elastic.expected_size";
  let description = [{
    Soft: `dpi_i = de * k_i`; hard: `dpi_a = de * k_a` for the argmax a only (per row).

    ```mlir
    %dpi = elastic.expected_size_grad %pi, %de {choices = array<i64: 64, 48, 32>,
                                                mode = #elastic.mask_mode<soft>}
        : (tensor<3xf32>, tensor<f32>) -> tensor<3xf32>
    ```
  }];
  let arguments = (ins Elastic_FloatTensor:$probs, Elastic_FloatTensor:$result_grad,
                       DenseI64ArrayAttr:$choices, Elastic_MaskModeAttr:$mode);
  let results = (outs Elastic_FloatTensor:$probs_grad);
  let assemblyFormat = [{
    $probs `,` $result_grad attr-dict `:` `(` type($probs) `,` type($result_grad) `)` `->`
    type($probs_grad)
  }];
  let hasVerifier = 1;
}

def Elastic_ParamCountGradOp : Elastic_Op<"param_count_grad", [Pure]> {
  let summary = "VJP of elastic.param_count";
  let description = [{
    The gradient of the closed-form count with respect to each size operand, scaled by the
    result cotangent; computed by differentiating the one formula (nestor/ParamCount.h).
    Attributes and operands are those of `elastic.param_count` plus the cotangent.

    ```mlir
    %g:6 = elastic.param_count_grad hidden(%d) ffn(%f) attn_heads(%a) mamba_heads(%h)
        mamba_head_dim(%hp) keep(%keep) grad(%dp)
        {pattern = "M-*", mamba_groups = 2 : i64, ssm_state_size = 8 : i64,
         conv_kernel = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64,
         vocab_size = 256 : i64, tied_embeddings = false}
        : (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>,
           tensor<f32>)
        -> (tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<f32>, tensor<3xf32>)
    ```
  }];
  let arguments = (ins Elastic_Scalar:$hidden, Elastic_FloatTensor:$ffn,
                       Elastic_FloatTensor:$attn_heads, Elastic_FloatTensor:$mamba_heads,
                       Elastic_FloatTensor:$mamba_head_dim, Elastic_Vector:$keep,
                       Elastic_Scalar:$result_grad,
                       StrAttr:$pattern,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$mamba_groups,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$ssm_state_size,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$conv_kernel,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$head_dim,
                       ConfinedAttr<I64Attr, [IntPositive]>:$vocab_size,
                       BoolAttr:$tied_embeddings);
  let results = (outs Elastic_Scalar:$hidden_grad, Elastic_FloatTensor:$ffn_grad,
                      Elastic_FloatTensor:$attn_heads_grad, Elastic_FloatTensor:$mamba_heads_grad,
                      Elastic_FloatTensor:$mamba_head_dim_grad, Elastic_Vector:$keep_grad);
  let assemblyFormat = [{
    `hidden` `(` $hidden `)` `ffn` `(` $ffn `)` `attn_heads` `(` $attn_heads `)`
    `mamba_heads` `(` $mamba_heads `)` `mamba_head_dim` `(` $mamba_head_dim `)`
    `keep` `(` $keep `)` `grad` `(` $result_grad `)` attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Elastic_ResourceLossGradOp : Elastic_Op<"resource_loss_grad", [Pure]> {
  let summary = "VJP of elastic.resource_loss";
  let description = [{
    `dP = dL * sign(P / (b F) - 1) / (b F)` (zero inside the dead zone for b < 1); at b = 1
    each anchor gets `dL * anchor_weight * 2 (pi - one_hot(0)) / numel(pi)`, otherwise zero.

    ```mlir
    %dp, %da = elastic.resource_loss_grad %p, %budget, %dl anchors(%pi)
        {fractions = array<f64: 1.0, 0.5>, full_params = 2.0e+06 : f64}
        : (tensor<f32>, tensor<i32>, tensor<f32>, tensor<3xf32>) -> (tensor<f32>, tensor<3xf32>)
    ```
  }];
  let arguments = (ins Elastic_Scalar:$params, 0DTensorOf<[I32]>:$budget,
                       Elastic_Scalar:$result_grad, Variadic<Elastic_FloatTensor>:$anchors,
                       DenseF64ArrayAttr:$fractions, F64Attr:$full_params,
                       DefaultValuedAttr<F64Attr, "0.05">:$dead_zone,
                       DefaultValuedAttr<F64Attr, "10.0">:$anchor_weight);
  let results = (outs Elastic_Scalar:$params_grad, Variadic<Elastic_FloatTensor>:$anchors_grad);
  let assemblyFormat = [{
    $params `,` $budget `,` $result_grad (`anchors` `(` $anchors^ `)`)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def Elastic_AttentionGradOp : Elastic_MaskedOp<"attention_grad",
    [AttrSizedOperandSegments, AttrSizedResultSegments]> {
  let summary = "VJP of elastic.attention";
  let description = [{
    With `p` the causal attention probabilities of each query head, `a_i = sum_j p_ij v_j` and
    `o_i = m_h a_i`: `dm_h = sum_i do_i . a_i`, `dv_j += p_ij m_h do_i`,
    `ds_ij = p_ij (dp_ij - sum_k p_ik dp_ik)` with `dp_ij = m_h do_i . v_j`, `dq_i += scale
    sum_j ds_ij k_j`, `dk_j += scale ds_ij q_i` (summed over the query heads of a KV head),
    then the projections' products. A heads mask's cotangent has zero norm entries.

    ```mlir
    %g:5 = elastic.attention_grad %x, %wq, %wk, %wv, %wo, %dy
        {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 16 : i64}
        : (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>,
           tensor<64x64xf32>, tensor<?x?x64xf32>)
        -> (tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>,
            tensor<64x64xf32>)
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$q_proj,
                       Elastic_Matrix:$k_proj, Elastic_Matrix:$v_proj, Elastic_Matrix:$o_proj,
                       Elastic_Activation:$result_grad,
                       Elastic_OptionalMask:$heads_mask, Elastic_OptionalMask:$hidden_mask,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim);
  let results = (outs Elastic_Activation:$input_grad, Elastic_Matrix:$q_proj_grad,
                      Elastic_Matrix:$k_proj_grad, Elastic_Matrix:$v_proj_grad,
                      Elastic_Matrix:$o_proj_grad, Optional<Elastic_Vector>:$heads_mask_grad,
                      Optional<Elastic_Vector>:$hidden_mask_grad);
  let assemblyFormat = [{
    $input `,` $q_proj `,` $k_proj `,` $v_proj `,` $o_proj `,` $result_grad
    (`heads` `(` $heads_mask^ `:` qualified(type($heads_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($q_proj) `,` type($k_proj) `,` type($v_proj) `,`
    type($o_proj) `,` type($result_grad) `)` `->` `(` type($input_grad) `,` type($q_proj_grad)
    `,` type($k_proj_grad) `,` type($v_proj_grad) `,` type($o_proj_grad) `)`
    (`heads` `(` type($heads_mask_grad)^ `)`)? (`hidden` `(` type($hidden_mask_grad)^ `)`)?
  }];
  let hasVerifier = 1;
}

def Elastic_Mamba2GradOp : Elastic_MaskedOp<"mamba2_grad",
    [AttrSizedOperandSegments, AttrSizedResultSegments,
     AllTypesMatch<["input", "input_grad", "result_grad"]>,
     AllTypesMatch<["in_proj", "in_proj_grad"]>,
     AllTypesMatch<["conv_weight", "conv_weight_grad"]>,
     AllTypesMatch<["conv_bias", "conv_bias_grad"]>, AllTypesMatch<["dt_bias", "dt_bias_grad"]>,
     AllTypesMatch<["a_log", "a_log_grad"]>, AllTypesMatch<["d_skip", "d_skip_grad"]>,
     AllTypesMatch<["norm_weight", "norm_weight_grad"]>,
     AllTypesMatch<["out_proj", "out_proj_grad"]>]> {
  let summary = "VJP of elastic.mamba2";
  let description = [{
    The exact backward of the Mamba2 mixer (each cotangent has its operand's type): out_proj, the gated group norm (with the
    masked-norm correction), the gate `dy = dg silu(z)`, `dz = dg y silu'(z)`, the SSM recurrence
    by the sequential backward of METHOD.md §9 (`dS_t = dy_t C_t + a_{t+1} dS_{t+1}`, ...,
    `dA_log = dA A`, `d dt = dDelta sigmoid(dt + dt_bias)`), the causal convolution and SiLU,
    the masks of z, x, dt and conv-x, and in_proj. Results are in operand order; each mask's
    cotangent carries its norm entries (`phi = phi_h phi_p`, `sigma = sigma_h sigma_p`).

    ```mlir
    %g:10 = elastic.mamba2_grad %x, %in_proj, %conv_w, %conv_b, %dt_bias, %a_log, %d, %norm_w,
        %out_proj, %dy heads(%mh : !elastic.mask<mamba_heads, 8, groups = 2>)
        {num_heads = 8 : i64, head_dim = 16 : i64, n_groups = 2 : i64, state_size = 8 : i64}
        : (tensor<?x?x64xf32>, tensor<296x64xf32>, tensor<160x4xf32>, tensor<160xf32>,
           tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<128xf32>, tensor<64x128xf32>,
           tensor<?x?x64xf32>) heads(tensor<10xf32>)
    ```
  }];
  let arguments = (ins Elastic_Activation:$input, Elastic_Matrix:$in_proj,
                       Elastic_Matrix:$conv_weight, Elastic_Vector:$conv_bias,
                       Elastic_Vector:$dt_bias, Elastic_Vector:$a_log, Elastic_Vector:$d_skip,
                       Elastic_Vector:$norm_weight, Elastic_Matrix:$out_proj,
                       Elastic_Activation:$result_grad,
                       Elastic_OptionalMask:$heads_mask, Elastic_OptionalMask:$channels_mask,
                       Elastic_OptionalMask:$hidden_mask,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                       ConfinedAttr<I64Attr, [IntPositive]>:$n_groups,
                       ConfinedAttr<I64Attr, [IntPositive]>:$state_size,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$epsilon);
  let results = (outs Elastic_Activation:$input_grad, Elastic_Matrix:$in_proj_grad,
                      Elastic_Matrix:$conv_weight_grad, Elastic_Vector:$conv_bias_grad,
                      Elastic_Vector:$dt_bias_grad, Elastic_Vector:$a_log_grad,
                      Elastic_Vector:$d_skip_grad, Elastic_Vector:$norm_weight_grad,
                      Elastic_Matrix:$out_proj_grad, Optional<Elastic_Vector>:$heads_mask_grad,
                      Optional<Elastic_Vector>:$channels_mask_grad,
                      Optional<Elastic_Vector>:$hidden_mask_grad);
  let assemblyFormat = [{
    $input `,` $in_proj `,` $conv_weight `,` $conv_bias `,` $dt_bias `,` $a_log `,` $d_skip `,`
    $norm_weight `,` $out_proj `,` $result_grad
    (`heads` `(` $heads_mask^ `:` qualified(type($heads_mask)) `)`)?
    (`channels` `(` $channels_mask^ `:` qualified(type($channels_mask)) `)`)?
    (`hidden` `(` $hidden_mask^ `:` qualified(type($hidden_mask)) `)`)?
    attr-dict `:` `(` type($input) `,` type($in_proj) `,` type($conv_weight) `,`
    type($conv_bias) `,` type($dt_bias) `,` type($a_log) `,` type($d_skip) `,`
    type($norm_weight) `,` type($out_proj) `,` type($result_grad) `)`
    (`heads` `(` type($heads_mask_grad)^ `)`)?
    (`channels` `(` type($channels_mask_grad)^ `)`)?
    (`hidden` `(` type($hidden_mask_grad)^ `)`)?
  }];
  let hasVerifier = 1;
}

#endif // NESTOR_ELASTIC_OPS_TD
