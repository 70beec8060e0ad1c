//===- nestor-run.cpp - The runtime as an executable ------------------------===//
//
// Runs a program's compiled inference entry points (engine::ProgramDecoder: the prompt through
// `@prefill_<C>`, then `@decode_step` token by token) over float32 safetensors weights: greedy
// text generation with the byte tokenizer. The program is the one attached to this
// executable (what `nestor build` writes: this executable's bytes, the program, a trailer;
// engine/program/Program.h) or the file --program names. No MLIR, no LLVM: the program decided
// everything static; this only loads and executes it.
//
//   nestor-run [--program FILE] --prompt TEXT [--max-tokens N] [--weights PATH] [--device D]
//              [--print-tokens] [--stats] [--bench N]
//
// Exit status: 0 done, 2 bad usage, 1 anything else (a missing or corrupt program or weights
// file, weights that do not fit the program, a context that is too short).
//
//===----------------------------------------------------------------------===//
#include "engine/decode/ProgramDecoder.h"
#include "engine/program/Program.h"
#include "engine/weights/Safetensors.h"
#include "nestor/ByteTokenizer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <omp.h>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nestor;

namespace {

/// Bad command line: exit status 2 and a pointer to --help.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// Anything else that stops the run: exit status 1.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string prompt, weights, program;
  bool hasPrompt = false, printTokens = false, stats = false, help = false;
  int64_t maxTokens = 64;
  int64_t bench = 0;           // --bench N: time N decode steps instead of generating
  std::string device = "auto"; // auto, cpu, cuda
};

/// This executable's path, from the kernel (argv[0] need not name the file).
std::string selfPath(const char *argv0) {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec)
    return exe.string();
  return argv0 ? argv0 : "";
}

int64_t positiveInteger(const std::string &flag, const std::string &text) {
  char *end = nullptr;
  errno = 0;
  long long n = text.empty() ? 0 : std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE || n <= 0)
    throw UsageError(flag + ": '" + text + "' is not a positive integer");
  return n;
}

Options parseOptions(int argc, char **argv, const std::string &self) {
  Options opts;
  bool weightsGiven = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool inlineValue = false;
    if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
      value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      inlineValue = true;
    }
    auto takeValue = [&]() {
      if (inlineValue)
        return value;
      if (i + 1 >= argc)
        throw UsageError(arg + " needs a value");
      return std::string(argv[++i]);
    };
    auto noValue = [&]() {
      if (inlineValue)
        throw UsageError(arg + " takes no value");
    };
    if (arg == "--help" || arg == "-h") {
      noValue();
      opts.help = true;
    } else if (arg == "--prompt") {
      opts.prompt = takeValue();
      opts.hasPrompt = true;
    } else if (arg == "--max-tokens") {
      opts.maxTokens = positiveInteger(arg, takeValue());
    } else if (arg == "--weights") {
      opts.weights = takeValue();
      weightsGiven = true;
    } else if (arg == "--program") {
      opts.program = takeValue();
    } else if (arg == "--print-tokens") {
      noValue();
      opts.printTokens = true;
    } else if (arg == "--stats") {
      noValue();
      opts.stats = true;
    } else if (arg == "--bench") {
      opts.bench = positiveInteger(arg, takeValue());
    } else if (arg == "--device") {
      opts.device = takeValue();
      if (opts.device != "auto" && opts.device != "cpu" && opts.device != "cuda")
        throw UsageError("--device: '" + opts.device + "' is not auto, cpu or cuda");
    } else {
      throw UsageError("unknown argument '" + std::string(argv[i]) + "'");
    }
  }
  if (!opts.help && !opts.hasPrompt && opts.bench == 0)
    throw UsageError("--prompt is required");
  if (!weightsGiven)
    opts.weights = (opts.program.empty() ? self : opts.program) + ".safetensors";
  return opts;
}

void printUsage(const std::string &name, const std::string &description) {
  std::printf("%s: %s\n\n"
              "Usage: %s --prompt TEXT [--max-tokens N] [--weights PATH] [--device D]\n"
              "          [--program FILE] [--print-tokens] [--stats] [--bench N]\n\n"
              "Continues TEXT greedily with the byte tokenizer (BOS, the prompt's bytes) until\n"
              "end of text or N tokens, and prints the prompt and the continuation.\n\n"
              "Options:\n"
              "  --prompt TEXT    the text to continue (required)\n"
              "  --max-tokens N   most tokens to generate (default 64)\n"
              "  --weights PATH   the float32 safetensors weights (default: the program's file\n"
              "                   + \".safetensors\", this executable's when it carries one)\n"
              "  --program FILE   run this program file (nestor compile --emit program) instead\n"
              "                   of the one attached to this executable\n"
              "  --device D       auto (default), cpu, or cuda; this runtime has no CUDA driver\n"
              "                   yet, so auto runs on the CPU and cuda fails\n"
              "  --print-tokens   print the generated token ids, space separated, instead\n"
              "  --stats          report prompt and decode speed on stderr\n"
              "  --bench N        time N decode steps after a fixed 16-token prompt (the\n"
              "                   sequence `nestor bench --decode` feeds), best of three, and\n"
              "                   print tokens/s\n"
              "  --help           this text\n",
              name.c_str(), description.c_str(), name.c_str());
}

void writeStdout(const std::string &text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    throw Failure("cannot write the output: " + std::string(std::strerror(errno)));
}

template <typename T> T take(engine::Result<T> r) {
  if (!r.ok())
    throw Failure(r.status().message());
  return std::move(*r);
}

program::Program loadProgram(const Options &opts, const std::string &self) {
  if (!opts.program.empty())
    return take(engine::readProgramFile(opts.program));
  std::optional<program::Program> attached = take(engine::readAttachedProgram(self));
  if (!attached)
    throw Failure(self + " carries no program (nestor build attaches one; `strip` removes it): "
                         "name a program file with --program");
  return std::move(*attached);
}

/// Tokens/s of `steps` decode steps after the bench prompt: the best of three passes of the
/// sequence `nestor bench --decode` feeds (ProgramDecoder::benchPass).
double benchRate(engine::ProgramDecoder &decoder, int64_t steps) {
  double best = 0;
  for (int pass = 0; pass < 3; ++pass)
    best = std::max(best, take(decoder.benchPass(steps)));
  return best;
}

int run(int argc, char **argv, const std::string &name) {
  std::string self = selfPath(argc > 0 ? argv[0] : nullptr);
  Options opts = parseOptions(argc, argv, self);
  if (opts.help) {
    std::string description = "runs a compiled Nestor program";
    if (opts.program.empty()) {
      auto attached = engine::readAttachedProgram(self);
      if (attached.ok() && *attached && !(*attached)->description().empty())
        description = (*attached)->description();
    }
    printUsage(name, description);
    return 0;
  }
  if (opts.device == "cuda")
    throw Failure("--device cuda: this runtime has no CUDA driver yet (the programs it runs "
                  "carry CPU kernels); use --device cpu");

  program::Program program = loadProgram(opts, self);
  std::string where = opts.program.empty() ? self : opts.program;
  std::vector<const program::Function *> entries = engine::inferenceFunctions(program);
  const program::Function *fn = entries.front();
  if (!fn)
    throw Failure(where + ": the program has no @decode_step entry point (it was not compiled "
                          "for inference: nestor build, or compileDecodeStep)");
  if (program.target() != "cpu")
    throw Failure(where + ": the program targets '" + program.target() +
                  "'; this runtime runs CPU programs");
  train::TensorMap weights = take(engine::readSafetensorsFile(opts.weights));
  // The weights file is exactly the program's parameters (nestor build writes it so): anything
  // else, or a NaN or infinity, is refused before the first token.
  std::set<std::string> names;
  for (const program::Function *entry : entries)
    for (const engine::Parameter &p : engine::parameters(*entry))
      names.insert(p.name);
  for (const auto &[name, tensor] : weights) {
    if (!names.count(name))
      throw Failure(opts.weights + ": tensor '" + name + "' is not a weight of the program");
    if (std::optional<std::string> problem = engine::nonFiniteProblem(name, tensor))
      throw Failure(opts.weights + ": " + *problem);
  }
  auto decoderOr = engine::ProgramDecoder::create(entries, weights);
  if (!decoderOr.ok())
    throw Failure(opts.weights + ": " + decoderOr.status().message());
  engine::ProgramDecoder &decoder = **decoderOr;
  if (decoder.vocabSize() < data::kByteVocabSize)
    throw Failure(where +
                  ": the byte tokenizer needs a vocabulary of 256 tokens; the program's "
                  "has " +
                  std::to_string(decoder.vocabSize()));
  if (opts.stats)
    std::fprintf(stderr, "device: cpu (%d OpenMP threads)\n", omp_get_max_threads());

  if (opts.bench > 0) {
    constexpr int kBenchPrompt = engine::ProgramDecoder::kBenchPrompt;
    if (decoder.context() >= 0 && kBenchPrompt + opts.bench > decoder.context())
      throw Failure("--bench " + std::to_string(opts.bench) + ": " + std::to_string(kBenchPrompt) +
                    " prompt tokens and " + std::to_string(opts.bench) +
                    " steps exceed the program's context of " + std::to_string(decoder.context()) +
                    " tokens");
    writeStdout("decode " + std::to_string(benchRate(decoder, opts.bench)) + " tokens/s\n");
    return 0;
  }

  std::vector<int32_t> prompt = data::encodeBytes(opts.prompt);
  prompt.insert(prompt.begin(), data::kBos);
  // Every prompt token and every generated one but the last is appended.
  int64_t needed = static_cast<int64_t>(prompt.size()) + opts.maxTokens - 1;
  if (decoder.context() >= 0 && needed > decoder.context())
    throw Failure("the prompt (" + std::to_string(prompt.size()) + " tokens with BOS) and " +
                  std::to_string(opts.maxTokens) + " new tokens need a context of " +
                  std::to_string(needed) + "; this program's KV caches hold " +
                  std::to_string(decoder.context()) +
                  " (nestor build --context sets it); ask for fewer tokens");
  engine::ProgramDecoder::GreedyTimes times;
  std::vector<int32_t> out = take(decoder.greedy(prompt, opts.maxTokens, data::kEos, &times));

  if (opts.printTokens) {
    std::string line;
    for (size_t i = 0; i < out.size(); ++i)
      line += (i ? " " : "") + std::to_string(out[i]);
    writeStdout(line + "\n");
  } else {
    writeStdout(opts.prompt + data::decodeBytes(out) + "\n");
  }
  if (opts.stats) {
    // The last token is chosen but not fed back; count only the steps that ran.
    size_t steps = out.empty() ? 0 : out.size() - 1;
    std::fprintf(stderr,
                 "prompt %zu tokens in %.1f ms; generated %zu tokens, decode %.1f tokens/s\n",
                 prompt.size(), 1e3 * times.prefill, out.size(),
                 steps > 0 && times.decode > 0 ? double(steps) / times.decode : 0.0);
  }
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  std::string name = argc > 0 && argv[0] ? argv[0] : "nestor-run";
  try {
    return run(argc, argv, name);
  } catch (const UsageError &e) {
    std::fprintf(stderr, "%s: error: %s\nTry '%s --help'.\n", name.c_str(), e.what(), name.c_str());
    return 2;
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "%s: error: out of memory\n", name.c_str());
    return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s: error: %s\n", name.c_str(), e.what());
    return 1;
  }
}
