//===- KernelOps.td - Ops of the kernel dialect -------------------*- tablegen -*-===//
//
// One op per kernel. The semantics of each op are those of the CPU function of the same name in
// lib/codegen/cpu/Kernels.h (its comment is the formula); the op documents the operands. An
// activation `tensor<BxLxC>` is viewed as rows = B*L of C channels.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_KERNEL_OPS_TD
#define NESTOR_KERNEL_OPS_TD

include "dialects/kernel/KernelBase.td"
include "mlir/Interfaces/SideEffectInterfaces.td"


//===----------------------------------------------------------------------===//
// GEMM
//===----------------------------------------------------------------------===//

def Kernel_GemmOp : Kernel_Op<"gemm", [Pure, AttrSizedOperandSegments]> {
  let summary = "matrix product with fused accumulate and mask epilogues";
  let description = [{
    `result = op(A) op(B) [+ acc] [* mask]`. Each operand of rank r is viewed as a matrix
    [product of its first r-1 dims, last dim]; `transpose_a` / `transpose_b` transpose that view.
    The result (any rank with the same matrix view) is `[M, N]`. `acc` is added (the GEMM runs
    with beta = 1 into acc's buffer when the memory plan lets it), and the `mask` epilogue
    multiplies column c by `mask[c / mask_block]` (kernel-fuse forms both).

    Prefix-dense extents: `m_extent`, `n_extent`, `k_extent` are hard prefix masks over the M,
    N and K dimensions (entries in `*_groups` equal groups, each entry covering dim / entries
    consecutive rows or columns). Only the active runs are computed: the product is restricted
    to active K, and result entries outside active M x N are 0 (acc's value with `acc`).

    Selections: `n_select` / `k_select` are 0/1 vectors over N / K (from hard masks, e.g.
    kernel.mamba_proj_select) for an axis whose active entries are no prefix: only the runs of
    nonzero entries are computed, with the same rule for the rest as an extent. An axis has
    an extent or a selection, not both.

    ```mlir
    %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x64xf32>, tensor<128x64xf32>) -> tensor<2x5x128xf32>
    ```
  }];
  let arguments = (ins Kernel_FloatTensor:$a, Kernel_FloatTensor:$b,
                       Optional<Kernel_FloatTensor>:$acc, Kernel_OptionalMask:$mask,
                       Kernel_OptionalMask:$m_extent, Kernel_OptionalMask:$n_extent,
                       Kernel_OptionalMask:$k_extent,
                       Optional<Kernel_Vector>:$n_select, Optional<Kernel_Vector>:$k_select,
                       UnitAttr:$transpose_a, UnitAttr:$transpose_b,
                       DefaultValuedAttr<I64Attr, "1">:$mask_block,
                       DefaultValuedAttr<I64Attr, "1">:$m_groups,
                       DefaultValuedAttr<I64Attr, "1">:$n_groups,
                       DefaultValuedAttr<I64Attr, "1">:$k_groups);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $a `,` $b (`acc` `(` $acc^ `:` type($acc) `)`)? (`mask` `(` $mask^ `:` type($mask) `)`)?
    (`m_extent` `(` $m_extent^ `:` type($m_extent) `)`)?
    (`n_extent` `(` $n_extent^ `:` type($n_extent) `)`)?
    (`k_extent` `(` $k_extent^ `:` type($k_extent) `)`)?
    (`n_select` `(` $n_select^ `:` type($n_select) `)`)?
    (`k_select` `(` $k_select^ `:` type($k_select) `)`)?
    attr-dict `:` `(` type($a) `,` type($b) `)` `->` type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Row kernels
//===----------------------------------------------------------------------===//

def Kernel_EmbedOp : Kernel_Op<"embed", [Pure]> {
  let summary = "embedding gather with the hidden mask";
  let arguments = (ins Kernel_Tokens:$tokens, Kernel_FloatTensor:$table,
                       Kernel_OptionalMask:$mask, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $tokens `,` $table (`mask` `(` $mask^ `:` type($mask) `)`)? attr-dict `:`
    `(` type($tokens) `,` type($table) `)` `->` type($result)
  }];
}

def Kernel_EmbedGradOp : Kernel_Op<"embed_grad", [Pure]> {
  let summary = "embedding table and hidden-mask cotangents";
  let arguments = (ins Kernel_Tokens:$tokens, Kernel_FloatTensor:$table,
                       Kernel_FloatTensor:$result_grad, Kernel_OptionalMask:$mask,
                       UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$table_grad, Optional<Kernel_Vector>:$mask_grad);
  let assemblyFormat = [{
    $tokens `,` $table `,` $result_grad (`mask` `(` $mask^ `:` type($mask) `)`)? attr-dict `:`
    `(` type($tokens) `,` type($table) `,` type($result_grad) `)` `->` type(results)
  }];
}

def Kernel_RMSNormOp : Kernel_Op<"rmsnorm", [Pure]> {
  let summary = "masked RMSNorm (norm + mask + scale)";
  let arguments = (ins Kernel_FloatTensor:$input, Kernel_Vector:$weight,
                       Kernel_OptionalMask:$mask, F64Attr:$epsilon, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`mask` `(` $mask^ `:` type($mask) `)`)? attr-dict `:`
    `(` type($input) `,` type($weight) `)` `->` type($result)
  }];
}

def Kernel_RMSNormGradOp : Kernel_Op<"rmsnorm_grad", [Pure]> {
  let summary = "masked RMSNorm backward";
  let arguments = (ins Kernel_FloatTensor:$input, Kernel_Vector:$weight,
                       Kernel_FloatTensor:$result_grad, Kernel_OptionalMask:$mask,
                       F64Attr:$epsilon, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$input_grad, Kernel_Vector:$weight_grad,
                      Optional<Kernel_Vector>:$mask_grad);
  let assemblyFormat = [{
    $input `,` $weight `,` $result_grad (`mask` `(` $mask^ `:` type($mask) `)`)? attr-dict `:`
    `(` type($input) `,` type($weight) `,` type($result_grad) `)` `->` type(results)
  }];
}

def Kernel_MaskOp : Kernel_Op<"mask", [Pure, AllTypesMatch<["input", "result"]>]> {
  let summary = "channel mask: x[r, c] * mask[c / block]";
  let arguments = (ins Kernel_FloatTensor:$input, Kernel_Vector:$mask,
                       DefaultValuedAttr<I64Attr, "1">:$block,
                       DefaultValuedAttr<I64Attr, "1">:$groups, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = "$input `,` $mask attr-dict `:` type($input) `,` type($mask)";
}

def Kernel_MaskGradOp : Kernel_Op<"mask_grad", [Pure,
    AllTypesMatch<["input", "input_grad", "result_grad"]>, AllTypesMatch<["mask", "mask_grad"]>]> {
  let summary = "channel mask backward: dx and the mask cotangent";
  let arguments = (ins Kernel_FloatTensor:$input, Kernel_Vector:$mask,
                       Kernel_FloatTensor:$result_grad,
                       DefaultValuedAttr<I64Attr, "1">:$block,
                       DefaultValuedAttr<I64Attr, "1">:$groups, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$input_grad, Kernel_Vector:$mask_grad);
  let assemblyFormat = [{
    $input `,` $mask `,` $result_grad attr-dict `:` type($input) `,` type($mask)
  }];
}

def Kernel_Relu2Op : Kernel_Op<"relu2", [Pure]> {
  let summary = "squared ReLU of the FFN-masked up projection";
  let arguments = (ins Kernel_FloatTensor:$input, Kernel_OptionalMask:$mask,
                       UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`mask` `(` $mask^ `:` type($mask) `)`)? attr-dict `:` type($input) `->` type($result)
  }];
}

def Kernel_Relu2GradOp : Kernel_Op<"relu2_grad", [Pure,
    AllTypesMatch<["input", "result_grad", "input_grad"]>]> {
  let summary = "squared ReLU backward with the FFN-mask cotangent";
  let arguments = (ins Kernel_FloatTensor:$input, Kernel_FloatTensor:$result_grad,
                       Kernel_OptionalMask:$mask, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$input_grad, Optional<Kernel_Vector>:$mask_grad);
  let assemblyFormat = [{
    $input `,` $result_grad (`mask` `(` $mask^ `:` type($mask) `)`)? attr-dict `:`
    type($input) (`->` type($mask_grad)^)?
  }];
}

def Kernel_DepthGateOp : Kernel_Op<"depth_gate", [Pure,
    AllTypesMatch<["residual", "block", "result"]>]> {
  let summary = "residual add with the depth gate keep[layer]";
  let arguments = (ins Kernel_FloatTensor:$residual, Kernel_FloatTensor:$block,
                       Optional<Kernel_Vector>:$keep, OptionalAttr<I64Attr>:$layer);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $residual `,` $block (`keep` `(` $keep^ `:` type($keep) `)`)? attr-dict `:` type($result)
  }];
}

def Kernel_DepthGateGradOp : Kernel_Op<"depth_gate_grad", [Pure,
    AllTypesMatch<["block", "result_grad", "block_grad"]>]> {
  let summary = "depth gate backward: the block's cotangent and keep's";
  let arguments = (ins Kernel_FloatTensor:$block, Kernel_FloatTensor:$result_grad,
                       Optional<Kernel_Vector>:$keep, OptionalAttr<I64Attr>:$layer);
  let results = (outs Kernel_FloatTensor:$block_grad, Optional<Kernel_Vector>:$keep_grad);
  let assemblyFormat = [{
    $block `,` $result_grad (`keep` `(` $keep^ `:` type($keep) `)`)? attr-dict `:`
    type($block) (`->` type($keep_grad)^)?
  }];
}

def Kernel_CrossEntropyOp : Kernel_Op<"cross_entropy", [Pure]> {
  let summary = "softmax cross-entropy, mean over non-ignored tokens";
  let arguments = (ins Kernel_FloatTensor:$logits, Kernel_Tokens:$targets, I64Attr:$ignore_index);
  let results = (outs Kernel_Scalar:$result);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` type($logits) `,` type($targets) `->` type($result)
  }];
}

def Kernel_CrossEntropyGradOp : Kernel_Op<"cross_entropy_grad", [Pure,
    AllTypesMatch<["logits", "logits_grad"]>]> {
  let summary = "softmax cross-entropy backward";
  let arguments = (ins Kernel_FloatTensor:$logits, Kernel_Tokens:$targets,
                       Kernel_Scalar:$result_grad, I64Attr:$ignore_index);
  let results = (outs Kernel_FloatTensor:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $targets `,` $result_grad attr-dict `:` type($logits) `,` type($targets) `,`
    type($result_grad)
  }];
}

def Kernel_KLOp : Kernel_Op<"kl", [Pure, AllTypesMatch<["student", "teacher"]>]> {
  let summary = "forward KL from teacher to student, mean over tokens";
  let arguments = (ins Kernel_FloatTensor:$student, Kernel_FloatTensor:$teacher,
                       F64Attr:$temperature);
  let results = (outs Kernel_Scalar:$result);
  let assemblyFormat = "$student `,` $teacher attr-dict `:` type($student) `->` type($result)";
}

def Kernel_KLGradOp : Kernel_Op<"kl_grad", [Pure,
    AllTypesMatch<["student", "teacher", "student_grad"]>]> {
  let summary = "forward KL backward (student only: the teacher is frozen)";
  let arguments = (ins Kernel_FloatTensor:$student, Kernel_FloatTensor:$teacher,
                       Kernel_Scalar:$result_grad, F64Attr:$temperature);
  let results = (outs Kernel_FloatTensor:$student_grad);
  let assemblyFormat = [{
    $student `,` $teacher `,` $result_grad attr-dict `:` type($student) `,` type($result_grad)
  }];
}

def Kernel_AddOp : Kernel_Op<"add", [Pure, SameOperandsAndResultType]> {
  let summary = "elementwise sum of two or more tensors (one pass)";
  let arguments = (ins Variadic<Kernel_FloatTensor>:$inputs);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = "$inputs attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Kernel_MulOp : Kernel_Op<"mul", [Pure, SameOperandsAndResultType]> {
  let summary = "elementwise product";
  let arguments = (ins Kernel_FloatTensor:$lhs, Kernel_FloatTensor:$rhs);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` type($result)";
}

//===----------------------------------------------------------------------===//
// Mamba2 mixer
//===----------------------------------------------------------------------===//

class Kernel_MambaOp<string mnemonic, list<Trait> traits = []>
    : Kernel_Op<mnemonic, !listconcat(traits, [Pure])> {
  dag mambaAttrs = (ins ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                        ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                        ConfinedAttr<I64Attr, [IntPositive]>:$n_groups,
                        ConfinedAttr<I64Attr, [IntPositive]>:$state_size,
                        UnitAttr:$prefix_dense);
}

def Kernel_MambaMaskOp : Kernel_MambaOp<"mamba_mask", [AttrSizedOperandSegments]> {
  let summary = "per-channel multiplier of z and x: heads.m[h] * channels.m[p]";
  let arguments = !con((ins Kernel_OptionalMask:$heads, Kernel_OptionalMask:$channels),
                       mambaAttrs);
  let results = (outs Kernel_Vector:$result);
  let assemblyFormat = [{
    (`heads` `(` $heads^ `:` type($heads) `)`)? (`channels` `(` $channels^ `:` type($channels) `)`)?
    attr-dict `:` type($result)
  }];
}

def Kernel_MambaProjSelectOp : Kernel_MambaOp<"mamba_proj_select", [AttrSizedOperandSegments]> {
  let summary = "which in_proj rows a budget reads: [mzx | mzx | 1 (2GN) | heads.m]";
  let description = [{
    The 0/1 selection of in_proj's 2HP + 2GN + H output rows (z, x, B, C, dt) that hard head
    and channel masks keep, the `n_select` of the in_proj GEMM of a decode step: z and x rows
    are mzx (kernel.mamba_mask), B and C are always read, dt row h is heads.m[h].
  }];
  let arguments = !con((ins Kernel_OptionalMask:$heads, Kernel_OptionalMask:$channels),
                       mambaAttrs);
  let results = (outs Kernel_Vector:$result);
  let assemblyFormat = [{
    (`heads` `(` $heads^ `:` type($heads) `)`)? (`channels` `(` $channels^ `:` type($channels) `)`)?
    attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

def Kernel_MambaConvOp : Kernel_MambaOp<"mamba_conv"> {
  let summary = "masked depthwise causal conv1d + SiLU over the x|B|C columns of in_proj";
  let arguments = !con((ins Kernel_FloatTensor:$proj, Kernel_FloatTensor:$conv_weight,
                            Kernel_Vector:$conv_bias, Optional<Kernel_Vector>:$mzx), mambaAttrs);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $proj `,` $conv_weight `,` $conv_bias (`mask` `(` $mzx^ `:` type($mzx) `)`)? attr-dict `:`
    `(` type($proj) `,` type($conv_weight) `,` type($conv_bias) `)` `->` type($result)
  }];
}

def Kernel_MambaScanOp : Kernel_MambaOp<"mamba_scan",
    [AllTypesMatch<["dt_bias", "a_log", "d_skip"]>]> {
  let summary = "the chunked SSD scan with softplus(dt) and the dt head mask";
  let arguments = !con((ins Kernel_FloatTensor:$proj, Kernel_FloatTensor:$xbc,
                            Kernel_Vector:$dt_bias, Kernel_Vector:$a_log, Kernel_Vector:$d_skip,
                            Kernel_OptionalMask:$heads,
                            DefaultValuedAttr<I64Attr, "64">:$chunk), mambaAttrs);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $proj `,` $xbc `,` $dt_bias `,` $a_log `,` $d_skip (`heads` `(` $heads^ `:` type($heads) `)`)?
    attr-dict `:` `(` type($proj) `,` type($xbc) `,` type($dt_bias) `)` `->` type($result)
  }];
}

// The decode-step forms of the conv and the scan continue from a state the caller owns (a
// function argument, updated in place) instead of from zeros.
class Kernel_MambaStepOp<string mnemonic, list<Trait> traits = []>
    : Kernel_Op<mnemonic, !listconcat(traits, [MemoryEffects<[MemRead, MemWrite]>])> {
  dag mambaAttrs = (ins ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                        ConfinedAttr<I64Attr, [IntPositive]>:$head_dim,
                        ConfinedAttr<I64Attr, [IntPositive]>:$n_groups,
                        ConfinedAttr<I64Attr, [IntPositive]>:$state_size,
                        UnitAttr:$prefix_dense);
  let hasVerifier = 1;
}

def Kernel_MambaConvStepOp : Kernel_MambaStepOp<"mamba_conv_step"> {
  let summary = "kernel.mamba_conv continued from a window of the last K-1 conv inputs";
  let description = [{
    `state` `[B, K-1, H*P + 2*G*N]` holds each sequence's last K-1 unmasked x|B|C columns of
    in_proj, oldest first (zeros for an empty context); the conv of the L rows of `proj` reads
    it as their left context and leaves in it the last K-1 inputs after them.
  }];
  let arguments = !con((ins Kernel_FloatTensor:$proj, Kernel_FloatTensor:$conv_weight,
                            Kernel_Vector:$conv_bias, Optional<Kernel_Vector>:$mzx,
                            Kernel_FloatTensor:$state), mambaAttrs);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $proj `,` $conv_weight `,` $conv_bias (`mask` `(` $mzx^ `:` type($mzx) `)`)?
    `state` `(` $state `:` type($state) `)` attr-dict `:`
    `(` type($proj) `,` type($conv_weight) `,` type($conv_bias) `)` `->` type($result)
  }];
}

def Kernel_MambaScanStepOp : Kernel_MambaStepOp<"mamba_scan_step",
    [AllTypesMatch<["dt_bias", "a_log", "d_skip"]>]> {
  let summary = "kernel.mamba_scan continued from the SSM state of every (sequence, head)";
  let description = [{
    `state` `[B, H, P, N]` is the SSM state after the tokens read so far (zeros for an empty
    context); the scan of the L rows starts from it and leaves the state after them.
  }];
  let arguments = !con((ins Kernel_FloatTensor:$proj, Kernel_FloatTensor:$xbc,
                            Kernel_Vector:$dt_bias, Kernel_Vector:$a_log, Kernel_Vector:$d_skip,
                            Kernel_OptionalMask:$heads, Kernel_FloatTensor:$state), mambaAttrs);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $proj `,` $xbc `,` $dt_bias `,` $a_log `,` $d_skip (`heads` `(` $heads^ `:` type($heads) `)`)?
    `state` `(` $state `:` type($state) `)` attr-dict `:`
    `(` type($proj) `,` type($xbc) `,` type($dt_bias) `)` `->` type($result)
  }];
}

def Kernel_MambaGateNormOp : Kernel_MambaOp<"mamba_gate_norm", [AttrSizedOperandSegments]> {
  let summary = "gate y * silu(z) and group-wise masked RMSNorm";
  let arguments = !con((ins Kernel_FloatTensor:$y, Kernel_FloatTensor:$proj,
                            Kernel_Vector:$norm_weight, Optional<Kernel_Vector>:$mzx,
                            Kernel_OptionalMask:$heads, Kernel_OptionalMask:$channels,
                            F64Attr:$epsilon), mambaAttrs);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $y `,` $proj `,` $norm_weight (`mask` `(` $mzx^ `:` type($mzx) `)`)?
    (`heads` `(` $heads^ `:` type($heads) `)`)? (`channels` `(` $channels^ `:` type($channels) `)`)?
    attr-dict `:` `(` type($y) `,` type($proj) `,` type($norm_weight) `)` `->` type($result)
  }];
}

def Kernel_MambaInnerGradOp : Kernel_MambaOp<"mamba_inner_grad",
    [AttrSizedOperandSegments, AttrSizedResultSegments]> {
  let summary = "fused backward of the mixer between in_proj and out_proj";
  let description = [{
    One kernel for the backward of gate-norm, scan, conv and the masks: its intermediate
    cotangents (of y, the conv output and the z/x multipliers) never leave the kernel. Results:
    the in_proj output's cotangent, then the conv weight, conv bias, dt bias, A_log, D and norm
    weight cotangents, then the head and channel mask cotangents when those masks are given.
  }];
  let arguments = !con((ins Kernel_FloatTensor:$proj, Kernel_FloatTensor:$xbc,
                            Kernel_FloatTensor:$y, Kernel_FloatTensor:$conv_weight,
                            Kernel_Vector:$conv_bias, Kernel_Vector:$dt_bias,
                            Kernel_Vector:$a_log, Kernel_Vector:$d_skip,
                            Kernel_Vector:$norm_weight, Kernel_FloatTensor:$result_grad,
                            Kernel_OptionalMask:$heads, Kernel_OptionalMask:$channels,
                            F64Attr:$epsilon, DefaultValuedAttr<I64Attr, "64">:$chunk),
                       mambaAttrs);
  let results = (outs Kernel_FloatTensor:$proj_grad, Kernel_FloatTensor:$conv_weight_grad,
                      Kernel_Vector:$conv_bias_grad, Kernel_Vector:$dt_bias_grad,
                      Kernel_Vector:$a_log_grad, Kernel_Vector:$d_skip_grad,
                      Kernel_Vector:$norm_weight_grad, Optional<Kernel_Vector>:$heads_grad,
                      Optional<Kernel_Vector>:$channels_grad);
  let assemblyFormat = [{
    $proj `,` $xbc `,` $y `,` $conv_weight `,` $conv_bias `,` $dt_bias `,` $a_log `,` $d_skip `,`
    $norm_weight `,` $result_grad
    (`heads` `(` $heads^ `:` type($heads) `)`)? (`channels` `(` $channels^ `:` type($channels) `)`)?
    attr-dict `:` `(` type($proj) `,` type($xbc) `,` type($y) `,` type($conv_weight) `,`
    type($conv_bias) `,` type($dt_bias) `,` type($a_log) `,` type($d_skip) `,` type($norm_weight)
    `,` type($result_grad) `)` `->` `(` type($proj_grad) `,` type($conv_weight_grad) `,`
    type($conv_bias_grad) `,` type($dt_bias_grad) `,` type($a_log_grad) `,` type($d_skip_grad) `,`
    type($norm_weight_grad) `)` (`heads` `(` type($heads_grad)^ `)`)?
    (`channels` `(` type($channels_grad)^ `)`)?
  }];
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def Kernel_AttentionOp : Kernel_Op<"attention", [Pure, AllTypesMatch<["k", "v"]>,
    AllTypesMatch<["q", "result"]>]> {
  let summary = "causal GQA attention, flash-style (a tile of scores at a time)";
  let description = [{
    Returns the unmasked head outputs and the per-row log-sum-exp `[B, heads, L]` the backward
    reuses. `heads` is only read in prefix-dense mode, for the active heads per KV group.
  }];
  let arguments = (ins Kernel_FloatTensor:$q, Kernel_FloatTensor:$k, Kernel_FloatTensor:$v,
                       Kernel_OptionalMask:$heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$result, Kernel_FloatTensor:$lse);
  let assemblyFormat = [{
    $q `,` $k `,` $v (`heads` `(` $heads^ `:` type($heads) `)`)? attr-dict `:`
    `(` type($q) `,` type($k) `)` `->` type($lse)
  }];
}

def Kernel_AttentionStepOp : Kernel_Op<"attention_step", [MemoryEffects<[MemRead, MemWrite]>,
    AllTypesMatch<["k", "v"]>, AllTypesMatch<["q", "result"]>,
    AllTypesMatch<["k_cache", "v_cache"]>]> {
  let summary = "causal GQA attention of the next L tokens over a KV cache";
  let description = [{
    Writes `k` and `v` `[B, L, kv_heads*head_dim]` into rows `position .. position+L-1` of the
    caches `[B, T, kv_heads*head_dim]` (function arguments, updated in place), then returns the
    unmasked head outputs of the L queries, query i attending to cache rows `0 ..
    position+i`. `position + L > T` fails the step. `heads` is only read in prefix-dense mode.
  }];
  let arguments = (ins Kernel_FloatTensor:$q, Kernel_FloatTensor:$k, Kernel_FloatTensor:$v,
                       Kernel_FloatTensor:$k_cache, Kernel_FloatTensor:$v_cache,
                       0DTensorOf<[I64]>:$position, Kernel_OptionalMask:$heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v `cache` `(` $k_cache `,` $v_cache `:` type($k_cache) `)` `at` $position
    `:` type($position)
    (`heads` `(` $heads^ `:` type($heads) `)`)? attr-dict `:` `(` type($q) `,` type($k) `)`
  }];
  let hasVerifier = 1;
}

def Kernel_AttentionGradOp : Kernel_Op<"attention_grad", [Pure,
    AllTypesMatch<["q", "out", "result_grad", "q_grad"]>,
    AllTypesMatch<["k", "v", "k_grad", "v_grad"]>]> {
  let summary = "flash-style attention backward from the saved log-sum-exp";
  let arguments = (ins Kernel_FloatTensor:$q, Kernel_FloatTensor:$k, Kernel_FloatTensor:$v,
                       Kernel_FloatTensor:$out, Kernel_FloatTensor:$lse,
                       Kernel_FloatTensor:$result_grad, Kernel_OptionalMask:$heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_kv_heads,
                       ConfinedAttr<I64Attr, [IntPositive]>:$head_dim, UnitAttr:$prefix_dense);
  let results = (outs Kernel_FloatTensor:$q_grad, Kernel_FloatTensor:$k_grad,
                      Kernel_FloatTensor:$v_grad);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $out `,` $lse `,` $result_grad (`heads` `(` $heads^ `:` type($heads) `)`)?
    attr-dict `:` `(` type($q) `,` type($k) `,` type($lse) `)`
  }];
}

//===----------------------------------------------------------------------===//
// Host steps
//===----------------------------------------------------------------------===//

def Kernel_HostOp : Kernel_Op<"host", [IsolatedFromAbove, SingleBlock]> {
  let summary = "a small step run on the host in float64 (routers, masks, budget losses)";
  let description = [{
    The router MLPs, Gumbel-softmax, mask construction and the resource loss work on a few
    dozen numbers: launching kernels for them would cost more than computing them. A host op
    holds such elastic ops in its region (block arguments = operands) and runs them on the host
    in float64 with the dialect's reference semantics; mask results are yielded as
    `[m..., phi, sigma]` tensors. kernel-fuse merges neighbouring host ops into one.
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    ($inputs^ `:` type($inputs))? attr-dict-with-keyword `->` `(` type($results) `)` $body
  }];
  let hasVerifier = 1;
}

def Kernel_YieldOp : Kernel_Op<"yield", [Pure, Terminator, HasParent<"HostOp">]> {
  let summary = "the results of a host step";
  let arguments = (ins Variadic<AnyType>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

//===----------------------------------------------------------------------===//
// Optimizer
//===----------------------------------------------------------------------===//

def Kernel_SquaredNormOp : Kernel_Op<"squared_norm", [Pure]> {
  let summary = "sum of squares of every element of every input, in float64";
  let description = [{
    The squared global gradient norm that gradient clipping divides by (summed in a fixed order,
    so the result does not depend on the thread count).
  }];
  let arguments = (ins Variadic<Kernel_FloatTensor>:$inputs);
  let results = (outs 0DTensorOf<[F64]>:$result);
  let assemblyFormat = "$inputs attr-dict `:` type($inputs) `->` type($result)";
}

def Kernel_AdamWOp : Kernel_Op<"adamw", [MemoryEffects<[MemRead, MemWrite]>,
    AllTypesMatch<["param", "grad", "exp_avg", "exp_avg_sq"]>]> {
  let summary = "one AdamW step, updating a parameter and its moments in place";
  let description = [{
    `m = b1 m + (1 - b1) g'`, `v = b2 v + (1 - b2) g'^2`, `p -= lr (m / (1 - b1^t) /
    (sqrt(v / (1 - b2^t)) + eps) + weight_decay p)` with `g' = grad_scale g` and
    `hyper = [lr, t, grad_scale]` read at run time (schedules and clipping change no code). The
    parameter and moment operands are updated in place: they must be arguments of the enclosing
    function (the caller's buffers), which the verifier checks.
  }];
  let arguments = (ins Kernel_FloatTensor:$param, Kernel_FloatTensor:$grad,
                       Kernel_FloatTensor:$exp_avg, Kernel_FloatTensor:$exp_avg_sq,
                       1DTensorOf<[F64]>:$hyper, F64Attr:$beta1, F64Attr:$beta2,
                       F64Attr:$epsilon, F64Attr:$weight_decay);
  let assemblyFormat = [{
    $param `,` $grad `,` $exp_avg `,` $exp_avg_sq `,` $hyper attr-dict `:` type($param) `,`
    type($hyper)
  }];
  let hasVerifier = 1;
}

#endif // NESTOR_KERNEL_OPS_TD
