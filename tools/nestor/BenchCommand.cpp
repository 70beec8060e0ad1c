//===- BenchCommand.cpp - `nestor bench` -----------------------------------===//
//
// Times the compiled train step (forward + backward, CPU backend) at every budget of a spec, in
// one process and one run, and reports each budget's step time as a ratio to the full budget's.
// The routers are set so that budget i picks choice i on every axis (its i-th largest width and
// i dropped layers), with hard masks unless --soft: that is the sub-network the budget trains.
// Weights are random at a realistic scale; timing does not depend on their values.
// With --decode N it also times incremental decoding of N tokens per budget by the compiled
// decode step: served prefix-dense from the one parent copy (one `@decode_step` program of the
// parent for every budget, the choices its inputs: nestor generate), from a copy sliced to the
// budget (its own dense program: nestor slice), from the executable built for the budget
// (nestor build, in its own process), and the slicing itself, all as ratios to the full budget
// in the same run. With --prefill N it times reading an N-token prompt at the full budget: in
// one forward pass (one `@prefill_N` call), in the prefill chunks `nestor generate` uses, and
// token by token, as time ratios to the one pass.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "ProgramDecoding.h"

#include "engine/decode/ProgramDecoder.h"
#include "nestor/Build.h"
#include "nestor/Compile.h"
#ifdef NESTOR_HAVE_CUDA
#include "lib/codegen/cuda/KernelCache.h"
#include "nestor/DeviceProgram.h"
#endif
#include "nestor/Slice.h"
#include "nestor/Spec.h"

#include "CLI/CLI.hpp"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <random>

using namespace nestor;

namespace {

struct BenchOptions {
  std::string specPath;
  int64_t batch = 0, seqLen = 0;
  int steps = 5, warmup = 1;
  bool soft = false, noPrefixDense = false, json = false, profile = false, float64 = false;
  int decode = 0;
  int64_t prefill = 0;
  bool noBinaries = false;
  std::string device = "cpu";
};

/// The prompt each decode pass feeds before it times `--decode` steps.
constexpr int kBenchPrompt = engine::ProgramDecoder::kBenchPrompt;

/// Decode tokens/s of the executable `nestor build` writes for `spec` (`BIN --bench N`, on the
/// CPU: the runtime has no CUDA driver yet), or an error.
llvm::Expected<double> binaryDecodeRate(const spec::ModelSpec &spec,
                                        const train::TensorMap &weights, int tokens,
                                        const std::string &dir, const std::string &name) {
  std::string bin = dir + "/" + name;
  build::BuildOptions options;
  options.context = kBenchPrompt + tokens; // the bench sequence: its prompt, then `tokens` steps
  if (llvm::Error err = build::buildExecutable(spec, weights, bin, options))
    return err;
  std::string out = bin + ".bench";
  std::string count = std::to_string(tokens);
  llvm::SmallVector<llvm::StringRef> argv{bin, "--bench", count, "--device", "cpu"};
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, llvm::StringRef(out), std::nullopt};
  std::string message;
  if (int rc = llvm::sys::ExecuteAndWait(bin, argv, std::nullopt, redirects, 0, 0, &message))
    return llvm::createStringError("%s --bench failed (%d): %s", bin.c_str(), rc, message.c_str());
  auto text = llvm::MemoryBuffer::getFile(out);
  double rate = 0;
  if (!text || std::sscanf((*text)->getBufferStart(), "decode %lf tokens/s", &rate) != 1)
    return llvm::createStringError("%s --bench printed no rate", bin.c_str());
  return rate;
}

/// Step times summed by kernel kind, largest first, on stderr.
void printProfile(const std::vector<std::pair<std::string, double>> &profile,
                  llvm::StringRef title) {
  std::map<std::string, double> byKind;
  double total = 0;
  for (auto &[name, t] : profile) {
    byKind[name] += t;
    total += t;
  }
  std::vector<std::pair<double, std::string>> sorted;
  for (auto &[k, t] : byKind)
    sorted.push_back({t, k});
  std::sort(sorted.rbegin(), sorted.rend());
  std::cerr << title.str() << ":\n";
  for (auto &[t, k] : sorted)
    std::cerr << fmt::format("  {:<26} {:6.1f}%  {:8.1f} ms\n", k, 100 * t / total, t * 1e3);
}

/// Decode passes per decoder. The passes go round the budgets in turn (full, 75%, 50%, full,
/// ...) and each decoder keeps its best, so a slow spell of the machine hits every budget alike
/// instead of the one measured during it: the ratios are what the passes make comparable.
constexpr int kDecodeRounds = 5;

/// Typed argument buffers of a compiled step.
struct Buffers {
  std::vector<std::vector<char>> storage;
  std::vector<const void *> pointers;
  template <typename T> T *at(int i) { return reinterpret_cast<T *>(storage[i].data()); }
};

} // namespace

nestor::cli::Action nestor::cli::addBenchCommand(CLI::App &app) {
  auto opts = std::make_shared<BenchOptions>();
  app.add_option("SPEC", opts->specPath, "Model spec (.pbtxt)")->required();
  app.add_option("--batch", opts->batch, "Sequences per step (default: stage 1's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--seq-len", opts->seqLen, "Tokens per sequence (default: stage 1's)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  app.add_option("--steps", opts->steps, "Timed steps per budget")->capture_default_str();
  app.add_option("--warmup", opts->warmup, "Untimed steps per budget")->capture_default_str();
  app.add_flag("--soft", opts->soft, "Soft masks (full width) instead of the spec's mode");
  app.add_flag("--no-prefix-dense", opts->noPrefixDense,
               "Run hard masks at full width (to measure what prefix-dense execution saves)");
  app.add_flag("--float64", opts->float64, "Run in float64");
  app.add_flag("--profile", opts->profile, "Print time per kernel kind");
  app.add_flag("--json", opts->json, "Print JSON");
  app.add_option("--decode", opts->decode,
                 "Also time decoding this many tokens per budget: prefix-dense from the parent "
                 "from a sliced copy, and from the executable nestor build writes (float32)");
  app.add_option("--device", opts->device,
                 "Where the train step runs: cpu, or cuda (the generated CUDA kernels on GPU 0; "
                 "weights stay on the device)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--prefill", opts->prefill,
                 "Also time reading a prompt of this many tokens at the full budget (float32): "
                 "in one forward pass, in the prefill chunks nestor generate uses, and token by "
                 "token")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  app.add_flag("--no-binaries", opts->noBinaries,
               "With --decode: skip building the executables (a compile per budget)");

  return [opts]() -> int {
    auto spec = spec::loadSpecFile(opts->specPath);
    if (!spec)
      return reportError(spec.takeError());
    if (!spec->has_elastic())
      return reportError(llvm::createStringError("%s: bench needs a spec with an elastic section",
                                                 opts->specPath.c_str()));
    if (opts->steps < 1 || opts->warmup < 0 || opts->decode < 0)
      return reportError(
          llvm::createStringError("--steps must be >= 1, --warmup and --decode >= 0"));
    if ((opts->decode > 0 || opts->prefill > 0) && opts->float64)
      return reportError(
          llvm::createStringError("--decode and --prefill run in float32; drop --float64"));
    spec->mutable_elastic()->set_mask_mode(opts->soft ? spec::SOFT : spec::HARD);
    StepOptions step = defaultStepOptions(*spec);
    if (opts->batch > 0)
      step.batch = opts->batch;
    if (opts->seqLen > 0)
      step.seqLen = opts->seqLen;
    step.prefixDense = !opts->noPrefixDense;
    step.float64 = opts->float64;

    mlir::MLIRContext context;
#ifdef NESTOR_HAVE_CUDA
    std::unique_ptr<runtime::KernelDevice> device;
    if (opts->device == "cuda") {
      auto d = runtime::openCudaKernelDevice(0, cuda::defaultKernelCacheDirectory());
      if (!d)
        return reportError(d.takeError(), 1);
      device = std::move(*d);
    }
#else
    if (opts->device == "cuda")
      return reportError(llvm::createStringError(
          "this nestor was built without the CUDA toolkit (NVRTC): --device cuda is unavailable"));
#endif
    auto compileStart = std::chrono::steady_clock::now();
    auto compiled = compileTrainStep(context, *spec, step);
    if (!compiled)
      return reportError(compiled.takeError(), 1);
    double compileSeconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - compileStart).count();
    CompiledStep &c = **compiled;
    c.program->setProfiling(opts->profile);

    // Arguments: random weights, random tokens, routers wired so budget i picks choice i.
    Buffers buf;
    std::mt19937_64 rng(1);
    std::normal_distribution<double> normal(0.0, 0.02);
    int64_t vocab = spec->architecture().vocab_size();
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
    int64_t paramBytes = 0;
    for (const StepArg &a : c.args) {
      std::vector<char> bytes(a.bytes());
      if (a.elementType.isInteger(32)) {
        auto *p = reinterpret_cast<int32_t *>(bytes.data());
        for (int64_t i = 0; i < a.numel(); ++i)
          p[i] = token(rng);
      } else if (a.elementType.isF32() || a.elementType.isF64()) {
        bool router = llvm::StringRef(a.name).starts_with("routers.");
        for (int64_t i = 0; i < a.numel(); ++i) {
          double v = router ? 0.0 : normal(rng);
          if (a.elementType.isF32())
            reinterpret_cast<float *>(bytes.data())[i] = static_cast<float>(v);
          else
            reinterpret_cast<double *>(bytes.data())[i] = v;
        }
        if (a.isParam)
          paramBytes += a.bytes();
      }
      buf.storage.push_back(std::move(bytes));
    }
    auto setF = [&](int i, int64_t index, double v) {
      if (i < 0)
        return;
      if (c.args[i].elementType.isF32())
        buf.at<float>(i)[index] = static_cast<float>(v);
      else
        buf.at<double>(i)[index] = v;
    };
    // Router: hidden unit j copies one_hot(budget)[j]; output (layer, choice c) = 20 * hidden j
    // for the j with min(j, k - 1) = c. The choice is then budget i's index on every axis
    // (clamped to the axis' last choice), whatever the Gumbel noise.
    const spec::Elastic &e = spec->elastic();
    std::map<std::string, int64_t> choices = {
        {"hidden_size", e.hidden_size().choices_size()},
        {"intermediate_size", e.intermediate_size().choices_size()},
        {"num_attention_heads", e.num_attention_heads().choices_size()},
        {"mamba_num_heads", e.mamba_num_heads().choices_size()},
        {"mamba_head_dim", e.mamba_head_dim().choices_size()},
        {"depth", e.max_dropped_layers() + 1}};
    int64_t budgets = e.budgets_size();
    for (auto [i, a] : llvm::enumerate(c.args)) {
      llvm::StringRef name(a.name);
      if (!name.consume_front("routers."))
        continue;
      auto [axis, rest] = name.split('.');
      int64_t k = choices.count(axis.str()) ? choices[axis.str()] : 1;
      if (rest == "fc1.weight") // [hidden, budgets]
        for (int64_t j = 0; j < std::min(a.shape[0], budgets); ++j)
          setF(static_cast<int>(i), j * a.shape[1] + j, 1.0);
      if (rest == "fc2.weight") // [layers * k, hidden]
        for (int64_t o = 0; o < a.shape[0]; ++o)
          for (int64_t j = 0; j < std::min(a.shape[1], budgets); ++j)
            if (std::min(j, k - 1) == o % k)
              setF(static_cast<int>(i), o * a.shape[1] + j, 20.0);
    }
    auto in = [&](const char *name) { return c.argIndex(name); };
    setF(in("tau"), 0, 0.05);
    setF(in("logit_scale"), 0, 1.0);
    if (int i = in("hard_sample"); i >= 0)
      buf.storage[i][0] = 0;
    if (int i = in("seed"); i >= 0)
      *buf.at<int64_t>(i) = 7;
    for (auto &s : buf.storage)
      buf.pointers.push_back(s.data());

    // Time every budget in this one process.
    int budgetArg = in("budget");
    int64_t tokens = step.batch * step.seqLen;
    struct Row {
      std::string name;
      double seconds, flops;
    };
    std::vector<Row> rows;
    // One step on the chosen device.
    std::function<llvm::Error()> runStep = [&] { return toError(c.program->run(buf.pointers)); };
#ifdef NESTOR_HAVE_CUDA
    std::unique_ptr<runtime::DeviceProgram> gpu;
    double deviceCompileSeconds = 0;
    if (device) {
      auto t0 = std::chrono::steady_clock::now();
      auto p = runtime::DeviceProgram::create(c.step, *device);
      if (!p)
        return reportError(p.takeError(), 1);
      gpu = std::move(*p);
      deviceCompileSeconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      // The weights go to the device once and stay there, as in training.
      for (auto [i, a] : llvm::enumerate(c.args)) {
        if (!a.isParam)
          continue;
        auto address = device->allocate(a.bytes());
        if (!address)
          return reportError(address.takeError(), 1);
        if (llvm::Error err = device->upload(*address, buf.pointers[i], a.bytes()))
          return reportError(std::move(err), 1);
        if (llvm::Error err = gpu->bindArgument(unsigned(i), *address, a.bytes()))
          return reportError(std::move(err), 1);
      }
      runStep = [&] { return gpu->run(buf.pointers); };
      std::cerr << fmt::format("device: {}; {} distinct kernels compiled and loaded in {:.2f} s\n",
                               device->description(), gpu->numKernels(), deviceCompileSeconds);
    }
#endif
    for (int64_t b = 0; b < budgets; ++b) {
      *buf.at<int32_t>(budgetArg) = static_cast<int32_t>(b);
      for (int w = 0; w < opts->warmup; ++w)
        if (llvm::Error err = runStep())
          return reportError(std::move(err), 1);
      c.program->resetCounters();
      auto start = std::chrono::steady_clock::now();
      for (int s = 0; s < opts->steps; ++s)
        if (llvm::Error err = runStep())
          return reportError(std::move(err), 1);
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
          opts->steps;
      rows.push_back({e.budgets(b).name(), seconds,
                      opts->device == "cpu" ? c.program->gemmFlops() / opts->steps : 0.0});
    }

    // Decoding: the same weights and, per budget, the sizes the routers were wired to choose
    // (choice i on every axis, the last i layers dropped: the importer's default depth order).
    struct DecodeRow {
      double parentRate = 0, slicedRate = 0, sliceSeconds = 0, binaryRate = 0;
    };
    std::vector<DecodeRow> decodeRows;
    std::vector<std::pair<std::string, double>> decodeProfile;
    llvm::SmallString<128> binDir;
    if (opts->decode > 0 && !opts->noBinaries)
      if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("nestor-bench", binDir))
        return reportError(llvm::createStringError("cannot create a temporary directory: %s",
                                                   ec.message().c_str()),
                           1);
    llvm::scope_exit removeBinaries([&] {
      if (!binDir.empty())
        llvm::sys::fs::remove_directories(binDir);
    });
    // The float32 weights by name, for the decoders.
    auto weightMap = [&] {
      train::TensorMap weights;
      for (auto [i, a] : llvm::enumerate(c.args))
        if (a.isParam) {
          const float *p = buf.at<float>(static_cast<int>(i));
          weights[a.name] = train::Tensor{a.shape, std::vector<float>(p, p + a.numel())};
        }
      return weights;
    };
    if (opts->decode > 0) {
      train::TensorMap weights = weightMap();
      const std::string &pattern = spec->architecture().hybrid_override_pattern();
      // One compiled decode program of the parent serves every budget (the choices are its
      // inputs); its depth order is the importer's default, the one the sizes below follow.
      int64_t decodeContext = kBenchPrompt + opts->decode;
      auto parentProgram = compileDecodeStep(context, *spec, decodeContext);
      if (!parentProgram)
        return reportError(parentProgram.takeError(), 1);
      // Every decoder is prepared first, then timed in interleaved rounds (kDecodeRounds).
      std::vector<std::unique_ptr<engine::ProgramDecoder>> parentDecoders, slicedDecoders;
      std::deque<train::TensorMap> slicedWeights; // the sliced decoders read them in place
      std::vector<std::pair<spec::ModelSpec, const train::TensorMap *>> slicedModels;
      for (int64_t b = 0; b < budgets; ++b) {
        spec::ModelSizes<double> sizes = spec::parentSizes(*spec);
        auto pick = [&](const spec::AxisChoices &a, double fallback) {
          return a.choices_size() ? double(a.choices(std::min<int64_t>(b, a.choices_size() - 1)))
                                  : fallback;
        };
        sizes.hidden = pick(e.hidden_size(), sizes.hidden);
        for (size_t l = 0; l < sizes.layers.size(); ++l) {
          spec::LayerSizes<double> &ls = sizes.layers[l];
          ls.ffn = pick(e.intermediate_size(), ls.ffn);
          ls.attnHeads = pick(e.num_attention_heads(), ls.attnHeads);
          ls.mambaHeads = pick(e.mamba_num_heads(), ls.mambaHeads);
          ls.mambaHeadDim = pick(e.mamba_head_dim(), ls.mambaHeadDim);
          if (int64_t(l) >= int64_t(pattern.size()) - std::min<int64_t>(b, e.max_dropped_layers()))
            ls.keep = 0;
        }
        std::map<std::string, std::vector<int64_t>> choices;
        auto choose = [&](const char *axis, const spec::AxisChoices &a) {
          if (a.choices_size())
            choices[axis] = {std::min<int64_t>(b, a.choices_size() - 1)};
        };
        choose("hidden_size", e.hidden_size());
        choose("intermediate_size", e.intermediate_size());
        choose("num_attention_heads", e.num_attention_heads());
        choose("mamba_num_heads", e.mamba_num_heads());
        choose("mamba_head_dim", e.mamba_head_dim());
        if (e.max_dropped_layers() > 0)
          choices["depth"] = {std::min<int64_t>(b, e.max_dropped_layers())};
        DecodeRow row;
        auto compiledParent = programDecoder(*parentProgram, weights, choices);
        if (!compiledParent)
          return reportError(compiledParent.takeError(), 1);
        (*compiledParent)->executor().setProfiling(opts->profile);
        parentDecoders.push_back(std::move(*compiledParent));
        auto t0 = std::chrono::steady_clock::now();
        auto sliced = slice::sliceModel(*spec, sizes);
        if (!sliced)
          return reportError(sliced.takeError(), 1);
        auto denseWeights = slice::applySliceMap(sliced->map, weights);
        if (!denseWeights)
          return reportError(denseWeights.takeError(), 1);
        row.sliceSeconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        auto slicedProgram = compileDecodeStep(context, sliced->spec, decodeContext);
        if (!slicedProgram)
          return reportError(slicedProgram.takeError(), 1);
        slicedWeights.push_back(std::move(*denseWeights));
        auto compiledSliced = programDecoder(*slicedProgram, slicedWeights.back(), {});
        if (!compiledSliced)
          return reportError(compiledSliced.takeError(), 1);
        slicedDecoders.push_back(std::move(*compiledSliced));
        slicedModels.push_back({sliced->spec, &slicedWeights.back()});
        decodeRows.push_back(row);
      }
      for (int round = 0; round < kDecodeRounds; ++round)
        for (int64_t b = 0; b < budgets; ++b) {
          for (auto [decoders, best] : {std::pair{&parentDecoders, &decodeRows[b].parentRate},
                                        std::pair{&slicedDecoders, &decodeRows[b].slicedRate}}) {
            auto rate = (*decoders)[b]->benchPass(opts->decode);
            if (!rate.ok())
              return reportError(toError(rate.status()), 1);
            *best = std::max(*best, *rate);
          }
        }
      if (opts->profile)
        for (auto &d : parentDecoders)
          llvm::append_range(decodeProfile, d->executor().profile());
      // The executables run in their own processes, one after another (each the best of three
      // passes of the same sequence).
      if (!binDir.empty())
        for (int64_t b = 0; b < budgets; ++b) {
          auto rate = binaryDecodeRate(slicedModels[b].first, *slicedModels[b].second, opts->decode,
                                       binDir.str().str(), "budget-" + std::to_string(b));
          if (!rate)
            return reportError(rate.takeError(), 1);
          decodeRows[b].binaryRate = *rate;
        }
    }

    // Prefill at the full budget: the same prompt read by one `@prefill_<N>` call (a forward
    // pass over it that fills the caches), by the chunks compileInference gives, and by N
    // decode steps; each decoder's best of kPrefillRounds, in turns (token by token: one).
    struct PrefillRow {
      std::string how;
      int64_t calls = 0;
      double rate = 0;
    };
    std::vector<PrefillRow> prefillRows;
    if (opts->prefill > 0) {
      train::TensorMap weights = weightMap();
      int64_t n = opts->prefill;
      auto chunked = compileInference(context, *spec, n);
      if (!chunked)
        return reportError(chunked.takeError(), 1);
      std::vector<program::Function> whole{chunked->front()};
      if (n > 1) {
        auto pass = compileDecodeStep(context, *spec, n, {}, n);
        if (!pass)
          return reportError(pass.takeError(), 1);
        whole.push_back(std::move(*pass));
      }
      std::string chunks;
      for (size_t f = 1; f < chunked->size(); ++f)
        chunks += (f > 1 ? "+" : "") + std::to_string(engine::prefillTokens((*chunked)[f].name()));
      std::vector<std::pair<std::string, llvm::ArrayRef<program::Function>>> ways = {
          {"one forward pass", whole},
          {"chunks of " + (chunks.empty() ? std::string("1") : chunks), *chunked},
          {"token by token", llvm::ArrayRef(chunked->front())}};
      std::vector<std::unique_ptr<engine::ProgramDecoder>> decoders;
      for (auto &[how, fns] : ways) {
        auto d = programDecoder(fns, weights, {});
        if (!d)
          return reportError(d.takeError(), 1);
        decoders.push_back(std::move(*d));
        prefillRows.push_back({how});
      }
      // Token by token is timed once: it is the slow baseline, and at long prompts minutes.
      constexpr int kPrefillRounds = 3;
      for (int round = 0; round < kPrefillRounds; ++round)
        for (size_t k = 0; k < decoders.size() - (round > 0 ? 1 : 0); ++k) {
          int64_t before = decoders[k]->calls();
          auto rate = decoders[k]->benchPrefill(n);
          if (!rate.ok())
            return reportError(toError(rate.status()), 1);
          prefillRows[k].calls = decoders[k]->calls() - before;
          prefillRows[k].rate = std::max(prefillRows[k].rate, *rate);
        }
    }

    nlohmann::ordered_json j;
    j["spec"] = opts->specPath;
    j["batch"] = step.batch;
    j["seq_len"] = step.seqLen;
    j["mask_mode"] = opts->soft ? "soft" : "hard";
    j["prefix_dense"] = step.prefixDense;
    j["dtype"] = step.float64 ? "float64" : "float32";
    j["device"] = opts->device;
    j["compile_seconds"] = compileSeconds;
    j["arena_bytes"] = c.program->arenaBytes();
    j["param_bytes"] = paramBytes;
    for (const Row &r : rows)
      j["budgets"].push_back({{"name", r.name},
                              {"step_ms", r.seconds * 1e3},
                              {"tokens_per_s", tokens / r.seconds},
                              {"ratio_to_full", r.seconds / rows[0].seconds},
                              {"gemm_gflops", r.flops / r.seconds / 1e9}});
    for (auto [b, d] : llvm::enumerate(decodeRows)) {
      nlohmann::ordered_json &row = j["budgets"][b];
      row["decode_tokens_per_s"] = d.parentRate;
      row["decode_ratio_to_full"] = d.parentRate / decodeRows[0].parentRate;
      row["sliced_decode_tokens_per_s"] = d.slicedRate;
      row["sliced_decode_ratio_to_full"] = d.slicedRate / decodeRows[0].slicedRate;
      row["slice_ms"] = d.sliceSeconds * 1e3;
      if (d.binaryRate > 0) {
        row["binary_decode_tokens_per_s"] = d.binaryRate;
        row["binary_decode_ratio_to_full"] = d.binaryRate / decodeRows[0].binaryRate;
      }
    }
    for (const PrefillRow &r : prefillRows)
      j["prefill"].push_back({{"how", r.how},
                              {"tokens", opts->prefill},
                              {"calls", r.calls},
                              {"tokens_per_s", r.rate},
                              {"time_ratio_to_one_pass", prefillRows[0].rate / r.rate}});
    if (opts->json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << fmt::format(
          "nestor bench {}: batch {} x {} tokens, {} masks{}, {}, {}\n", opts->specPath, step.batch,
          step.seqLen, opts->soft ? "soft" : "hard",
          step.prefixDense && !opts->soft ? " (prefix-dense)" : "",
          step.float64 ? "float64" : "float32", opts->device == "cpu" ? "CPU" : "CUDA");
      std::cout << fmt::format("compile {:.2f} s; memory plan peak {:.1f} MiB (activations and "
                               "gradients), parameters {:.1f} MiB\n",
                               compileSeconds, c.program->arenaBytes() / 1048576.0,
                               paramBytes / 1048576.0);
      std::cout << fmt::format("{:<10} {:>10} {:>12} {:>9} {:>12}\n", "budget", "step ms",
                               "tokens/s", "vs full", "GEMM GFLOP/s");
      for (const Row &r : rows)
        std::cout << fmt::format("{:<10} {:>10.1f} {:>12.0f} {:>8.2f}x {:>12.1f}\n", r.name,
                                 r.seconds * 1e3, tokens / r.seconds, r.seconds / rows[0].seconds,
                                 r.flops / r.seconds / 1e9);
      if (!decodeRows.empty()) {
        std::cout << fmt::format("\ndecoding {} tokens after a 16-token prompt (batch 1, on the "
                                 "CPU; the compiled @decode_step through the runtime):\n",
                                 opts->decode);
        std::cout << fmt::format("{:<10} {:>18} {:>8} {:>18} {:>8} {:>18} {:>8} {:>9}\n", "budget",
                                 "from parent tok/s", "vs full", "sliced copy tok/s", "vs full",
                                 "executable tok/s", "vs full", "slice ms");
        for (auto [b, d] : llvm::enumerate(decodeRows)) {
          std::string binary = d.binaryRate > 0
                                   ? fmt::format("{:>18.0f} {:>7.2f}x", d.binaryRate,
                                                 d.binaryRate / decodeRows[0].binaryRate)
                                   : fmt::format("{:>18} {:>8}", "-", "-");
          std::cout << fmt::format(
              "{:<10} {:>18.0f} {:>7.2f}x {:>18.0f} {:>7.2f}x {} {:>9.1f}\n", rows[b].name,
              d.parentRate, d.parentRate / decodeRows[0].parentRate, d.slicedRate,
              d.slicedRate / decodeRows[0].slicedRate, binary, d.sliceSeconds * 1e3);
        }
      }
    }
    if (!opts->json && !prefillRows.empty()) {
      std::cout << fmt::format("\nreading a {}-token prompt at the full budget (batch 1, on the "
                               "CPU; the compiled entry points through the runtime):\n",
                               opts->prefill);
      std::cout << fmt::format("{:<22} {:>7} {:>12} {:>14}\n", "how", "calls", "tokens/s",
                               "time vs 1 pass");
      for (const PrefillRow &r : prefillRows)
        std::cout << fmt::format("{:<22} {:>7} {:>12.0f} {:>13.2f}x\n", r.how, r.calls, r.rate,
                                 prefillRows[0].rate / r.rate);
    }
    if (opts->profile) {
      printProfile(c.program->profile(), "time per kernel kind (all budgets)");
      if (!decodeProfile.empty())
        printProfile(decodeProfile, "compiled decode step, time per kernel kind (all budgets)");
    }
    return 0;
  };
}
