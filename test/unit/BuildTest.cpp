//===- BuildTest.cpp - Standalone executables against the library decoder ---===//
//
// A program `nestor build` generates is compiled for two small random dense models (a
// heterogeneous one with odd sizes, untied, and a tied one with another conv width and one
// Mamba group) and run: its tokens must be those of decode::Decoder::greedy on the same
// weights and prompt, and its text mode must write what `nestor generate` writes. The same
// binaries are then given broken weights files, which must make them fail cleanly, naming
// the tensor or the file. Compiles are the cost here, so each model is compiled once and
// every check on its binary sits in one test.
//
//===----------------------------------------------------------------------===//
#include "nestor/Build.h"

#include "nestor/Checkpoint.h"
#include "nestor/Data.h"
#include "nestor/Decode.h"
#include "nestor/ParamCount.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <unistd.h>

using namespace nestor;

namespace {

/// "M*-M*" with odd sizes, untied, and per-layer sizes: the second Mamba layer has fewer
/// and narrower heads, the MLP a narrower FFN, the last attention layer one query head per
/// KV head instead of two.
spec::ModelSpec heterogeneousSpec() {
  spec::ModelSpec spec;
  spec.set_name("hetero \"odd\"");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("M*-M*");
  a->set_hidden_size(19);
  a->set_intermediate_size(23);
  a->set_mamba_num_heads(4);
  a->set_mamba_head_dim(5);
  a->set_n_groups(2);
  a->set_ssm_state_size(3);
  a->set_conv_kernel(4);
  a->set_num_attention_heads(4);
  a->set_num_key_value_heads(2);
  a->set_head_dim(7);
  a->set_vocab_size(259);
  for (int i = 0; i < 5; ++i)
    a->add_layer_overrides();
  a->mutable_layer_overrides(2)->set_intermediate_size(17);
  a->mutable_layer_overrides(3)->set_mamba_num_heads(2);
  a->mutable_layer_overrides(3)->set_mamba_head_dim(3);
  a->mutable_layer_overrides(4)->set_num_attention_heads(2);
  return spec;
}

/// "-M*" with tied embeddings, one Mamba group, a 2-tap conv and a custom epsilon.
spec::ModelSpec tiedSpec() {
  spec::ModelSpec spec;
  spec.set_name("tied");
  spec::Architecture *a = spec.mutable_architecture();
  a->set_hybrid_override_pattern("-M*");
  a->set_hidden_size(16);
  a->set_intermediate_size(9);
  a->set_mamba_num_heads(3);
  a->set_mamba_head_dim(4);
  a->set_n_groups(1);
  a->set_ssm_state_size(5);
  a->set_conv_kernel(2);
  a->set_num_attention_heads(3);
  a->set_num_key_value_heads(3);
  a->set_head_dim(5);
  a->set_vocab_size(256);
  a->set_tie_word_embeddings(true);
  a->set_layer_norm_epsilon(1e-3);
  return spec;
}

/// N(0, std) for every tensor, norm weights around 1.
train::TensorMap randomWeights(const spec::ModelSpec &spec, uint64_t seed, float std = 0.2f) {
  auto shapes = build::standaloneTensors(spec);
  EXPECT_TRUE(static_cast<bool>(shapes)) << llvm::toString(shapes.takeError());
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, std);
  train::TensorMap weights;
  for (const build::TensorShape &s : *shapes) {
    train::Tensor t;
    t.shape = s.shape;
    int64_t n = 1;
    for (int64_t d : s.shape)
      n *= d;
    bool norm = llvm::StringRef(s.name).ends_with("norm.weight") ||
                llvm::StringRef(s.name).ends_with("norm_f.weight");
    for (int64_t i = 0; i < n; ++i)
      t.data.push_back((norm ? 1.0f : 0.0f) + normal(rng));
    weights[s.name] = std::move(t);
  }
  return weights;
}

struct RunResult {
  int status = -1;
  std::string out, err;
};

std::string readFile(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}

/// Runs `program args...` with stdout and stderr captured in `dir`, in this environment with
/// `env` ("NAME=value") added.
RunResult runProgram(const std::string &program, const std::vector<std::string> &args,
                     const std::string &dir, const std::vector<std::string> &env = {}) {
  std::string outPath = dir + "/run.out", errPath = dir + "/run.err";
  // The redirections do not truncate what an earlier run left.
  (void)llvm::sys::fs::remove(outPath);
  (void)llvm::sys::fs::remove(errPath);
  std::vector<llvm::StringRef> argv = {program};
  argv.insert(argv.end(), args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {llvm::StringRef(""), llvm::StringRef(outPath),
                                                llvm::StringRef(errPath)};
  std::optional<llvm::ArrayRef<llvm::StringRef>> environment;
  std::vector<llvm::StringRef> variables;
  if (!env.empty()) {
    for (char **e = environ; *e; ++e)
      variables.push_back(*e);
    variables.insert(variables.end(), env.begin(), env.end());
    environment = variables;
  }
  RunResult r;
  std::string message;
  r.status = llvm::sys::ExecuteAndWait(program, argv, environment, redirects, 120, 0, &message);
  r.out = readFile(outPath);
  r.err = readFile(errPath) + message;
  return r;
}

std::vector<int32_t> parseTokens(const std::string &line) {
  std::vector<int32_t> tokens;
  llvm::SmallVector<llvm::StringRef, 64> parts;
  llvm::StringRef(line).trim().split(parts, ' ', -1, false);
  for (llvm::StringRef p : parts) {
    int32_t t = -1;
    EXPECT_FALSE(p.getAsInteger(10, t)) << "not a token id: '" << p.str() << "'";
    tokens.push_back(t);
  }
  return tokens;
}

/// A temporary directory removed with everything in it at the end of the scope.
struct TempDir {
  llvm::SmallString<128> path;
  TempDir() { EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("nestor-build-test", path)); }
  ~TempDir() { (void)llvm::sys::fs::remove_directories(path); }
  std::string file(llvm::StringRef name) const { return (path + "/" + name).str(); }
};

/// The library decoder's greedy continuation of kBos + `prompt` (the `nestor generate` rule).
std::vector<int32_t> decoderTokens(const spec::ModelSpec &spec, const train::TensorMap &weights,
                                   const std::string &prompt, int64_t maxTokens) {
  auto decoder = decode::Decoder::create(spec, weights, spec::parentSizes(spec));
  EXPECT_TRUE(static_cast<bool>(decoder)) << llvm::toString(decoder.takeError());
  std::vector<int32_t> tokens = data::encodeBytes(prompt);
  tokens.insert(tokens.begin(), data::kBos);
  auto out = (*decoder)->greedy(tokens, maxTokens, data::kEos);
  EXPECT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  return *out;
}

/// Builds `spec` with `weights` and checks the program against the decoder on two prompts.
void checkAgainstDecoder(const spec::ModelSpec &spec, const train::TensorMap &weights,
                         const TempDir &dir, const std::string &binary) {
  build::BuildOptions options;
  options.keepSource = true;
  // The generated code is warning-free.
  options.flags = {"-O2", "-Wall", "-Wextra", "-Werror"};
  llvm::Error err = build::buildBinary(spec, weights, binary, options);
  ASSERT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
  ASSERT_TRUE(llvm::sys::fs::exists(binary + ".safetensors"));
  ASSERT_TRUE(llvm::sys::fs::exists(binary + ".cpp"));

  for (auto [prompt, maxTokens] : {std::pair<std::string, int64_t>{"Hello, Nestor! 12+34=", 40},
                                   {"", 7},
                                   {"\xff\x01 bytes", 1}}) {
    SCOPED_TRACE("prompt '" + prompt + "', " + std::to_string(maxTokens) + " tokens");
    std::vector<int32_t> expected = decoderTokens(spec, weights, prompt, maxTokens);
    ASSERT_FALSE(expected.empty());
    RunResult tokens = runProgram(
        binary, {"--prompt", prompt, "--max-tokens", std::to_string(maxTokens), "--print-tokens"},
        dir.path.str().str());
    ASSERT_EQ(tokens.status, 0) << tokens.err;
    EXPECT_EQ(parseTokens(tokens.out), expected);
    // Text mode, with the weights found beside the program by default.
    RunResult text =
        runProgram(binary, {"--prompt=" + prompt, "--max-tokens", std::to_string(maxTokens)},
                   dir.path.str().str());
    ASSERT_EQ(text.status, 0) << text.err;
    EXPECT_EQ(text.out, prompt + data::decodeBytes(expected) + "\n");
  }
  // The program was built with its GPU kernels where this Nestor has NVRTC. --device cuda
  // runs them on a GPU where there is one (then the tokens are the decoder's too), and
  // otherwise fails saying so; auto falls back to the CPU and says why with --stats.
  std::string prompt = "Hello, Nestor! 12+34=";
  std::vector<int32_t> expected = decoderTokens(spec, weights, prompt, 40);
  RunResult onGpu = runProgram(
      binary, {"--prompt", prompt, "--max-tokens", "40", "--print-tokens", "--device", "cuda"},
      dir.path.str().str());
  if (onGpu.status == 0) {
    EXPECT_EQ(parseTokens(onGpu.out), expected) << "on the GPU";
  } else {
    EXPECT_EQ(onGpu.status, 1) << onGpu.err;
    EXPECT_EQ(onGpu.out, "");
    llvm::StringRef why = build::cudaAvailable() ? "no CUDA device" : "no CUDA kernels";
    EXPECT_NE(onGpu.err.find(why.str()), std::string::npos) << onGpu.err;
  }
  RunResult automatic =
      runProgram(binary, {"--prompt", prompt, "--max-tokens", "40", "--print-tokens", "--stats"},
                 dir.path.str().str());
  ASSERT_EQ(automatic.status, 0) << automatic.err;
  EXPECT_EQ(parseTokens(automatic.out), expected);
  EXPECT_NE(automatic.err.find(onGpu.status == 0 ? "device: " : "device: the CPU ("),
            std::string::npos)
      << automatic.err;

  // Random weights still have to make the model do something position-dependent, or the
  // comparison above would be weak.
  std::vector<int32_t> continuation = decoderTokens(spec, weights, "Hello, Nestor! 12+34=", 40);
  EXPECT_GT(std::set<int32_t>(continuation.begin(), continuation.end()).size(), 2u);
}

TEST(BuildTest, HeterogeneousProgramMatchesDecoderAndFailsCleanly) {
  TempDir dir;
  spec::ModelSpec spec = heterogeneousSpec();
  train::TensorMap weights = randomWeights(spec, 7);
  std::string binary = dir.file("hetero");
  checkAgainstDecoder(spec, weights, dir, binary);
  if (HasFatalFailure())
    return;
  std::string run = dir.path.str().str();

  // A weights file in which one tensor has another shape: the program names it.
  train::TensorMap wrong = weights;
  train::Tensor &conv = wrong["backbone.layers.3.mixer.conv1d.weight"];
  std::swap(conv.shape[0], conv.shape[1]);
  ASSERT_FALSE(static_cast<bool>(ckpt::writeSafetensors(dir.file("wrong.safetensors"), wrong)));
  RunResult r =
      runProgram(binary, {"--prompt", "x", "--weights", dir.file("wrong.safetensors")}, run);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("backbone.layers.3.mixer.conv1d.weight"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("wrong.safetensors"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");

  // A missing tensor.
  wrong = weights;
  wrong.erase("lm_head.weight");
  ASSERT_FALSE(static_cast<bool>(ckpt::writeSafetensors(dir.file("short.safetensors"), wrong)));
  r = runProgram(binary, {"--prompt", "x", "--weights", dir.file("short.safetensors")}, run);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("'lm_head.weight'"), std::string::npos) << r.err;

  // A missing file, a truncated one, one that is not safetensors at all.
  r = runProgram(binary, {"--prompt", "x", "--weights", dir.file("absent.safetensors")}, run);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("absent.safetensors"), std::string::npos) << r.err;
  std::string bytes = readFile(binary + ".safetensors");
  ASSERT_FALSE(bytes.empty());
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(dir.file("truncated.safetensors"),
                                                       llvm::StringRef(bytes).drop_back(100))));
  r = runProgram(binary, {"--prompt", "x", "--weights", dir.file("truncated.safetensors")}, run);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("lm_head.weight"), std::string::npos) << r.err; // the last tensor
  std::string junk(8, '\0');
  junk[0] = 17;
  junk += "{not json at all}";
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(dir.file("junk.safetensors"), junk)));
  r = runProgram(binary, {"--prompt", "x", "--weights", dir.file("junk.safetensors")}, run);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("junk.safetensors"), std::string::npos) << r.err;

  // Bad command lines: a usage error each, naming the argument.
  for (auto [args, needle] : {std::pair<std::vector<std::string>, std::string>{{}, "--prompt"},
                              {{"--prompt", "x", "--max-tokens", "ten"}, "--max-tokens"},
                              {{"--prompt", "x", "--max-tokens", "0"}, "--max-tokens"},
                              {{"--prompt"}, "--prompt"},
                              {{"--prompt", "x", "--temperature", "1"}, "--temperature"}}) {
    r = runProgram(binary, args, run);
    EXPECT_EQ(r.status, 2) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
  r = runProgram(binary, {"--help"}, run);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("--max-tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pattern M*-M*"), std::string::npos) << r.out;
}

TEST(BuildTest, TiedProgramMatchesDecoder) {
  TempDir dir;
  spec::ModelSpec spec = tiedSpec();
  // Tied, the head favours the token just read; larger weights let the layers outweigh it.
  train::TensorMap weights = randomWeights(spec, 11, 0.5f);
  size_t read = weights.size();
  // A stray LM head (some exporters write one for tied models) that neither reads.
  weights["lm_head.weight"] = {{256, 16}, std::vector<float>(256 * 16, 1.0f)};
  checkAgainstDecoder(spec, weights, dir, dir.file("tied"));
  // The shipped weights hold what the program reads and no more.
  auto shipped = ckpt::readSafetensors(dir.file("tied.safetensors"));
  ASSERT_TRUE(static_cast<bool>(shipped)) << llvm::toString(shipped.takeError());
  EXPECT_EQ(shipped->count("lm_head.weight"), 0u);
  EXPECT_EQ(shipped->size(), read);
}

/// Builds `spec` with the CUDA host emulation compiled in (the kernels become host code that
/// the program's emulated GPU runs) and checks `--device cuda`, the program's whole GPU path
/// from weight upload to the argmax, against the library decoder.
void checkEmulatedGpu(const spec::ModelSpec &spec, const train::TensorMap &weights) {
  TempDir dir;
  std::string binary = dir.file("emulated");
  build::BuildOptions options;
  options.cuda = false; // the PTX plays no part under emulation
  options.flags = {
      "-O1", "-Wall", "-Wextra", "-Werror", "-pthread", "-include", NESTOR_HOST_EMULATION_HEADER};
  llvm::Error err = build::buildBinary(spec, weights, binary, options);
  ASSERT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
  for (auto [prompt, maxTokens] : {std::pair<std::string, int64_t>{"Hi, GPU: 7*6=", 24}, {"", 3}}) {
    SCOPED_TRACE("prompt '" + prompt + "', " + std::to_string(maxTokens) + " tokens");
    std::vector<int32_t> expected = decoderTokens(spec, weights, prompt, maxTokens);
    RunResult r = runProgram(binary,
                             {"--prompt", prompt, "--max-tokens", std::to_string(maxTokens),
                              "--print-tokens", "--device", "cuda", "--stats"},
                             dir.path.str().str());
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(parseTokens(r.out), expected);
    EXPECT_NE(r.err.find("device: the CUDA host emulation"), std::string::npos) << r.err;
  }
  // The bench mode runs on the emulated GPU too.
  RunResult bench = runProgram(binary, {"--bench", "3", "--device", "cuda"}, dir.path.str().str());
  ASSERT_EQ(bench.status, 0) << bench.err;
  EXPECT_NE(bench.out.find("tokens/s"), std::string::npos) << bench.out;
}

TEST(BuildTest, EmulatedGpuProgramMatchesDecoder) {
  // Odd sizes: the scalar matrix-vector path (19 columns) next to the float4 one (20),
  // MLP, grouped-query attention with two layer types, two Mamba layer types.
  spec::ModelSpec hetero = heterogeneousSpec();
  checkEmulatedGpu(hetero, randomWeights(hetero, 7));
}

TEST(BuildTest, EmulatedGpuTiedProgramMatchesDecoder) {
  // Tied (the head reads the embedding's device buffer), one Mamba group, a 2-tap conv.
  spec::ModelSpec tied = tiedSpec();
  checkEmulatedGpu(tied, randomWeights(tied, 11, 0.5f));
}

TEST(BuildTest, DriverPathRunsOnAFakeDriver) {
#ifndef NESTOR_FAKE_LIBCUDA_DIR
  GTEST_SKIP() << "this Nestor was built without the CUDA toolkit (no cuda.h for the fake "
                  "driver, no NVRTC for the PTX)";
#else
  // The program as deployed (PTX inside, the driver opened with dlopen) runs against the fake
  // libcuda.so.1, whose launches run the program's own kernels built as a shared library under
  // the host emulation: the driver calls, their arguments, the PTX's entry names and every
  // copy's bounds are checked as a GPU would, and the tokens must be the decoder's.
  TempDir dir;
  spec::ModelSpec spec = heterogeneousSpec();
  train::TensorMap weights = randomWeights(spec, 7);
  std::string binary = dir.file("deployed");
  build::BuildOptions options;
  options.keepSource = true;
  ASSERT_FALSE(static_cast<bool>(build::buildBinary(spec, weights, binary, options)));
  std::string kernels = dir.file("kernels.so");
  auto cxx = llvm::sys::findProgramByName("c++");
  ASSERT_TRUE(static_cast<bool>(cxx));
  RunResult compiled =
      runProgram(*cxx,
                 {"-std=c++17", "-O1", "-shared", "-fPIC", "-pthread", "-include",
                  NESTOR_HOST_EMULATION_HEADER, "-o", kernels, binary + ".cpp", "-ldl"},
                 dir.path.str().str());
  ASSERT_EQ(compiled.status, 0) << compiled.err;

  std::string libraryPath = std::string("LD_LIBRARY_PATH=") + NESTOR_FAKE_LIBCUDA_DIR;
  std::string prompt = "Hello, Nestor! 12+34=";
  std::vector<int32_t> expected = decoderTokens(spec, weights, prompt, 30);
  RunResult r = runProgram(
      binary,
      {"--prompt", prompt, "--max-tokens", "30", "--print-tokens", "--device", "cuda", "--stats"},
      dir.path.str().str(), {libraryPath, "NESTOR_FAKE_CUDA_KERNELS=" + kernels});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(parseTokens(r.out), expected);
  EXPECT_NE(r.err.find("device: Nestor fake GPU (sm_90)"), std::string::npos) << r.err;

  // A driver that cannot load the PTX: --device cuda fails with the JIT's log, auto falls
  // back to the CPU and says why.
  r = runProgram(binary, {"--prompt", prompt, "--max-tokens", "30", "--device", "cuda"},
                 dir.path.str().str(), {libraryPath});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("cuModuleLoadDataEx (loading the program's PTX) failed: "
                       "CUDA_ERROR_INVALID_PTX"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("fake JIT: no kernels for this PTX"), std::string::npos) << r.err;
  r = runProgram(binary, {"--prompt", prompt, "--max-tokens", "30", "--print-tokens", "--stats"},
                 dir.path.str().str(), {libraryPath});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(parseTokens(r.out), expected);
  EXPECT_NE(r.err.find("device: the CPU (cuModuleLoadDataEx"), std::string::npos) << r.err;
#endif
}

TEST(BuildTest, GpuKernelsAreCompiledToPtx) {
  if (!build::cudaAvailable())
    GTEST_SKIP() << "this Nestor was built without the CUDA toolkit (no NVRTC)";
  for (const char *arch : {"sm_80", "sm_90"}) {
    SCOPED_TRACE(arch);
    build::BuildOptions options;
    options.cudaArch = arch;
    auto source = build::emitStandaloneSource(heterogeneousSpec(), options);
    ASSERT_TRUE(static_cast<bool>(source)) << llvm::toString(source.takeError());
    llvm::StringRef s(*source);
    std::string target = std::string(".target ") + arch;
    EXPECT_TRUE(s.contains(target)) << target;
    // One set of kernels per distinct layer type: the two Mamba and two attention layers
    // differ, so each has its own.
    for (const char *entry :
         {"nestor_embed", "nestor_rmsnorm", "nestor_head", "nestor_argmax", "mamba_4_5_in",
          "mamba_4_5_conv", "mamba_4_5_ssm", "mamba_4_5_norm", "mamba_4_5_out", "mamba_2_3_ssm",
          "attention_4_q", "attention_4_kv", "attention_4_attend", "attention_4_o",
          "attention_2_attend", "mlp_17_up", "mlp_17_down"})
      EXPECT_TRUE(s.contains(std::string(".entry ") + entry + "(")) << entry;
    EXPECT_TRUE(s.contains("layer3.load(context, file, 3, \"mamba_2_3\");"));
  }
  // Without CUDA the program has no PTX and says so.
  build::BuildOptions cpuOnly;
  cpuOnly.cuda = false;
  auto source = build::emitStandaloneSource(heterogeneousSpec(), cpuOnly);
  ASSERT_TRUE(static_cast<bool>(source)) << llvm::toString(source.takeError());
  EXPECT_TRUE(llvm::StringRef(*source).contains("constexpr const char *kCudaModule = nullptr;"));
  EXPECT_FALSE(llvm::StringRef(*source).contains(".entry"));
}

TEST(BuildTest, SourceInstantiatesEachLayerWithItsSizes) {
  auto source = build::emitStandaloneSource(heterogeneousSpec());
  ASSERT_TRUE(static_cast<bool>(source)) << llvm::toString(source.takeError());
  llvm::StringRef s(*source);
  EXPECT_TRUE(s.contains("constexpr std::size_t kHidden = 19;"));
  EXPECT_TRUE(s.contains("constexpr std::size_t kVocab = 259;"));
  EXPECT_TRUE(s.contains("constexpr bool kTiedEmbeddings = false;"));
  EXPECT_TRUE(s.contains("using Layer0 = rt::MambaLayer<kHidden, /*H=*/4, /*P=*/5, "));
  EXPECT_TRUE(s.contains("using Layer1 = rt::AttentionLayer<kHidden, /*NH=*/4, "));
  EXPECT_TRUE(s.contains("using Layer2 = rt::MlpLayer<kHidden, /*F=*/17>;"));
  EXPECT_TRUE(s.contains("using Layer3 = rt::MambaLayer<kHidden, /*H=*/2, /*P=*/3, "));
  EXPECT_TRUE(s.contains("using Layer4 = rt::AttentionLayer<kHidden, /*NH=*/2, "));
  EXPECT_TRUE(s.contains("struct MambaLayer")); // the runtime is inlined
  // The spec's name reaches the program as an escaped literal.
  EXPECT_TRUE(s.contains("hetero \\\"odd\\\"")) << s.str();
  // Control bytes become three-digit octal escapes (a tab is \011, not \9).
  spec::ModelSpec named = heterogeneousSpec();
  named.set_name("tab\there\nnew");
  build::BuildOptions cpuOnly;
  cpuOnly.cuda = false;
  auto escaped = build::emitStandaloneSource(named, cpuOnly);
  ASSERT_TRUE(static_cast<bool>(escaped)) << llvm::toString(escaped.takeError());
  EXPECT_TRUE(llvm::StringRef(*escaped).contains("tab\\011here\\012new"));
}

TEST(BuildTest, RefusesElasticAndInvalidSpecs) {
  spec::ModelSpec elastic = tiedSpec();
  elastic.mutable_elastic()->add_budgets()->set_name("full");
  auto source = build::emitStandaloneSource(elastic);
  ASSERT_FALSE(static_cast<bool>(source));
  std::string message = llvm::toString(source.takeError());
  EXPECT_NE(message.find("elastic"), std::string::npos) << message;
  EXPECT_NE(message.find("nestor slice"), std::string::npos) << message;

  spec::ModelSpec invalid = heterogeneousSpec();
  invalid.mutable_architecture()->mutable_layer_overrides(3)->set_mamba_num_heads(3);
  source = build::emitStandaloneSource(invalid);
  ASSERT_FALSE(static_cast<bool>(source));
  message = llvm::toString(source.takeError());
  EXPECT_NE(message.find("layer_overrides[3].mamba_num_heads"), std::string::npos) << message;

  spec::ModelSpec small = tiedSpec();
  small.mutable_architecture()->set_vocab_size(200);
  source = build::emitStandaloneSource(small);
  ASSERT_FALSE(static_cast<bool>(source));
  message = llvm::toString(source.takeError());
  EXPECT_NE(message.find("vocab_size"), std::string::npos) << message;
}

TEST(BuildTest, BadWeightsOrCompilerLeaveNoBinary) {
  TempDir dir;
  spec::ModelSpec spec = tiedSpec();
  std::string binary = dir.file("model");

  train::TensorMap weights = randomWeights(spec, 3);
  weights["backbone.layers.1.mixer.A_log"].shape = {1, 3};
  llvm::Error err = build::buildBinary(spec, weights, binary);
  ASSERT_TRUE(static_cast<bool>(err));
  std::string message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("backbone.layers.1.mixer.A_log"), std::string::npos) << message;

  weights = randomWeights(spec, 3);
  weights.erase("backbone.norm_f.weight");
  err = build::buildBinary(spec, weights, binary);
  ASSERT_TRUE(static_cast<bool>(err));
  message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("backbone.norm_f.weight"), std::string::npos) << message;

  // The compiler rejects an option before reading the source: its own message is reported.
  build::BuildOptions options;
  options.flags = {"-fno-such-option-nestor"};
  err = build::buildBinary(spec, randomWeights(spec, 3), binary, options);
  ASSERT_TRUE(static_cast<bool>(err));
  message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("exit status"), std::string::npos) << message;
  EXPECT_NE(message.find("-fno-such-option-nestor"), std::string::npos) << message;

  options.compiler = "nestor-no-such-compiler";
  err = build::buildBinary(spec, randomWeights(spec, 3), binary, options);
  ASSERT_TRUE(static_cast<bool>(err));
  message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("nestor-no-such-compiler"), std::string::npos) << message;

  // Nothing was left behind: no program, no weights, no temporary.
  std::error_code ec;
  int entries = 0;
  for (llvm::sys::fs::directory_iterator it(dir.path, ec), end; it != end && !ec; it.increment(ec))
    ++entries;
  EXPECT_EQ(entries, 0);
}

} // namespace
