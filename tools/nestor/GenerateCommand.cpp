//===- GenerateCommand.cpp - `nestor generate` -----------------------------===//
//
// Many-in-one serving (METHOD.md §8): the weights of a run are loaded once and every budget is
// decoded from them prefix-dense by one compiled `@decode_step` program of the parent (the
// routers' choices are its inputs, engine::ProgramDecoder runs it), so serving more budgets
// costs no memory and a smaller budget decodes faster. A dense folder (`nestor slice`, `nestor
// import-hf`, a dense run) is served whole. Text goes through the byte tokenizer: kBos, the
// prompt's bytes, then greedy decoding until kEos or --max-tokens.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "ProgramDecoding.h"

#include "nestor/Checkpoint.h"
#include "nestor/Compile.h"
#include "nestor/Data.h"
#include "nestor/EmitProgram.h"
#include "nestor/Report.h"
#include "nestor/Trainer.h"
#ifdef NESTOR_HAVE_CUDA
#include "lib/codegen/cuda/KernelCache.h"
#include "nestor/DeviceProgram.h"
#endif

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"

#include <algorithm>
#include <chrono>
#include <iostream>

using namespace nestor;

namespace {

struct GenerateOptions {
  std::string device = "cpu";
  std::string dir, budget;
  std::vector<std::string> budgets, prompts;
  int64_t maxTokens = 128;
  int64_t prefillChunk = nestor::kDefaultPrefillChunk;
  ckpt::WeightPolicy weights;
};

/// One model to serve: a budget of an elastic run, or the whole model.
struct Target {
  std::string name;
  spec::ModelSizes<double> sizes;
  std::map<std::string, std::vector<int64_t>> choices; // the decode program's choice inputs
};

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

nestor::cli::Action nestor::cli::addGenerateCommand(CLI::App &app) {
  auto opts = std::make_shared<GenerateOptions>();
  app.add_option("RUN_OR_DIR", opts->dir,
                 "A `nestor train` run folder, or a dense folder (spec.pbtxt, model.safetensors) "
                 "from `nestor slice`")
      ->required();
  app.add_option("--prompt", opts->prompts,
                 "The text to continue; once for every budget, or once per budget of --budgets")
      ->required();
  app.add_option("--max-tokens", opts->maxTokens, "Most tokens to generate per prompt")
      ->check(CLI::PositiveNumber);
  CLI::Option *one =
      app.add_option("--budget", opts->budget, "The budget to serve (default: the first)");
  app.add_option("--budgets", opts->budgets, "Budgets to serve from the one loaded checkpoint")
      ->delimiter(',')
      ->excludes(one);
  app.add_option("--device", opts->device,
                 "cpu (incremental decoding), or cuda: a dense folder on GPU 0, one full forward "
                 "of the generated kernels per token")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  addPrefillChunkOption(app, opts->prefillChunk);
  addWeightPolicyFlags(app, opts->weights);
  return [opts]() -> int {
    std::string dir = opts->dir;
    auto spec = spec::loadSpecFile(dir + "/spec.pbtxt");
    if (!spec)
      return reportError(spec.takeError());
    const spec::Architecture &arch = spec->architecture();
    if (arch.vocab_size() < data::kByteVocabSize)
      return reportError(llvm::createStringError(
          "%s/spec.pbtxt: vocab_size %lld is smaller than the byte tokenizer's %d", dir.c_str(),
          static_cast<long long>(arch.vocab_size()), data::kByteVocabSize));
    std::vector<std::string> requested = opts->budgets;
    if (!opts->budget.empty())
      requested.push_back(opts->budget);
    if (!llvm::sys::fs::exists(dir + "/model.safetensors"))
      return reportError(llvm::createStringError(
          "%s: no model.safetensors (an unfinished run? generate once `nestor train` or "
          "--resume completes)",
          dir.c_str()));

    // Which sub-networks to serve; an elastic run's budgets need the routers' choice and the
    // depth order, read below once the weights are in.
    std::vector<int32_t> budgets;
    if (spec->has_elastic()) {
      if (requested.empty())
        requested.push_back(spec->elastic().budgets(0).name());
      for (const std::string &r : requested) {
        auto b = train::budgetIndex(*spec, r, dir);
        if (!b)
          return reportError(b.takeError());
        budgets.push_back(*b);
      }
    } else if (!requested.empty()) {
      return reportError(llvm::createStringError(
          "--budget: %s holds a dense model (no elastic section); it is served whole",
          dir.c_str()));
    }
    size_t count = std::max<size_t>(requested.size(), 1);
    if (opts->prompts.size() != 1 && opts->prompts.size() != count)
      return reportError(llvm::createStringError(
          "--prompt: given %zu times for %zu budgets; give it once, or once per budget",
          opts->prompts.size(), count));

    auto t0 = std::chrono::steady_clock::now();
    auto weights = ckpt::loadModelWeights(dir + "/model.safetensors", *spec, opts->weights);
    if (!weights)
      return reportError(weights.takeError());
    double loadSeconds = secondsSince(t0);
    double bytes = 0;
    for (const auto &[name, t] : *weights)
      bytes += 4.0 * double(t.data.size());

    std::vector<Target> targets;
    std::vector<int64_t> depthOrder;
    if (spec->has_elastic()) {
      if (spec->elastic().max_dropped_layers() > 0 ||
          llvm::sys::fs::exists(dir + "/importance.json")) {
        auto importance = train::readImportance(dir + "/importance.json");
        if (!importance)
          return reportError(importance.takeError());
        depthOrder = importance->depthOrder;
      }
      for (size_t i = 0; i < requested.size(); ++i) {
        train::RouterChoice choice = train::routerChoice(*spec, *weights, budgets[i], depthOrder);
        targets.push_back({requested[i], choice.sizes, choice.indices});
      }
    } else {
      targets.push_back({spec->name(), spec::parentSizes(*spec), {}});
    }

    spec::FixedSizes fixed = spec::fixedSizes(*spec);
    double parentParams = spec::countParams(fixed, spec::parentSizes(*spec)).total();
    std::cout << fmt::format("{}: loaded {} ({:.1f} MB of float32 weights) in {:.2f} s; serving "
                             "{} from it\n",
                             spec->name(), dir + "/model.safetensors", bytes / 1e6, loadSeconds,
                             targets.size() == 1 ? "1 model"
                                                 : std::to_string(targets.size()) + " budgets");
    if (opts->device == "cuda") {
#ifdef NESTOR_HAVE_CUDA
      if (spec->has_elastic())
        return reportError(llvm::createStringError(
            "--device cuda serves dense folders: slice the budget first (nestor slice %s "
            "--budget NAME --out DIR); prefix-dense serving runs on the CPU",
            dir.c_str()));
      auto device = runtime::openCudaKernelDevice(0, cuda::defaultKernelCacheDirectory());
      if (!device)
        return reportError(device.takeError(), 1);
      const std::string &prompt = opts->prompts[0];
      std::vector<int32_t> tokens = data::encodeBytes(prompt);
      tokens.insert(tokens.begin(), data::kBos);
      mlir::MLIRContext context;
      auto td = std::chrono::steady_clock::now();
      auto out = runtime::greedyOnDevice(context, *spec, *weights, tokens, opts->maxTokens,
                                         data::kEos, **device);
      if (!out)
        return reportError(out.takeError(), 1);
      double seconds = secondsSince(td);
      double params = spec::countParams(spec::fixedSizes(*spec), spec::parentSizes(*spec)).total();
      std::cout << fmt::format("\n[{}] {} parameters (100.0% of the parent) on {}\n", spec->name(),
                               report::groupThousands(params), (*device)->description());
      std::cout << prompt << data::decodeBytes(*out) << "\n";
      std::cout << fmt::format("  prompt {} tokens in {} full forwards; generated {} tokens{}, "
                               "{:.2f} s with the kernels' compile\n",
                               tokens.size(), out->size(), out->size(),
                               !out->empty() && out->back() == data::kEos ? " (end of text)" : "",
                               seconds);
      return 0;
#else
      return reportError(llvm::createStringError(
          "this nestor was built without the CUDA toolkit (NVRTC): --device cuda is unavailable"));
#endif
    }
    // One decode step program, compiled once, serves every target: its KV caches hold the
    // longest prompt and its continuation.
    size_t longestPrompt = 0;
    for (const std::string &p : opts->prompts)
      longestPrompt = std::max(longestPrompt, data::encodeBytes(p).size() + 1);
    mlir::MLIRContext context;
    auto tc = std::chrono::steady_clock::now();
    auto program =
        compileInference(context, *spec, static_cast<int64_t>(longestPrompt) + opts->maxTokens,
                         depthOrder, opts->prefillChunk);
    if (!program)
      return reportError(program.takeError(), 1);
    std::string chunks;
    for (size_t f = 1; f < program->size(); ++f)
      chunks += (f > 1 ? ", " : "") + std::to_string(engine::prefillTokens((*program)[f].name()));
    std::cout << fmt::format("compiled the decode step ({} kernel launches){} in {:.2f} s\n",
                             program->front().steps_size(),
                             chunks.empty() ? "" : " and the prefill of " + chunks + " tokens",
                             secondsSince(tc));
    for (size_t i = 0; i < targets.size(); ++i) {
      const Target &target = targets[i];
      const std::string &prompt = opts->prompts[opts->prompts.size() == 1 ? 0 : i];
      auto decoder = cli::programDecoder(*program, *weights, target.choices);
      if (!decoder)
        return reportError(decoder.takeError(), 1);
      std::vector<int32_t> tokens = data::encodeBytes(prompt);
      tokens.insert(tokens.begin(), data::kBos);

      // Prefill and decode are timed apart: tokens/s is the incremental decoding speed.
      engine::ProgramDecoder::GreedyTimes times;
      auto generated = (*decoder)->greedy(tokens, opts->maxTokens, data::kEos, &times);
      if (!generated.ok())
        return reportError(toError(generated.status()), 1);
      const std::vector<int32_t> &out = *generated;
      double prefillSeconds = times.prefill, decodeSeconds = times.decode;
      // The last token is chosen but not fed back; count only the steps that ran.
      int64_t steps = std::max<int64_t>(static_cast<int64_t>(out.size()) - 1, 0);
      double params = spec::countParams(fixed, target.sizes).total();
      std::cout << fmt::format("\n[{}] {} parameters ({:.1f}% of the parent)\n", target.name,
                               report::groupThousands(params), 100 * params / parentParams);
      std::cout << prompt << data::decodeBytes(out) << "\n";
      std::cout << fmt::format(
          "  prompt {} tokens in {:.1f} ms; generated {} tokens{}, decode {:.1f} tokens/s\n",
          tokens.size(), 1e3 * prefillSeconds, out.size(),
          !out.empty() && out.back() == data::kEos ? " (end of text)" : "",
          steps > 0 && decodeSeconds > 0 ? double(steps) / decodeSeconds : 0.0);
    }
    return 0;
  };
}
