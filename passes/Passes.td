//===- Passes.td - Nestor's elastic passes -----------------------*- tablegen -*-===//
//
// Alphabetical. Each pass has one .cpp in this directory named after it.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_PASSES_TD
#define NESTOR_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertElasticToKernelPass : Pass<"convert-elastic-to-kernel", "mlir::ModuleOp"> {
  let summary = "Lower elastic ops to kernel-dialect ops (GEMMs, fused kernels, host steps)";
  let description = [{
    Each elastic op lowers through its own conversion pattern: projections become
    `kernel.gemm`, norms, masks, activations, the Mamba2 conv/scan/gate-norm, attention and the
    losses become their fused kernels, backward ops recompute forward intermediates with the
    same kernel ops (so CSE shares them with the forward), and the small router, mask and
    budget ops become `kernel.host` steps. Masks become `tensor<(n+2)xT>`; the dynamic batch and
    sequence dimensions become `batch` and `seq-len`. Ops whose masks are hard prefix masks are
    marked `prefix_dense`.
  }];
  let options = [
    Option<"batch", "batch", "int64_t", /*default=*/"1", "Batch size (sequences per step)">,
    Option<"seqLen", "seq-len", "int64_t", /*default=*/"1", "Sequence length (tokens)">,
    Option<"prefixDense", "prefix-dense", "bool", /*default=*/"true",
           "Mark ops with hard masks prefix_dense (false: every op runs at full width)">
  ];
  let dependentDialects = ["::nestor::kernel::KernelDialect"];
}

def ElasticAutodiffPass : Pass<"elastic-autodiff", "mlir::ModuleOp"> {
  let summary = "Build the train-step function: forward, loss and every parameter's gradient";
  let description = [{
    Clones `@<function>` into `@<function>_train_step`, which returns the original results
    followed by the gradient of result `loss-index` with respect to every argument marked
    `elastic.param` (in argument order; result attribute `elastic.grad_of = "<name>"`).
    Each op on the way builds its own vector-Jacobian product through
    `GradientOpInterface`; cotangents of a value with several uses are summed. An activity
    analysis skips values that do not depend on a parameter (run-time inputs, the teacher's
    logits, masks from constants) or do not reach the loss; a parameter without a path to the
    loss gets a zero gradient. An op on the path without a gradient rule is an error naming it.
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"elastic_model\"",
           "The function to differentiate">,
    Option<"lossIndex", "loss-index", "unsigned", /*default=*/"1",
           "Which result of the function is the scalar loss">
  ];
  let dependentDialects = ["::nestor::elastic::ElasticDialect",
                           "::mlir::arith::ArithDialect"];
}

def ElasticCountParamsPass : Pass<"elastic-count-params", "mlir::func::FuncOp"> {
  let summary = "Annotate a model function with the element counts of its parameters";
  let description = [{
    Sums the elements of every function argument named by an `elastic.param` attribute and
    attaches the totals as `elastic.num_params` (model weights) and `elastic.num_router_params`
    (arguments whose name starts with `routers.`). The model total is the parameter count of the
    parent, the number `nestor params` computes from the closed form; tests compare the two.
    A parameter of dynamic shape is an error.
  }];
  let dependentDialects = ["::nestor::elastic::ElasticDialect"];
}

def ElasticSlicePass : Pass<"elastic-slice", "mlir::ModuleOp"> {
  let summary = "Slice the elastic model at one budget into a dense model (METHOD.md section 8)";
  let description = [{
    Replaces `@<function>` by the dense model its routers choose at `budget` (one of the
    function's `elastic.budgets`). The routers are evaluated at the budget (argmax; their
    weights must be constants), every mask is folded to the prefix it keeps (per group for
    Mamba heads, per KV group for attention heads), every op shrinks itself through
    `SliceOpInterface`, dropped layers vanish with their weights, and no router, Gumbel, mask,
    loss or budget op is left: the result is `(tokens, weights...) -> logits`.

    Each weight argument of the dense function records its slice of the parent, which the
    runtime applies to checkpoint tensors: `elastic.param` (the dense name, layers renumbered),
    `elastic.slice_of` (the parent tensor) and `elastic.slice`, one `array<i64>` per dimension
    of `[begin, end)` index runs kept in order.
  }];
  let options = [
    Option<"budget", "budget", "std::string", /*default=*/"", "The budget to slice at (required)">,
    Option<"function", "function", "std::string", /*default=*/"\"elastic_model\"",
           "The elastic model function">
  ];
  let dependentDialects = ["::nestor::elastic::ElasticDialect"];
}

def KernelFusePass : Pass<"kernel-fuse", "mlir::func::FuncOp"> {
  let summary = "Fuse kernel ops: GEMM epilogues and accumulation, add chains, host steps";
  let description = [{
    Decides the fusion groups of the kernel program: a channel mask after a GEMM whose raw
    result has no other use becomes the GEMM's epilogue; a single-use GEMM added to another
    value accumulates into it (beta = 1); chains of single-use adds become one n-ary add; and
    neighbouring `kernel.host` steps merge into one host call.
  }];
  let dependentDialects = ["::nestor::kernel::KernelDialect"];
}

def KernelPlanMemoryPass : Pass<"kernel-plan-memory", "mlir::func::FuncOp"> {
  let summary = "Assign every kernel result a byte offset in one arena, by liveness";
  let description = [{
    Walks the function in program order; each tensor a kernel op defines lives until its last
    use (function results to the end) and is placed first-fit into the free space of one arena,
    64-byte aligned. Writes `kernel.offsets` (one per result) on each kernel op and the arena
    size, the program's peak memory, as `kernel.arena_bytes` on the function. Function arguments
    and constants live outside the arena.
  }];
}

#endif // NESTOR_PASSES_TD
