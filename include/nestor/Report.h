//===- Report.h - The HTML report of a training run --------------*- C++ -*-===//
//
// `nestor report RUN/` (also written at the end of `nestor train`) renders one self-contained
// HTML page, RUN/report.html, with inline SVG plots and no scripts or external files: the loss
// of every budget over the steps, the routers' choices and tau over time, the architecture
// each budget chose (which layers, heads and channels survive), parameter counts and the final
// table. Its inputs are two files of the run folder:
//
// RUN/metrics.jsonl, one JSON object per line, told apart by "kind":
//   {"kind":"step", "phase":"parent"|<stage name>, "stage":-1|<stage index>, "step":<int, counts
//    from 0 within the phase "parent", and across all stages for the elastic phase>,
//    "budget":<budget name, "parent" in the parent phase>, "budget_index":<int>,
//    "loss","kd","ce","router_loss","grad_norm","lr","tau","logit_scale":<number>,
//    "tokens_per_s","seconds":<number>,
//    "choices": {<budget name>: {<axis>: [<choice index>, ...]}} (elastic steps only: the
//    routers' argmax choice for every budget after the step; one index per layer of the axis'
//    kind for heterogeneous axes, one otherwise; axis "depth" holds [k], the number of layers
//    dropped)}
//   {"kind":"eval", "phase", "step", "budget":<name or "parent">, "validation_loss":<number>,
//    "accuracy":<number in [0,1] or null>}
//   {"kind":"message", "text":<string>}
// RUN/summary.json, written at the end of training:
//   {"name":<spec name>, "pattern":<hybrid_override_pattern>, "tokens":<int, elastic tokens>,
//    "axes": {<axis>: [<choice sizes, largest first>]} (axis names as in the spec's elastic
//    section: hidden_size, intermediate_size, num_attention_heads, mamba_num_heads,
//    mamba_head_dim; plus "depth": [0, 1, ..., max_dropped_layers]),
//    "rows": [ one per model, the parent first, then each budget in spec order:
//      {"name", "fraction":<number>, "params":<int>, "validation_loss":<number>,
//       "accuracy":<number or null>, "token_accuracy":<number or null>,
//       "baseline_loss", "baseline_accuracy", "baseline_token_accuracy":<number or null>
//       (null for the parent),
//       "architecture": {"hidden_size":<int>, "layers": [ one per layer of the pattern:
//          {"kind":"M"|"*"|"-", "kept":<bool>, and for its kind: "mamba_num_heads",
//           "mamba_head_dim" (M), "num_attention_heads" (*), "intermediate_size" (-)} ]}} ],
//    "parent_sizes": {"hidden_size","intermediate_size","num_attention_heads",
//                     "mamba_num_heads","mamba_head_dim"}}
// Lines that are not valid JSON, or lack a field a plot needs, are errors naming the file and
// line; unknown kinds and fields are ignored (later versions may add them).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_REPORT_H
#define NESTOR_REPORT_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <string>

namespace nestor::report {

/// The report page for the contents of metrics.jsonl and summary.json (`summaryJson` may be
/// empty for a run still in progress: the page then shows the curves only). `metricsName`
/// and `summaryName` are used in errors.
llvm::Expected<std::string> renderReport(llvm::StringRef metricsJsonl, llvm::StringRef summaryJson,
                                         llvm::StringRef metricsName = "metrics.jsonl",
                                         llvm::StringRef summaryName = "summary.json");

/// 12310001152 -> "12,310,001,152", independent of the user's locale ("–" when not finite).
std::string groupThousands(double value);

/// Reads RUN/metrics.jsonl and RUN/summary.json (if present) and writes RUN/report.html
/// atomically. Returns the path written.
llvm::Expected<std::string> writeReport(llvm::StringRef runDir);

} // namespace nestor::report

#endif // NESTOR_REPORT_H
