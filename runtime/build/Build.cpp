//===- Build.cpp - Standalone inference executables -----------------------===//
//
// The generator writes very little: the embedded runtime holds every kernel as a template
// over its sizes, and the generated part only names the instantiations and the order of the
// layers. So the generated code is easy to read and diff, and the C++ compiler does the
// specialisation (constant loop bounds, fixed buffers, unrolled remainders).
//
// The compiler writes the executable to a temporary file beside `outPath`, which is renamed
// into place only once the compile succeeded and the weights are written: a failed or
// interrupted build never leaves a half-written program where a deployment would run it.
//
//===----------------------------------------------------------------------===//
#include "nestor/Build.h"

#include "nestor/Checkpoint.h"
#include "nestor/ParamCount.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <fcntl.h>
#include <unistd.h>

#ifdef NESTOR_HAVE_CUDA
#include "lib/codegen/cuda/Nvrtc.h"
#endif

#include <set>

namespace nestor::embedded {
extern const char standalone_runtime[];
extern const std::size_t standalone_runtime_size;
extern const char standalone_device[];
extern const std::size_t standalone_device_size;
} // namespace nestor::embedded

using namespace nestor;
using namespace nestor::build;

namespace {

/// The sizes of one layer of the dense model.
struct LayerPlan {
  spec::LayerKind kind;
  int64_t ffn = 0, attnHeads = 0, mambaHeads = 0, mambaHeadDim = 0;
};

/// Everything the generated program is specialised to.
struct ModelPlan {
  std::string name, pattern;
  spec::FixedSizes fixed; // vocabulary, Mamba groups and state, conv, KV heads, head_dim, tying
  int64_t hidden = 0;
  double eps = 1e-5;
  std::vector<LayerPlan> layers;

  bool has(spec::LayerKind kind) const {
    return llvm::any_of(layers, [&](const LayerPlan &l) { return l.kind == kind; });
  }
};

/// How the spec is named in errors and in the generated program.
std::string specLabel(const spec::ModelSpec &dense) {
  return dense.name().empty() ? std::string("the dense spec") : "spec '" + dense.name() + "'";
}

llvm::Expected<ModelPlan> planModel(const spec::ModelSpec &dense) {
  std::string label = specLabel(dense);
  if (dense.has_elastic())
    return llvm::createStringError(
        "build: %s has an elastic section; a standalone executable serves one dense model "
        "(a budget cut out of the run: `nestor build RUN --budget NAME` slices it first, "
        "`nestor slice RUN --budget NAME --out DIR` writes its dense spec and weights)",
        label.c_str());
  // The data section names training files relative to a spec file this build may not have;
  // they play no part in inference.
  spec::ModelSpec checked = dense;
  checked.mutable_data()->clear_text_files();
  if (llvm::Error err = spec::validateSpec(checked, label))
    return llvm::createStringError("build: " + llvm::toString(std::move(err)));
  if (dense.data().tokenizer() != spec::BYTE &&
      dense.data().tokenizer() != spec::TOKENIZER_UNSPECIFIED)
    return llvm::createStringError("build: %s: only the byte tokenizer is supported",
                                   label.c_str());

  const spec::Architecture &a = dense.architecture();
  ModelPlan plan;
  plan.name = dense.name();
  plan.pattern = a.hybrid_override_pattern();
  plan.fixed = spec::fixedSizes(dense); // the pattern validated above
  plan.hidden = a.hidden_size();
  plan.eps = spec::layerNormEpsilon(a);
  spec::ModelSizes<double> sizes = spec::parentSizes(dense);
  for (size_t i = 0; i < plan.fixed.layers.size(); ++i) {
    const spec::LayerSizes<double> &s = sizes.layers[i];
    LayerPlan l;
    l.kind = plan.fixed.layers[i];
    l.ffn = static_cast<int64_t>(s.ffn);
    l.attnHeads = static_cast<int64_t>(s.attnHeads);
    l.mambaHeads = static_cast<int64_t>(s.mambaHeads);
    l.mambaHeadDim = static_cast<int64_t>(s.mambaHeadDim);
    // validateSpec checks the architecture's sizes; an override of 0 keeps them, so only
    // these products are left to check.
    bool positive = true;
    switch (l.kind) {
    case spec::LayerKind::MLP:
      positive = l.ffn > 0;
      break;
    case spec::LayerKind::Attention:
      positive = l.attnHeads > 0;
      break;
    case spec::LayerKind::Mamba:
      positive = l.mambaHeads > 0 && l.mambaHeadDim > 0;
      break;
    }
    if (!positive)
      return llvm::createStringError("build: %s: layer %zu (%s) has a size of 0", label.c_str(), i,
                                     spec::layerKindName(l.kind).str().c_str());
    plan.layers.push_back(l);
  }
  return plan;
}

std::vector<TensorShape> planTensors(const ModelPlan &p) {
  std::vector<TensorShape> out;
  int64_t d = p.hidden, gn = p.fixed.mambaGroups * p.fixed.ssmStateSize;
  out.push_back({"backbone.embeddings.weight", {p.fixed.vocabSize, d}});
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const LayerPlan &l = p.layers[i];
    auto add = [&](const char *suffix, std::vector<int64_t> shape) {
      out.push_back({llvm::formatv("backbone.layers.{0}.{1}", i, suffix).str(), std::move(shape)});
    };
    add("norm.weight", {d});
    switch (l.kind) {
    case spec::LayerKind::MLP:
      add("mixer.up_proj.weight", {l.ffn, d});
      add("mixer.down_proj.weight", {d, l.ffn});
      break;
    case spec::LayerKind::Attention:
      add("mixer.q_proj.weight", {l.attnHeads * p.fixed.attnHeadDim, d});
      add("mixer.k_proj.weight", {p.fixed.numKeyValueHeads * p.fixed.attnHeadDim, d});
      add("mixer.v_proj.weight", {p.fixed.numKeyValueHeads * p.fixed.attnHeadDim, d});
      add("mixer.o_proj.weight", {d, l.attnHeads * p.fixed.attnHeadDim});
      break;
    case spec::LayerKind::Mamba: {
      int64_t hp = l.mambaHeads * l.mambaHeadDim;
      add("mixer.in_proj.weight", {2 * hp + 2 * gn + l.mambaHeads, d});
      add("mixer.conv1d.weight", {hp + 2 * gn, p.fixed.convKernel});
      add("mixer.conv1d.bias", {hp + 2 * gn});
      add("mixer.dt_bias", {l.mambaHeads});
      add("mixer.A_log", {l.mambaHeads});
      add("mixer.D", {l.mambaHeads});
      add("mixer.norm.weight", {hp});
      add("mixer.out_proj.weight", {d, hp});
      break;
    }
    }
  }
  out.push_back({"backbone.norm_f.weight", {d}});
  if (!p.fixed.tiedEmbeddings)
    out.push_back({"lm_head.weight", {p.fixed.vocabSize, d}});
  return out;
}

/// `text` as a C++ string literal. Octal escapes have at most three digits, so unlike \x
/// they cannot swallow the character after them.
std::string cString(llvm::StringRef text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\')
      out += {'\\', static_cast<char>(c)};
    else if (c >= 0x20 && c < 0x7f && c != '?') // '?' would risk a trigraph in old modes
      out += static_cast<char>(c);
    else {
      char octal[8];
      std::snprintf(octal, sizeof(octal), "\\%03o", static_cast<unsigned>(c));
      out += octal;
    }
  }
  return out + "\"";
}

/// A double that reads back as the same double.
std::string exactDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos)
    s += ".0";
  return s;
}

std::string describe(const ModelPlan &p) {
  // The name goes into comments and a literal: escaped, a newline in it cannot end either.
  return llvm::formatv("the dense model {0}: pattern {1} ({2} layers), hidden {3}, vocab {4}, "
                       "{5} embeddings",
                       cString(p.name), p.pattern, p.layers.size(), p.hidden, p.fixed.vocabSize,
                       p.fixed.tiedEmbeddings ? "tied" : "untied")
      .str();
}

/// The name prefix of layer `l`'s GPU kernels: its kind and the sizes that vary between
/// layers (the model-wide ones are the same for all). Equal tags are one set of kernels.
std::string kernelTag(const LayerPlan &l) {
  switch (l.kind) {
  case spec::LayerKind::Mamba:
    return llvm::formatv("mamba_{0}_{1}", l.mambaHeads, l.mambaHeadDim).str();
  case spec::LayerKind::Attention:
    return llvm::formatv("attention_{0}", l.attnHeads).str();
  case spec::LayerKind::MLP:
    return llvm::formatv("mlp_{0}", l.ffn).str();
  }
  return "";
}

/// The device program after the device header: one NESTOR_SD_* line per distinct layer type.
std::string emitDeviceKernels(const ModelPlan &p) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "NESTOR_SD_MODEL(" << p.fixed.vocabSize << ", " << p.hidden << ")\n";
  std::set<std::string> seen;
  for (const LayerPlan &l : p.layers) {
    std::string tag = kernelTag(l);
    if (!seen.insert(tag).second)
      continue;
    switch (l.kind) {
    case spec::LayerKind::Mamba:
      os << llvm::formatv("NESTOR_SD_MAMBA({0}, {1}, {2}, {3}, {4}, {5}, {6})\n", tag, p.hidden,
                          l.mambaHeads, l.mambaHeadDim, p.fixed.mambaGroups, p.fixed.ssmStateSize,
                          p.fixed.convKernel);
      break;
    case spec::LayerKind::Attention:
      os << llvm::formatv("NESTOR_SD_ATTENTION({0}, {1}, {2}, {3}, {4})\n", tag, p.hidden,
                          l.attnHeads, p.fixed.numKeyValueHeads, p.fixed.attnHeadDim);
      break;
    case spec::LayerKind::MLP:
      os << llvm::formatv("NESTOR_SD_MLP({0}, {1}, {2})\n", tag, p.hidden, l.ffn);
      break;
    }
  }
  return text;
}

llvm::StringRef deviceHeader() {
  return llvm::StringRef(embedded::standalone_device, embedded::standalone_device_size);
}

constexpr const char *kDeviceHeaderName = "nestor_standalone_device.cuh";

/// The PTX of the model's GPU kernels (`kernels`, from emitDeviceKernels); empty without CUDA.
llvm::Expected<std::string> compileDeviceKernels(llvm::StringRef kernels,
                                                 const BuildOptions &options) {
  if (!options.cuda || !cudaAvailable())
    return std::string();
#ifdef NESTOR_HAVE_CUDA
  cuda::CompileRequest request;
  request.name = "model.cu";
  request.source = "#include \"" + std::string(kDeviceHeaderName) + "\"\n\n" + kernels.str();
  request.headers = {{kDeviceHeaderName, deviceHeader().str()}};
  request.arch = options.cudaArch;
  request.output = cuda::Output::PTX;
  auto compiled = cuda::compile(request);
  if (!compiled)
    return llvm::createStringError("build: compiling the GPU kernels for %s: %s",
                                   options.cudaArch.c_str(),
                                   llvm::toString(compiled.takeError()).c_str());
  return std::move(compiled->image);
#else
  return std::string();
#endif
}

/// `text` as adjacent string literals, one per line of it.
std::string cStringLines(llvm::StringRef text, llvm::StringRef indent) {
  std::string out;
  while (!text.empty()) {
    auto [line, rest] = text.split('\n');
    bool newline = text.size() > line.size();
    out += indent.str() + cString(newline ? (line + "\n").str() : line.str()) + "\n";
    text = rest;
  }
  return out;
}

/// The GPU twin of the CPU model: the same layers as rt::gpu::Layer<LayerN>, the embedded
/// PTX (or null), and for the host emulation the device header and `kernels` as host code.
std::string emitGpuModel(const ModelPlan &p, llvm::StringRef kernels, llvm::StringRef ptx,
                         llvm::StringRef arch) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "namespace nestor::generated {\n\n"
     << "struct GpuModel {\n"
     << "  rt::gpu::Context context;\n"
     << "  rt::gpu::Ends<kVocab, kHidden, kTiedEmbeddings> ends;\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "  rt::gpu::Layer<Layer" << i << "> layer" << i << ";\n";
  os << "\n  void load(rt::gpu::Gpu &gpu, rt::WeightsFile &file) {\n"
     << "    context.bind(gpu, kHidden);\n"
     << "    ends.load(context, file);\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "    layer" << i << ".load(context, file, " << i << ", \"" << kernelTag(p.layers[i])
       << "\");\n";
  os << "  }\n\n"
     << "  void start(std::size_t tokens) {\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "    layer" << i << ".reserve(context, tokens);\n"
       << "    layer" << i << ".reset(context);\n";
  os << "  }\n\n"
     << "  void advance(std::int32_t token) {\n"
     << "    ends.embed(context, token);\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "    layer" << i << ".step(context, kEpsilon);\n";
  os << "  }\n\n"
     << "  std::int32_t next(std::int32_t token) {\n"
     << "    advance(token);\n"
     << "    return ends.next(context, kEpsilon);\n"
     << "  }\n"
     << "};\n\n";
  if (ptx.empty()) {
    os << "// Built without GPU kernels (--no-cuda, or a Nestor without the CUDA toolkit).\n"
       << "constexpr const char *kCudaModule = nullptr;\n";
  } else {
    os << "// The GPU kernels (the NESTOR_SD_* lines below, on the device header) as PTX for "
       << arch << ",\n// compiled by NVRTC; the driver JIT-compiles it for the GPU it runs on.\n"
       << "constexpr const char *kCudaModule =\n"
       << cStringLines(ptx, "    ") << "    ;\n";
  }
  os << "\n} // namespace nestor::generated\n\n"
     << "// Under the CUDA host emulation (tests) the kernels are compiled into the program.\n"
     << "#ifdef NESTOR_HOST_EMULATION\n"
     << deviceHeader() << "\n"
     << kernels << "#endif\n\n";
  return text;
}

std::string emitModel(const ModelPlan &p) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << "namespace nestor::generated {\n\n"
     << "namespace rt = nestor::standalone;\n\n"
     << "constexpr std::size_t kVocab = " << p.fixed.vocabSize << ";\n"
     << "constexpr std::size_t kHidden = " << p.hidden << ";\n"
     << "constexpr double kEpsilon = " << exactDouble(p.eps) << ";\n"
     << "constexpr bool kTiedEmbeddings = " << (p.fixed.tiedEmbeddings ? "true" : "false") << ";\n";
  if (p.has(spec::LayerKind::Mamba))
    os << "// Mamba2: G groups, N state, K conv taps.\n"
       << "constexpr std::size_t kMambaGroups = " << p.fixed.mambaGroups << ";\n"
       << "constexpr std::size_t kSsmState = " << p.fixed.ssmStateSize << ";\n"
       << "constexpr std::size_t kConvKernel = " << p.fixed.convKernel << ";\n";
  if (p.has(spec::LayerKind::Attention))
    os << "// Attention: KV heads, channels per head.\n"
       << "constexpr std::size_t kKeyValueHeads = " << p.fixed.numKeyValueHeads << ";\n"
       << "constexpr std::size_t kHeadDim = " << p.fixed.attnHeadDim << ";\n";
  os << "\n";
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const LayerPlan &l = p.layers[i];
    os << "using Layer" << i << " = ";
    switch (l.kind) {
    case spec::LayerKind::Mamba:
      os << "rt::MambaLayer<kHidden, /*H=*/" << l.mambaHeads << ", /*P=*/" << l.mambaHeadDim
         << ", kMambaGroups, kSsmState, kConvKernel>;\n";
      break;
    case spec::LayerKind::Attention:
      os << "rt::AttentionLayer<kHidden, /*NH=*/" << l.attnHeads
         << ", kKeyValueHeads, kHeadDim>;\n";
      break;
    case spec::LayerKind::MLP:
      os << "rt::MlpLayer<kHidden, /*F=*/" << l.ffn << ">;\n";
      break;
    }
  }
  os << "\nstruct Model {\n"
     << "  static constexpr std::size_t kVocabSize = kVocab;\n"
     << "  static constexpr const char *kDescription =\n"
     << "      " << cString("greedy text generation with " + describe(p)) << ";\n\n"
     << "  rt::Embedding<kVocab, kHidden> embedding;\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "  Layer" << i << " layer" << i << ";\n";
  os << "  rt::LmHead<kVocab, kHidden, kTiedEmbeddings> head;\n"
     << "  std::array<float, kHidden> hidden{};\n\n"
     << "  void load(rt::WeightsFile &file) {\n"
     << "    embedding.load(file);\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "    layer" << i << ".load(file, " << i << ");\n";
  os << "    head.load(file, embedding);\n"
     << "  }\n\n"
     << "  void reset() {\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "    layer" << i << ".reset();\n";
  os << "  }\n\n"
     << "  /// Appends `token`; returns the next-token logits [kVocab].\n"
     << "  const float *step(std::int32_t token) {\n"
     << "    embedding.lookup(token, hidden.data());\n";
  for (size_t i = 0; i < p.layers.size(); ++i)
    os << "    layer" << i << ".step(hidden.data(), kEpsilon);\n";
  os << "    return head.apply(hidden.data(), kEpsilon);\n"
     << "  }\n"
     << "};\n\n"
     << "} // namespace nestor::generated\n\n";
  return text;
}

/// The compiler command: the program and the arguments that come before ours.
llvm::Expected<std::vector<std::string>> compilerCommand(const BuildOptions &options) {
  std::vector<std::string> cmd;
  if (!options.compiler.empty()) {
    cmd.push_back(options.compiler);
  } else if (std::optional<std::string> env = llvm::sys::Process::GetEnv("CXX");
             env && !llvm::StringRef(*env).trim().empty()) {
    llvm::SmallVector<llvm::StringRef, 4> parts;
    llvm::SplitString(*env, parts);
    for (llvm::StringRef part : parts)
      cmd.push_back(part.str());
  } else {
    cmd.push_back("c++");
  }
  if (!llvm::StringRef(cmd[0]).contains('/')) {
    llvm::ErrorOr<std::string> found = llvm::sys::findProgramByName(cmd[0]);
    if (!found)
      return llvm::createStringError("build: the C++ compiler '%s' is not on PATH (set $CXX or "
                                     "pass a compiler)",
                                     cmd[0].c_str());
    cmd[0] = *found;
  }
  return cmd;
}

/// Checks that `weights` hold every tensor the program reads with its shape; fills `subset`
/// with them when `weights` hold more (an LM head a tied model ignores, say).
llvm::Error checkWeights(const std::vector<TensorShape> &expected, const train::TensorMap &weights,
                         train::TensorMap &subset) {
  for (const TensorShape &e : expected) {
    auto it = weights.find(e.name);
    if (it == weights.end())
      return llvm::createStringError("build: the weights have no tensor '%s' (shape %s)",
                                     e.name.c_str(), ckpt::shapeString(e.shape).c_str());
    const train::Tensor &t = it->second;
    int64_t count = 1;
    for (int64_t s : e.shape)
      count *= s;
    if (t.shape != e.shape || static_cast<int64_t>(t.data.size()) != count)
      return llvm::createStringError(
          "build: the weights' '%s' has shape %s (%zu values), the model expects %s",
          e.name.c_str(), ckpt::shapeString(t.shape).c_str(), t.data.size(),
          ckpt::shapeString(e.shape).c_str());
  }
  if (weights.size() != expected.size())
    for (const TensorShape &e : expected)
      subset.emplace(e.name, weights.at(e.name));
  return llvm::Error::success();
}

/// Flushes a file the compiler wrote to disk before it is renamed into place.
void syncFile(llvm::StringRef path) {
  int fd = ::open(path.str().c_str(), O_RDONLY);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
}

std::string readLog(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return "";
  llvm::StringRef text = (*buffer)->getBuffer().rtrim();
  // The first errors explain the rest; a long template backtrace would bury the message.
  constexpr size_t kMaxLog = 8000;
  if (text.size() > kMaxLog)
    return (text.take_front(kMaxLog) + "\n[... " + llvm::Twine(text.size() - kMaxLog) +
            " more bytes of compiler output]")
        .str();
  return text.str();
}

} // namespace

llvm::Expected<std::vector<TensorShape>>
nestor::build::standaloneTensors(const spec::ModelSpec &dense) {
  auto plan = planModel(dense);
  if (!plan)
    return plan.takeError();
  return planTensors(*plan);
}

bool nestor::build::cudaAvailable() {
#ifdef NESTOR_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

llvm::Expected<std::string> nestor::build::emitStandaloneSource(const spec::ModelSpec &dense,
                                                                const BuildOptions &options) {
  auto plan = planModel(dense);
  if (!plan)
    return plan.takeError();
  std::string kernels = emitDeviceKernels(*plan);
  auto ptx = compileDeviceKernels(kernels, options);
  if (!ptx)
    return ptx.takeError();
  std::string source;
  llvm::raw_string_ostream os(source);
  os << "// Generated by `nestor build` for " << describe(*plan) << ".\n"
     << "// Do not edit: regenerate it with `nestor build`. The fixed runtime\n"
     << "// (runtime/build/standalone/nestor_standalone.h) comes first, then the model's\n"
     << "// sizes and one layer type per layer, instantiated with that layer's sizes.\n\n"
     << llvm::StringRef(embedded::standalone_runtime, embedded::standalone_runtime_size)
     << "\n// ===== The model =====\n\n"
     << emitModel(*plan) << "// ===== The model on a GPU =====\n\n"
     << emitGpuModel(*plan, kernels, *ptx, options.cudaArch)
     << "int main(int argc, char **argv) {\n"
     << "  namespace g = nestor::generated;\n"
     << "  return nestor::standalone::runMain<g::Model, g::GpuModel>(argc, argv, g::kCudaModule);\n"
     << "}\n";
  return source;
}

llvm::Error nestor::build::buildBinary(const spec::ModelSpec &dense,
                                       const train::TensorMap &weights, const std::string &outPath,
                                       const BuildOptions &options) {
  auto source = emitStandaloneSource(dense, options);
  if (!source)
    return source.takeError();
  auto expected = standaloneTensors(dense);
  if (!expected)
    return expected.takeError();
  // The shipped file holds what the program reads and no more; no copy when that is all.
  train::TensorMap subset;
  if (llvm::Error err = checkWeights(*expected, weights, subset))
    return err;
  const train::TensorMap &shipped = subset.empty() ? weights : subset;
  auto compiler = compilerCommand(options);
  if (!compiler)
    return compiler.takeError();

  llvm::SmallString<128> workDir;
  if (std::error_code ec = llvm::sys::fs::createUniqueDirectory("nestor-build", workDir))
    return llvm::createStringError(ec, "build: cannot create a temporary directory: %s",
                                   ec.message().c_str());
  llvm::scope_exit removeWorkDir([&] { (void)llvm::sys::fs::remove_directories(workDir.str()); });
  llvm::SmallString<128> srcPath(workDir), outLog(workDir), errLog(workDir);
  llvm::sys::path::append(srcPath, "model.cpp");
  llvm::sys::path::append(outLog, "compiler.out");
  llvm::sys::path::append(errLog, "compiler.err");
  if (llvm::Error err = ckpt::writeFileAtomic(srcPath, *source))
    return err;
  std::string sourceNote = " (pass keepSource to keep the generated source)";
  if (options.keepSource) {
    if (llvm::Error err = ckpt::writeFileAtomic(outPath + ".cpp", *source))
      return err;
    sourceNote = " (the generated source is " + outPath + ".cpp)";
  }

  // The executable is written beside its final name so that the rename below stays on one
  // file system, and stays hidden under a temporary name until it is complete.
  auto tmp = ckpt::createTempFileBeside(outPath);
  if (!tmp)
    return tmp.takeError();
  llvm::SmallString<128> tmpBinary(*tmp);
  bool committed = false;
  llvm::scope_exit removeTmp([&] {
    if (!committed)
      (void)llvm::sys::fs::remove(tmpBinary);
  });

  std::vector<std::string> args = *compiler;
  args.push_back("-std=c++17");
  args.insert(args.end(), options.flags.begin(), options.flags.end());
  args.push_back("-o");
  args.push_back(tmpBinary.str().str());
  args.push_back(srcPath.str().str());
  // dlopen, for the CUDA driver (in libc itself from glibc 2.34; older ones need it).
  args.push_back("-ldl");
  std::vector<llvm::StringRef> argRefs(args.begin(), args.end());
  std::optional<llvm::StringRef> redirects[] = {llvm::StringRef(""), llvm::StringRef(outLog),
                                                llvm::StringRef(errLog)};
  std::string execError;
  bool execFailed = false;
  int rc = llvm::sys::ExecuteAndWait(args[0], argRefs, std::nullopt, redirects, 0, 0, &execError,
                                     &execFailed);
  std::string commandLine = llvm::join(args, " ");
  if (execFailed || rc < 0)
    return llvm::createStringError(
        "build: cannot run the C++ compiler (%s): %s%s", commandLine.c_str(),
        execError.empty() ? "it crashed" : execError.c_str(), sourceNote.c_str());
  if (rc != 0) {
    std::string log = readLog(errLog);
    std::string stdoutLog = readLog(outLog);
    if (!stdoutLog.empty())
      log = log.empty() ? stdoutLog : log + "\n" + stdoutLog;
    return llvm::createStringError("build: the C++ compiler failed (exit status %d)%s\n"
                                   "command: %s\n%s",
                                   rc, sourceNote.c_str(), commandLine.c_str(), log.c_str());
  }
  uint64_t size = 0;
  if (llvm::sys::fs::file_size(tmpBinary, size) || size == 0)
    return llvm::createStringError("build: the C++ compiler succeeded but wrote no executable "
                                   "(command: %s)",
                                   commandLine.c_str());
  // A linker that rewrites the placeholder in place keeps its mode: make it executable.
  llvm::ErrorOr<llvm::sys::fs::perms> mode = llvm::sys::fs::getPermissions(tmpBinary);
  if (mode && !(*mode & llvm::sys::fs::owner_exe)) {
    llvm::sys::fs::perms exe = llvm::sys::fs::owner_exe;
    if (*mode & llvm::sys::fs::group_read)
      exe = exe | llvm::sys::fs::group_exe;
    if (*mode & llvm::sys::fs::others_read)
      exe = exe | llvm::sys::fs::others_exe;
    if (std::error_code ec = llvm::sys::fs::setPermissions(tmpBinary, *mode | exe))
      return llvm::createStringError(ec, "build: %s: cannot make it executable: %s",
                                     tmpBinary.c_str(), ec.message().c_str());
  }
  syncFile(tmpBinary);

  ckpt::Metadata metadata = {{"format", "pt"}, {"nestor.model", dense.name()}};
  if (llvm::Error err = ckpt::writeSafetensors(outPath + ".safetensors", shipped, metadata))
    return err;
  if (std::error_code ec = llvm::sys::fs::rename(tmpBinary, outPath))
    return llvm::createStringError(ec, "build: %s: cannot move the executable into place: %s",
                                   outPath.c_str(), ec.message().c_str());
  committed = true;
  return llvm::Error::success();
}
