//===- BuildTest.cpp - Built executables against the library runtime ------===//
//
// `nestor build` attaches the compiled decode step of a dense model to the runtime executable
// (nestor-run). Two small random dense models (a heterogeneous one with odd sizes, untied,
// vocabulary 259, and a tied one with another conv width and one Mamba group) are built and
// run: the executable's tokens must be those of engine::ProgramDecoder::greedy on the same
// program in this process (and so `nestor generate`'s; DecodeTest holds the decode step to the
// compiled forward), its text mode must write what `nestor generate` writes, and the program
// it carries must round-trip. Then broken weights, a broken executable and bad command lines,
// each of which must fail cleanly, naming the tensor, the file or the argument.
//
//===----------------------------------------------------------------------===//
#include "nestor/Build.h"

#include "engine/decode/ProgramDecoder.h"
#include "engine/program/Program.h"
#include "engine/weights/Safetensors.h"
#include "nestor/Checkpoint.h"
#include "nestor/Data.h"

#include "mlir/IR/MLIRContext.h"
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

/// The program an executable of `spec` carries (context 128).
program::Program compiled(const spec::ModelSpec &spec) {
  mlir::MLIRContext context;
  build::BuildOptions options;
  options.context = 128;
  auto p = build::compileExecutableProgram(context, spec, options);
  EXPECT_TRUE(static_cast<bool>(p)) << llvm::toString(p.takeError());
  return p ? std::move(*p) : program::Program();
}

/// N(0, std) for every parameter the program reads, norm weights around 1.
train::TensorMap randomWeights(const spec::ModelSpec &spec, uint64_t seed, float std = 0.2f) {
  program::Program p = compiled(spec);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, std);
  train::TensorMap weights;
  // The decode step, and the prefill of 16 tokens (256 is longer than the context).
  EXPECT_EQ(p.functions_size(), 2);
  if (p.functions_size() != 2)
    return weights;
  EXPECT_EQ(p.functions(0).name(), "decode_step");
  EXPECT_EQ(p.functions(1).name(), "prefill_16");
  for (const engine::Parameter &param : engine::parameters(p.functions(0))) {
    train::Tensor t;
    t.shape = param.shape;
    bool norm = llvm::StringRef(param.name).ends_with("norm.weight") ||
                llvm::StringRef(param.name).ends_with("norm_f.weight");
    for (uint64_t i = 0; i < engine::elementCount(t.shape).value_or(0); ++i)
      t.data.push_back((norm ? 1.0f : 0.0f) + normal(rng));
    weights[param.name] = std::move(t);
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

/// The in-process runtime's greedy continuation of kBos + `prompt` (the `nestor generate`
/// rule) by the decode step of the program an executable of `spec` carries, token by token (the
/// executable reads prompts with its prefill entry point).
std::vector<int32_t> libraryTokens(const spec::ModelSpec &spec, const train::TensorMap &weights,
                                   const std::string &prompt, int64_t maxTokens) {
  program::Program p = compiled(spec);
  const program::Function *step = engine::findFunction(p, engine::kDecodeStep);
  if (!step)
    return {};
  auto decoder = engine::ProgramDecoder::create(*step, weights);
  EXPECT_TRUE(decoder.ok()) << decoder.status().message();
  if (!decoder.ok())
    return {};
  std::vector<int32_t> tokens = data::encodeBytes(prompt);
  tokens.insert(tokens.begin(), data::kBos);
  auto out = (*decoder)->greedy(tokens, maxTokens, data::kEos);
  EXPECT_TRUE(out.ok()) << out.status().message();
  return out.ok() ? *out : std::vector<int32_t>();
}

build::BuildOptions runtimeOptions() {
  build::BuildOptions options;
  options.runtime = NESTOR_RUN_PATH;
  options.context = 128;
  return options;
}

/// Builds `spec` with `weights` and checks the executable against the library on three prompts.
void checkAgainstLibrary(const spec::ModelSpec &spec, const train::TensorMap &weights,
                         const TempDir &dir, const std::string &binary) {
  llvm::Error err = build::buildExecutable(spec, weights, binary, runtimeOptions());
  ASSERT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
  ASSERT_TRUE(llvm::sys::fs::exists(binary + ".safetensors"));
  ASSERT_TRUE(llvm::sys::fs::can_execute(binary));

  for (auto [prompt, maxTokens] : {std::pair<std::string, int64_t>{"Hello, Nestor! 12+34=", 40},
                                   {"", 7},
                                   {"\xff\x01 bytes", 1}}) {
    SCOPED_TRACE("prompt '" + prompt + "', " + std::to_string(maxTokens) + " tokens");
    std::vector<int32_t> expected = libraryTokens(spec, weights, prompt, maxTokens);
    ASSERT_FALSE(expected.empty());
    RunResult tokens = runProgram(
        binary, {"--prompt", prompt, "--max-tokens", std::to_string(maxTokens), "--print-tokens"},
        dir.path.str().str());
    ASSERT_EQ(tokens.status, 0) << tokens.err;
    EXPECT_EQ(parseTokens(tokens.out), expected);
    // Text mode, with the weights found beside the executable by default.
    RunResult text =
        runProgram(binary, {"--prompt=" + prompt, "--max-tokens", std::to_string(maxTokens)},
                   dir.path.str().str());
    ASSERT_EQ(text.status, 0) << text.err;
    EXPECT_EQ(text.out, prompt + data::decodeBytes(expected) + "\n");
  }
  std::string prompt = "Hello, Nestor! 12+34=";
  std::vector<int32_t> expected = libraryTokens(spec, weights, prompt, 40);
  // auto runs on the CPU and says so with --stats; cuda fails, saying why.
  RunResult automatic =
      runProgram(binary, {"--prompt", prompt, "--max-tokens", "40", "--print-tokens", "--stats"},
                 dir.path.str().str());
  ASSERT_EQ(automatic.status, 0) << automatic.err;
  EXPECT_EQ(parseTokens(automatic.out), expected);
  EXPECT_NE(automatic.err.find("device: cpu"), std::string::npos) << automatic.err;
  EXPECT_NE(automatic.err.find("decode "), std::string::npos) << automatic.err;
  RunResult onGpu = runProgram(
      binary, {"--prompt", prompt, "--max-tokens", "4", "--device", "cuda"}, dir.path.str().str());
  EXPECT_EQ(onGpu.status, 1) << onGpu.err;
  EXPECT_NE(onGpu.err.find("no CUDA driver"), std::string::npos) << onGpu.err;
  EXPECT_EQ(onGpu.out, "");

  // Random weights still have to make the model do something position-dependent, or the
  // comparison above would be weak.
  EXPECT_GT(std::set<int32_t>(expected.begin(), expected.end()).size(), 2u);
}

TEST(BuildTest, HeterogeneousExecutableMatchesTheLibraryAndFailsCleanly) {
  TempDir dir;
  spec::ModelSpec spec = heterogeneousSpec();
  train::TensorMap weights = randomWeights(spec, 7);
  std::string binary = dir.file("hetero");
  checkAgainstLibrary(spec, weights, dir, binary);
  if (HasFatalFailure())
    return;
  std::string run = dir.path.str().str();

  // A weights file in which one tensor has another shape: the executable names it.
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
  EXPECT_NE(r.err.find("run past the"), std::string::npos) << r.err;
  std::string junk(8, '\0');
  junk[0] = 17;
  junk += "{not json at all}";
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(dir.file("junk.safetensors"), junk)));
  r = runProgram(binary, {"--prompt", "x", "--weights", dir.file("junk.safetensors")}, run);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("junk.safetensors"), std::string::npos) << r.err;

  // More tokens than the context the executable was built for: refused before decoding.
  r = runProgram(binary, {"--prompt", "x", "--max-tokens", "200"}, run);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("KV caches hold 128"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");

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
  // The bench mode decodes and reports a rate.
  r = runProgram(binary, {"--bench", "5"}, run);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;
}

TEST(BuildTest, TiedExecutableMatchesTheLibrary) {
  TempDir dir;
  spec::ModelSpec spec = tiedSpec();
  // Tied, the head favours the token just read; larger weights let the layers outweigh it.
  train::TensorMap weights = randomWeights(spec, 11, 0.5f);
  size_t read = weights.size();
  // A stray LM head (some exporters write one for tied models) that the program does not read.
  weights["lm_head.weight"] = {{256, 16}, std::vector<float>(256 * 16, 1.0f)};
  checkAgainstLibrary(spec, weights, dir, dir.file("tied"));
  // The shipped weights hold what the program reads and no more.
  auto shipped = ckpt::readSafetensors(dir.file("tied.safetensors"));
  ASSERT_TRUE(static_cast<bool>(shipped)) << llvm::toString(shipped.takeError());
  EXPECT_EQ(shipped->count("lm_head.weight"), 0u);
  EXPECT_EQ(shipped->size(), read);
}

/// The executable is the runtime, the program file and a trailer: the attached program reads
/// back as the program compiled in memory, the same program as a file (--program) gives the
/// same tokens, and an executable whose program is cut short or altered is refused, naming it.
TEST(BuildTest, TheAttachedProgramRoundTripsAndABrokenOneIsRefused) {
  TempDir dir;
  spec::ModelSpec spec = tiedSpec();
  train::TensorMap weights = randomWeights(spec, 5, 0.5f);
  std::string binary = dir.file("model"), run = dir.path.str().str();
  ASSERT_FALSE(static_cast<bool>(build::buildExecutable(spec, weights, binary, runtimeOptions())));

  auto attached = engine::readAttachedProgram(binary);
  ASSERT_TRUE(attached.ok()) << attached.status().message();
  ASSERT_TRUE(attached->has_value());
  program::Program inMemory = compiled(spec);
  // Program files are deterministic: the same program is the same bytes.
  EXPECT_EQ(engine::encodeProgram(**attached), engine::encodeProgram(inMemory));
  // The bare runtime carries none.
  auto bare = engine::readAttachedProgram(NESTOR_RUN_PATH);
  ASSERT_TRUE(bare.ok()) << bare.status().message();
  EXPECT_FALSE(bare->has_value());

  // The same program as a file, run by the bare runtime.
  std::string programFile = dir.file("model.nestorprog");
  ASSERT_FALSE(static_cast<bool>(engine::writeProgramFile(inMemory, programFile)));
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(dir.file("model.nestorprog.safetensors"),
                                                       readFile(binary + ".safetensors"))));
  RunResult a =
      runProgram(binary, {"--prompt", "abc", "--max-tokens", "12", "--print-tokens"}, run);
  RunResult b = runProgram(
      NESTOR_RUN_PATH,
      {"--program", programFile, "--prompt", "abc", "--max-tokens", "12", "--print-tokens"}, run);
  ASSERT_EQ(a.status, 0) << a.err;
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(parseTokens(a.out), libraryTokens(spec, weights, "abc", 12));

  std::string bytes = readFile(binary);
  std::string runtime = readFile(NESTOR_RUN_PATH);
  ASSERT_GT(bytes.size(), runtime.size() + 16);
  auto broken = [&](const std::string &name, const std::string &image) {
    std::string path = dir.file(name);
    EXPECT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(path, image)));
    EXPECT_FALSE(static_cast<bool>(llvm::sys::fs::setPermissions(path, llvm::sys::fs::all_all)));
    EXPECT_FALSE(static_cast<bool>(
        ckpt::writeFileAtomic(path + ".safetensors", readFile(binary + ".safetensors"))));
    return runProgram(path, {"--prompt", "abc", "--max-tokens", "3"}, run);
  };
  // Cut short: the trailer is gone, so there is no program.
  RunResult r = broken("cut", bytes.substr(0, bytes.size() - 40));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("carries no program"), std::string::npos) << r.err;
  // One byte of the program's payload altered: its checksum fails.
  std::string altered = bytes;
  altered[runtime.size() + 40] ^= 0x5a;
  r = broken("altered", altered);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("checksum"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("altered"), std::string::npos) << r.err;
  // A trailer that claims more bytes than the file has.
  std::string claims = bytes;
  claims[claims.size() - 16 + 5] = 0x7f;
  r = broken("claims", claims);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("truncated or altered"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");

  // An executable is not a runtime to build on.
  build::BuildOptions options = runtimeOptions();
  options.runtime = binary;
  llvm::Error err = build::buildExecutable(spec, weights, dir.file("twice"), options);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("carries a program already"), std::string::npos);
  EXPECT_FALSE(llvm::sys::fs::exists(dir.file("twice")));
}

TEST(BuildTest, RefusesElasticAndInvalidSpecs) {
  mlir::MLIRContext context;
  spec::ModelSpec elastic = tiedSpec();
  elastic.mutable_elastic()->add_budgets()->set_name("full");
  auto program = build::compileExecutableProgram(context, elastic);
  ASSERT_FALSE(static_cast<bool>(program));
  std::string message = llvm::toString(program.takeError());
  EXPECT_NE(message.find("elastic"), std::string::npos) << message;
  EXPECT_NE(message.find("nestor slice"), std::string::npos) << message;

  spec::ModelSpec invalid = heterogeneousSpec();
  invalid.mutable_architecture()->mutable_layer_overrides(3)->set_mamba_num_heads(3);
  program = build::compileExecutableProgram(context, invalid);
  ASSERT_FALSE(static_cast<bool>(program));
  message = llvm::toString(program.takeError());
  EXPECT_NE(message.find("layer_overrides[3].mamba_num_heads"), std::string::npos) << message;

  spec::ModelSpec small = tiedSpec();
  small.mutable_architecture()->set_vocab_size(200);
  program = build::compileExecutableProgram(context, small);
  ASSERT_FALSE(static_cast<bool>(program));
  message = llvm::toString(program.takeError());
  EXPECT_NE(message.find("vocab_size"), std::string::npos) << message;

  build::BuildOptions none;
  none.context = 0;
  program = build::compileExecutableProgram(context, tiedSpec(), none);
  ASSERT_FALSE(static_cast<bool>(program));
  message = llvm::toString(program.takeError());
  EXPECT_NE(message.find("context"), std::string::npos) << message;
}

TEST(BuildTest, BadWeightsOrRuntimeLeaveNoExecutable) {
  TempDir dir;
  spec::ModelSpec spec = tiedSpec();
  std::string binary = dir.file("model");

  train::TensorMap weights = randomWeights(spec, 3);
  weights["backbone.layers.1.mixer.A_log"].shape = {1, 3};
  llvm::Error err = build::buildExecutable(spec, weights, binary, runtimeOptions());
  ASSERT_TRUE(static_cast<bool>(err));
  std::string message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("backbone.layers.1.mixer.A_log"), std::string::npos) << message;

  weights = randomWeights(spec, 3);
  weights.erase("backbone.norm_f.weight");
  err = build::buildExecutable(spec, weights, binary, runtimeOptions());
  ASSERT_TRUE(static_cast<bool>(err));
  message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("backbone.norm_f.weight"), std::string::npos) << message;

  build::BuildOptions options = runtimeOptions();
  options.runtime = dir.file("no-such-runtime");
  err = build::buildExecutable(spec, randomWeights(spec, 3), binary, options);
  ASSERT_TRUE(static_cast<bool>(err));
  message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("no-such-runtime"), std::string::npos) << message;

  // Nothing was left behind: no executable, no weights, no temporary.
  std::error_code ec;
  int entries = 0;
  for (llvm::sys::fs::directory_iterator it(dir.path, ec), end; it != end && !ec; it.increment(ec))
    ++entries;
  EXPECT_EQ(entries, 0);
}

/// An output path is replaced only when it holds an executable `nestor build` wrote and --force
/// asks for it; a user's file there, a stray weights file, or the runtime itself is refused,
/// and left as it was.
TEST(BuildTest, ReplacesOnlyItsOwnExecutableAndOnlyWithForce) {
  TempDir dir;
  spec::ModelSpec spec = tiedSpec();
  train::TensorMap weights = randomWeights(spec, 3);
  std::string binary = dir.file("model");
  build::BuildOptions options = runtimeOptions();
  ASSERT_FALSE(static_cast<bool>(build::buildExecutable(spec, weights, binary, options)));
  auto before = ckpt::readFileBytes(binary + ".safetensors");
  ASSERT_TRUE(static_cast<bool>(before));

  llvm::Error err = build::buildExecutable(spec, randomWeights(spec, 4), binary, options);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("pass --force to replace it"), std::string::npos);
  auto after = ckpt::readFileBytes(binary + ".safetensors");
  ASSERT_TRUE(static_cast<bool>(after));
  EXPECT_EQ(*after, *before) << "a refused build changed the weights";
  options.force = true;
  ASSERT_FALSE(
      static_cast<bool>(build::buildExecutable(spec, randomWeights(spec, 4), binary, options)));
  after = ckpt::readFileBytes(binary + ".safetensors");
  ASSERT_TRUE(static_cast<bool>(after));
  EXPECT_NE(*after, *before) << "--force replaces the weights";

  // Not Nestor's: refused, --force or not.
  std::string notes = dir.file("notes");
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(notes, "mine")));
  err = build::buildExecutable(spec, weights, notes, options);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_EQ(llvm::toString(std::move(err)),
            "-o: " + notes +
                " exists and is not an executable `nestor build` wrote (nothing was "
                "written)");
  auto kept = ckpt::readFileBytes(notes);
  ASSERT_TRUE(static_cast<bool>(kept));
  EXPECT_EQ(*kept, "mine");
  ASSERT_FALSE(static_cast<bool>(ckpt::writeFileAtomic(dir.file("lone.safetensors"), "mine")));
  err = build::buildExecutable(spec, weights, dir.file("lone"), options);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("without the executable"), std::string::npos);
  EXPECT_FALSE(llvm::sys::fs::exists(dir.file("lone")));
  err = build::buildExecutable(spec, weights, options.runtime, options);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("is the input"), std::string::npos);
}

} // namespace
