// RUN: nestor-opt %s -split-input-file -verify-diagnostics

func.func @contraction(%x: tensor<2x5x8xf32>, %w: tensor<12x7xf32>) {
  // expected-error @+1 {{contraction sizes differ: 8 vs 7}}
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x7xf32>) -> tensor<2x5x12xf32>
  return
}

// -----

func.func @result_view(%x: tensor<2x5x8xf32>, %w: tensor<12x8xf32>) {
  // expected-error @+1 {{result matrix view must be 10x12}}
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<2x5x8xf32>, tensor<12x8xf32>) -> tensor<2x5x13xf32>
  return
}

// -----

func.func @rank(%x: tensor<8xf32>, %w: tensor<12x8xf32>) {
  // expected-error @+1 {{operands must have rank 2 or more}}
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<8xf32>, tensor<12x8xf32>) -> tensor<12xf32>
  return
}

// -----

func.func @element_types(%x: tensor<5x8xf32>, %w: tensor<12x8xf64>) {
  // expected-error @+1 {{operands and result must share one element type}}
  %y = kernel.gemm %x, %w {transpose_b} : (tensor<5x8xf32>, tensor<12x8xf64>) -> tensor<5x12xf32>
  return
}

// -----

func.func @acc_type(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %acc: tensor<5x11xf32>) {
  // expected-error @+1 {{acc must have the result type}}
  %y = kernel.gemm %x, %w acc(%acc : tensor<5x11xf32>) {transpose_b}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}

// -----

func.func @epilogue(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<7xf32>) {
  // expected-error @+1 {{mask of 5 entries with block 2 does not cover 12 columns}}
  %y = kernel.gemm %x, %w mask(%m : tensor<7xf32>) {transpose_b, mask_block = 2 : i64}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}

// -----

func.func @extent(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<7xf32>) {
  // expected-error @+1 {{n extent mask of 5 entries in 1 groups does not tile a dimension of 12}}
  %y = kernel.gemm %x, %w n_extent(%m : tensor<7xf32>) {transpose_b}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}

// -----

func.func @extent_groups(%x: tensor<5x8xf32>, %w: tensor<12x8xf32>, %m: tensor<8xf32>) {
  // expected-error @+1 {{k extent mask of 6 entries in 4 groups does not tile a dimension of 8}}
  %y = kernel.gemm %x, %w k_extent(%m : tensor<8xf32>) {transpose_b, k_groups = 4 : i64}
      : (tensor<5x8xf32>, tensor<12x8xf32>) -> tensor<5x12xf32>
  return
}

// -----

func.func @add_arity(%x: tensor<4xf32>) {
  // expected-error @+1 {{needs at least two inputs}}
  %y = kernel.add %x : tensor<4xf32>
  return
}

// -----

func.func @host_arguments(%b: tensor<i32>) {
  // expected-error @+1 {{region must take one argument per input}}
  %0 = kernel.host %b : tensor<i32> -> (tensor<3xf32>) {
    %u = arith.constant dense<0.0> : tensor<3xf32>
    kernel.yield %u : tensor<3xf32>
  }
  return
}

// -----

func.func @host_results(%b: tensor<i32>) {
  // expected-error @+1 {{region must end in kernel.yield of one value per result}}
  %0 = kernel.host %b : tensor<i32> -> (tensor<3xf32>) {
  ^bb0(%arg: tensor<i32>):
    kernel.yield
  }
  return
}

// -----

func.func @yield_parent() {
  // expected-error @+1 {{expects parent op 'kernel.host'}}
  kernel.yield
}

// -----

func.func @adamw_in_place(%p: tensor<4xf32>, %g: tensor<4xf32>, %h: tensor<3xf64>) {
  %m = kernel.add %p, %g : tensor<4xf32>
  // expected-error @+1 {{updates param and moments in place: they must be function arguments}}
  kernel.adamw %p, %g, %m, %m, %h {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64}
      : tensor<4xf32>, tensor<3xf64>
  return
}

// -----

func.func @adamw_hyper(%p: tensor<4xf32>, %g: tensor<4xf32>, %h: tensor<2xf64>) {
  // expected-error @+1 {{hyper must be [lr, step, grad_scale]}}
  kernel.adamw %p, %g, %p, %p, %h {beta1 = 0.9 : f64, beta2 = 0.95 : f64, epsilon = 1.0e-8 : f64, weight_decay = 0.0 : f64}
      : tensor<4xf32>, tensor<2xf64>
  return
}
