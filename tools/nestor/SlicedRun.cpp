//===- SlicedRun.cpp - One budget of a finished run, sliced ---------------===//
#include "SlicedRun.h"

#include "Commands.h"

#include "nestor/Checkpoint.h"
#include "nestor/Compile.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

using namespace nestor;

llvm::Expected<cli::SlicedRun> nestor::cli::sliceRun(const std::string &run,
                                                     const std::string &budgetName,
                                                     const ckpt::WeightPolicy &policy,
                                                     int &exitCode) {
  exitCode = kBadInput;
  auto spec = spec::loadSpecFile(run + "/spec.pbtxt");
  if (!spec)
    return spec.takeError();
  if (!spec->has_elastic())
    return llvm::createStringError("%s: a dense run has no budgets to slice",
                                   (run + "/spec.pbtxt").c_str());
  auto budget = train::budgetIndex(*spec, budgetName, run);
  if (!budget)
    return budget.takeError();
  if (!llvm::sys::fs::exists(run + "/model.safetensors"))
    return llvm::createStringError(
        "%s: the run has not finished (no model.safetensors); slice it once `nestor train` (or "
        "--resume) completes",
        run.c_str());
  auto weights = ckpt::loadModelWeights(run + "/model.safetensors", *spec, policy);
  if (!weights)
    return weights.takeError();
  auto importance = train::readImportance(run + "/importance.json");
  if (!importance)
    return importance.takeError();

  exitCode = 1;
  SlicedRun out;
  out.parent = *spec;
  out.choice = train::routerChoice(*spec, *weights, *budget, importance->depthOrder);
  auto sliced = slice::sliceModel(*spec, out.choice.sizes);
  if (!sliced)
    return sliced.takeError();
  out.sliced = std::move(*sliced);
  out.sliced.spec.set_name(spec->name() + "-" + budgetName);

  // The weights follow the slice map of the pass's dense graph; the dense spec must describe
  // exactly the tensors that graph takes.
  mlir::MLIRContext context;
  auto graph = sliceToDense(context, *spec, *weights, budgetName, importance->depthOrder);
  if (!graph)
    return graph.takeError();
  const slice::SliceMap &host = out.sliced.map;
  if (graph->map.size() != host.size())
    return llvm::createStringError("internal error: the dense graph has %zu weights, the dense "
                                   "spec %zu",
                                   graph->map.size(), host.size());
  for (const auto &[name, s] : host) {
    auto it = graph->map.find(name);
    bool same = it != graph->map.end() && it->second.source == s.source &&
                it->second.indices.size() == s.indices.size();
    for (size_t d = 0; same && d < s.indices.size(); ++d)
      same = it->second.indices[d].size() == s.indices[d].size();
    if (!same)
      return llvm::createStringError(
          "internal error: the dense graph and the dense spec disagree on '%s'", name.c_str());
  }
  out.sliced.map = graph->map;
  auto dense = slice::applySliceMap(out.sliced.map, *weights);
  if (!dense)
    return dense.takeError();
  out.weights = std::move(*dense);
  llvm::raw_string_ostream os(out.graph);
  os << "// The dense graph of " << run << " at budget '" << budgetName
     << "' (elastic-slice); each weight argument names its slice of the parent.\n";
  graph->model.print(os);
  os << "\n";
  return out;
}
