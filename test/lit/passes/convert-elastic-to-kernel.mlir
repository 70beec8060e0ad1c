// RUN: nestor-opt %s -split-input-file -verify-diagnostics \
// RUN:   --convert-elastic-to-kernel="batch=2 seq-len=5" | FileCheck %s
// RUN: nestor-opt %s -split-input-file -verify-diagnostics \
// RUN:   --convert-elastic-to-kernel="batch=2 seq-len=5 prefix-dense=false" \
// RUN:   | FileCheck %s --check-prefix=FULL

// An MLP under hard masks: GEMMs with prefix-dense extents (hidden on K of up and N of down,
// FFN the other way), the masked squared ReLU, the hidden mask of the output; the router
// steps become host steps; dynamic batch/length become 2 x 5.
// CHECK-LABEL: func.func @mlp_hard
// CHECK-SAME: tensor<2x5x8xf32>
// CHECK: %[[MH:.+]] = kernel.host {{.*}} -> (tensor<10xf32>)
// CHECK: elastic.prefix_mask
// CHECK: %[[MF:.+]] = kernel.host {{.*}} -> (tensor<14xf32>)
// CHECK: %[[U:.+]] = kernel.gemm %arg0, %arg2 n_extent(%[[MF]] : tensor<14xf32>) k_extent(%[[MH]] : tensor<10xf32>) {transpose_b}
// CHECK: %[[A:.+]] = kernel.relu2 %[[U]] mask(%[[MF]] : tensor<14xf32>) {prefix_dense}
// CHECK: %[[D:.+]] = kernel.gemm %[[A]], %arg3 n_extent(%[[MH]] : tensor<10xf32>) k_extent(%[[MF]] : tensor<14xf32>) {transpose_b}
// CHECK: kernel.mask %[[D]], %[[MH]] {prefix_dense}
// FULL-LABEL: func.func @mlp_hard
// FULL-NOT: extent
// FULL-NOT: prefix_dense
// FULL: return
func.func @mlp_hard(%x: tensor<?x?x8xf32>, %pi: tensor<2xf32>, %up: tensor<12x8xf32>,
                    %down: tensor<8x12xf32>) -> tensor<?x?x8xf32> {
  %mh = elastic.prefix_mask %pi {choices = array<i64: 8, 4>, mode = #elastic.mask_mode<hard>}
      : tensor<2xf32> -> !elastic.mask<hidden, 8>
  %mf = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<hard>}
      : tensor<2xf32> -> !elastic.mask<ffn, 12>
  %y = elastic.mlp %x, %up, %down ffn(%mf : !elastic.mask<ffn, 12>) hidden(%mh : !elastic.mask<hidden, 8>)
      : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}

// -----

// Soft masks run at full width: no extents, no prefix_dense.
// CHECK-LABEL: func.func @mlp_soft
// CHECK-NOT: extent
// CHECK-NOT: prefix_dense
// CHECK: return
func.func @mlp_soft(%x: tensor<?x?x8xf32>, %pi: tensor<2xf32>, %up: tensor<12x8xf32>,
                    %down: tensor<8x12xf32>) -> tensor<?x?x8xf32> {
  %mf = elastic.prefix_mask %pi {choices = array<i64: 12, 6>, mode = #elastic.mask_mode<soft>}
      : tensor<2xf32> -> !elastic.mask<ffn, 12>
  %y = elastic.mlp %x, %up, %down ffn(%mf : !elastic.mask<ffn, 12>)
      : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}

// -----

// Attention: three projections, the fused flash kernel, the head mask over head_dim blocks per
// KV group, the output projection.
// CHECK-LABEL: func.func @attention
// CHECK: %[[Q:.+]] = kernel.gemm %arg0, %arg1 {transpose_b} : (tensor<2x5x8xf32>, tensor<8x8xf32>) -> tensor<2x5x8xf32>
// CHECK: %[[K:.+]] = kernel.gemm %arg0, %arg2
// CHECK: %[[V:.+]] = kernel.gemm %arg0, %arg3
// CHECK: %[[A:.+]], %[[LSE:.+]] = kernel.attention %[[Q]], %[[K]], %[[V]] {head_dim = 2 : i64, num_heads = 4 : i64, num_kv_heads = 2 : i64} : {{.*}} -> tensor<2x4x5xf32>
// CHECK: %[[O:.+]] = kernel.gemm %[[A]], %arg4 {transpose_b}
// CHECK: return %[[O]]
func.func @attention(%x: tensor<?x?x8xf32>, %wq: tensor<8x8xf32>, %wk: tensor<4x8xf32>,
                     %wv: tensor<4x8xf32>, %wo: tensor<8x8xf32>) -> tensor<?x?x8xf32> {
  %y = elastic.attention %x, %wq, %wk, %wv, %wo {num_heads = 4 : i64, num_kv_heads = 2 : i64, head_dim = 2 : i64}
      : (tensor<?x?x8xf32>, tensor<8x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}

// -----

// Mamba2: in_proj, the masked conv + SiLU, the scan, the gated group norm, out_proj.
// CHECK-LABEL: func.func @mamba
// CHECK: %[[P:.+]] = kernel.gemm %arg0, %arg1 {transpose_b} : (tensor<2x5x8xf32>, tensor<48x8xf32>) -> tensor<2x5x48xf32>
// CHECK: %[[C:.+]] = kernel.mamba_conv %[[P]], %arg2, %arg3 {{.*}} -> tensor<2x5x28xf32>
// CHECK: %[[Y:.+]] = kernel.mamba_scan %[[P]], %[[C]], %arg4, %arg5, %arg6 {{.*}} -> tensor<2x5x16xf32>
// CHECK: %[[N:.+]] = kernel.mamba_gate_norm %[[Y]], %[[P]], %arg7
// CHECK: kernel.gemm %[[N]], %arg8 {transpose_b}
func.func @mamba(%x: tensor<?x?x8xf32>, %in: tensor<48x8xf32>, %cw: tensor<28x4xf32>,
                 %cb: tensor<28xf32>, %dtb: tensor<4xf32>, %alog: tensor<4xf32>, %d: tensor<4xf32>,
                 %nw: tensor<16xf32>, %out: tensor<8x16xf32>) -> tensor<?x?x8xf32> {
  %y = elastic.mamba2 %x, %in, %cw, %cb, %dtb, %alog, %d, %nw, %out
      {num_heads = 4 : i64, head_dim = 4 : i64, n_groups = 2 : i64, state_size = 3 : i64}
      : (tensor<?x?x8xf32>, tensor<48x8xf32>, tensor<28x4xf32>, tensor<28xf32>, tensor<4xf32>,
         tensor<4xf32>, tensor<4xf32>, tensor<16xf32>, tensor<8x16xf32>) -> tensor<?x?x8xf32>
  return %y : tensor<?x?x8xf32>
}

// -----

// The backward of an MLP recomputes the forward GEMM and activation with the same kernel ops
// (CSE shares them with the forward) and differentiates through them.
// CHECK-LABEL: func.func @mlp_grad
// CHECK: %[[U:.+]] = kernel.gemm %arg0, %arg1 {transpose_b}
// CHECK: %[[A:.+]] = kernel.relu2 %[[U]]
// CHECK: kernel.gemm %arg3, %[[A]] {transpose_a} : {{.*}} -> tensor<8x12xf32>
// CHECK: %[[DA:.+]] = kernel.gemm %arg3, %arg2 :
// CHECK: %[[DU:.+]] = kernel.relu2_grad %[[U]], %[[DA]]
// CHECK: kernel.gemm %[[DU]], %arg1 :
// CHECK: kernel.gemm %[[DU]], %arg0 {transpose_a}
func.func @mlp_grad(%x: tensor<?x?x8xf32>, %up: tensor<12x8xf32>, %down: tensor<8x12xf32>,
                    %dy: tensor<?x?x8xf32>) -> (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>) {
  %g:3 = elastic.mlp_grad %x, %up, %down, %dy
      : (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>, tensor<?x?x8xf32>)
      -> (tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>)
  return %g#0, %g#1, %g#2 : tensor<?x?x8xf32>, tensor<12x8xf32>, tensor<8x12xf32>
}

// -----

// expected-error @+1 {{convert-elastic-to-kernel: functions mix float types; masks need one}}
module {
  func.func @a(%x: tensor<3xf32>) { return }
  func.func @b(%x: tensor<3xf64>) { return }
}
