//===- Nvrtc.cpp - Compile generated CUDA C++ at run time with NVRTC ------===//
//
// A failed compile must be debuggable from the error alone, since the source only ever existed
// in memory: the error carries NVRTC's whole log and, for each error, the line it is about.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/Nvrtc.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <nvrtc.h>

#include <cstddef>
#include <optional>

namespace nestor::embedded {
extern const char nestor_device_cuh[];
extern const std::size_t nestor_device_cuh_size;
} // namespace nestor::embedded

using namespace nestor::cuda;

namespace {

llvm::Error compileError(const llvm::Twine &message) {
  return llvm::createStringError(std::make_error_code(std::errc::invalid_argument), message);
}

/// Owns an nvrtcProgram so that every return path destroys it.
class Program {
public:
  Program() = default;
  Program(const Program &) = delete;
  Program &operator=(const Program &) = delete;
  ~Program() {
    if (program)
      nvrtcDestroyProgram(&program);
  }
  nvrtcProgram *address() { return &program; }
  nvrtcProgram get() const { return program; }

private:
  nvrtcProgram program = nullptr;
};

/// "sm_90a" -> {"sm", "90a"}; nullopt when `arch` is not an sm_/compute_ name.
std::optional<std::pair<llvm::StringRef, llvm::StringRef>> splitArch(llvm::StringRef arch) {
  auto [prefix, number] = arch.split('_');
  if ((prefix != "sm" && prefix != "compute") || number.empty() || !llvm::isDigit(number[0]))
    return std::nullopt;
  llvm::StringRef suffix = number.drop_while(llvm::isDigit);
  // Architecture-specific ("a") and family ("f") variants carry one lower-case letter.
  if (suffix.size() > 1 || (suffix.size() == 1 && !llvm::isLower(suffix[0])))
    return std::nullopt;
  return std::make_pair(prefix, number);
}

/// The text of line `line` (1-based) of `text`, or nullopt when there is none.
std::optional<llvm::StringRef> lineOf(llvm::StringRef text, unsigned line) {
  if (line == 0)
    return std::nullopt;
  for (unsigned i = 1; i < line; ++i) {
    size_t newline = text.find('\n');
    if (newline == llvm::StringRef::npos)
      return std::nullopt;
    text = text.drop_front(newline + 1);
  }
  if (text.empty())
    return std::nullopt;
  return text.take_until([](char c) { return c == '\n'; }).rtrim("\r");
}

struct Diagnostic {
  llvm::StringRef file;
  unsigned line;
  bool isError;
};

/// Parses a diagnostic's first line, "file(line): error|warning|note...: text"; nullopt for the
/// other lines of the log (quoted source, carets, continuation lines, the summary).
std::optional<Diagnostic> parseDiagnostic(llvm::StringRef logLine) {
  size_t close = logLine.find("): ");
  if (close == llvm::StringRef::npos)
    return std::nullopt;
  llvm::StringRef head = logLine.take_front(close);
  size_t open = head.rfind('(');
  unsigned line = 0;
  if (open == llvm::StringRef::npos || open == 0 ||
      head.drop_front(open + 1).getAsInteger(10, line))
    return std::nullopt;
  llvm::StringRef rest = logLine.drop_front(close + 3);
  bool isError = rest.starts_with("error") || rest.starts_with("catastrophic error");
  return Diagnostic{head.take_front(open), line, isError};
}

/// The log with each error's source line quoted under it, unless NVRTC already quoted it there.
std::string annotateLog(llvm::StringRef log, const CompileRequest &request) {
  auto textOf = [&](llvm::StringRef file) -> std::optional<llvm::StringRef> {
    if (file == request.name)
      return llvm::StringRef(request.source);
    for (const EmbeddedHeader &header : request.headers)
      if (file == header.first)
        return llvm::StringRef(header.second);
    return std::nullopt;
  };

  llvm::SmallVector<llvm::StringRef> lines;
  log.split(lines, '\n');
  std::vector<std::string> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    out.push_back(lines[i].str());
    std::optional<Diagnostic> diagnostic = parseDiagnostic(lines[i]);
    if (!diagnostic || !diagnostic->isError)
      continue;
    std::optional<llvm::StringRef> text = textOf(diagnostic->file);
    std::optional<llvm::StringRef> quoted = text ? lineOf(*text, diagnostic->line) : std::nullopt;
    if (!quoted || quoted->trim().empty())
      continue;
    // NVRTC quotes the line itself unless told not to (--brief-diagnostics), somewhere among the
    // lines that continue this diagnostic.
    bool alreadyQuoted = false;
    for (size_t next = i + 1; next < lines.size() && !alreadyQuoted; ++next) {
      if (parseDiagnostic(lines[next]))
        break;
      alreadyQuoted = lines[next].trim() == quoted->trim();
    }
    if (!alreadyQuoted)
      out.push_back("    " + quoted->trim().str());
  }
  return llvm::join(out, "\n");
}

std::string programLog(nvrtcProgram program) {
  size_t size = 0;
  if (nvrtcGetProgramLogSize(program, &size) != NVRTC_SUCCESS || size <= 1)
    return "";
  std::string log(size, '\0');
  if (nvrtcGetProgramLog(program, log.data()) != NVRTC_SUCCESS)
    return "";
  log.resize(size - 1); // the size counts the terminating NUL
  return log;
}

} // namespace

llvm::StringRef nestor::cuda::outputName(Output output) {
  return output == Output::PTX ? "ptx" : "cubin";
}

int nestor::cuda::nvrtcVersion() {
  static const int version = [] {
    int major = 0, minor = 0;
    if (::nvrtcVersion(&major, &minor) != NVRTC_SUCCESS)
      return 0;
    return major * 1000 + minor * 10;
  }();
  return version;
}

std::vector<EmbeddedHeader> nestor::cuda::deviceHeaders() {
  return {{"nestor_device.cuh", std::string(nestor::embedded::nestor_device_cuh,
                                            nestor::embedded::nestor_device_cuh_size)}};
}

std::vector<std::string> nestor::cuda::nvrtcOptions(const CompileRequest &request) {
  std::string target = request.arch;
  if (auto parts = splitArch(request.arch))
    target = (request.output == Output::PTX ? "compute_" : "sm_") + parts->second.str();
  std::vector<std::string> options = {"-std=c++17", "--gpu-architecture=" + target,
                                      "-default-device"};
  options.insert(options.end(), request.options.begin(), request.options.end());
  return options;
}

llvm::Expected<CompiledModule> nestor::cuda::compile(const CompileRequest &request) {
  llvm::StringRef kind = outputName(request.output);
  if (!splitArch(request.arch))
    return compileError(request.name + ": invalid CUDA architecture '" + request.arch +
                        "' (expected sm_XX or compute_XX, e.g. sm_90)");
  if (request.output == Output::CUBIN && request.arch.rfind("compute_", 0) == 0)
    return compileError(request.name + ": a CUBIN needs a real architecture (sm_XX), not '" +
                        request.arch + "'");

  std::vector<const char *> headerTexts, headerNames;
  for (const EmbeddedHeader &header : request.headers) {
    headerNames.push_back(header.first.c_str());
    headerTexts.push_back(header.second.c_str());
  }

  auto nvrtcError = [&](llvm::StringRef call, nvrtcResult result) {
    return compileError(request.name + ": " + call + " failed for " + request.arch + ": " +
                        nvrtcGetErrorString(result));
  };

  Program program;
  if (nvrtcResult result = nvrtcCreateProgram(
          program.address(), request.source.c_str(), request.name.c_str(),
          static_cast<int>(headerTexts.size()), headerTexts.data(), headerNames.data());
      result != NVRTC_SUCCESS)
    return nvrtcError("nvrtcCreateProgram", result);

  std::vector<std::string> options = nvrtcOptions(request);
  std::vector<const char *> optionPointers;
  for (const std::string &option : options)
    optionPointers.push_back(option.c_str());

  nvrtcResult compiled = nvrtcCompileProgram(program.get(), static_cast<int>(optionPointers.size()),
                                             optionPointers.data());
  std::string log = programLog(program.get());
  if (compiled != NVRTC_SUCCESS) {
    std::string message;
    llvm::raw_string_ostream os(message);
    os << request.name << ": NVRTC could not compile it to " << kind.upper() << " for "
       << request.arch << " (" << nvrtcGetErrorString(compiled) << "); options:";
    for (const std::string &option : options)
      os << ' ' << option;
    os << "\n" << (log.empty() ? "(empty program log)\n" : annotateLog(log, request));
    return compileError(llvm::StringRef(message).rtrim());
  }

  CompiledModule module;
  module.kind = request.output;
  module.arch = request.arch;
  module.log = std::move(log);
  size_t size = 0;
  nvrtcResult sized = request.output == Output::PTX ? nvrtcGetPTXSize(program.get(), &size)
                                                    : nvrtcGetCUBINSize(program.get(), &size);
  if (sized != NVRTC_SUCCESS)
    return nvrtcError(request.output == Output::PTX ? "nvrtcGetPTXSize" : "nvrtcGetCUBINSize",
                      sized);
  if (size == 0)
    return compileError(request.name + ": NVRTC produced an empty " + kind.upper() + " for " +
                        request.arch);
  module.image.resize(size);
  nvrtcResult got = request.output == Output::PTX
                        ? nvrtcGetPTX(program.get(), module.image.data())
                        : nvrtcGetCUBIN(program.get(), module.image.data());
  if (got != NVRTC_SUCCESS)
    return nvrtcError(request.output == Output::PTX ? "nvrtcGetPTX" : "nvrtcGetCUBIN", got);
  // PTX comes NUL-terminated; the string's own terminator serves the driver instead.
  if (request.output == Output::PTX && !module.image.empty() && module.image.back() == '\0')
    module.image.pop_back();
  return module;
}
