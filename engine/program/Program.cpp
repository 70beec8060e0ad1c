//===- Program.cpp - The program artifact: read, write, validate -----------===//
#include "engine/program/Program.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace nestor;
using namespace nestor::engine;
namespace pg = nestor::program;

namespace {

constexpr char kMagic[8] = {'N', 'E', 'S', 'T', 'O', 'R', 'P', 'G'};
constexpr size_t kHeaderBytes = 24;

void putLE(std::string &out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t getLE(const std::string &in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

uint32_t crcOf(const char *data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed large payloads in pieces.
  while (size > 0) {
    uInt piece = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef *>(data), piece);
    data += piece;
    size -= piece;
  }
  return static_cast<uint32_t>(crc);
}

std::string str(int64_t v) { return std::to_string(v); }

} // namespace

int64_t nestor::engine::elementBytes(pg::DType dtype) {
  switch (dtype) {
  case pg::F32:
  case pg::I32:
    return 4;
  case pg::F64:
  case pg::I64:
    return 8;
  case pg::I1:
    return 1;
  default:
    return 0;
  }
}

int64_t nestor::engine::numElements(const pg::TensorType &type) {
  int64_t n = 1;
  for (int64_t d : type.shape())
    n *= d;
  return n;
}

int64_t nestor::engine::tensorBytes(const pg::TensorType &type) {
  return numElements(type) * elementBytes(type.dtype());
}

const char *nestor::engine::dtypeName(pg::DType dtype) {
  switch (dtype) {
  case pg::F32:
    return "f32";
  case pg::F64:
    return "f64";
  case pg::I32:
    return "i32";
  case pg::I64:
    return "i64";
  case pg::I1:
    return "i1";
  default:
    return "?";
  }
}

const pg::Function *nestor::engine::findFunction(const pg::Program &program,
                                                 const std::string &name) {
  for (const pg::Function &f : program.functions())
    if (f.name() == name)
      return &f;
  return nullptr;
}

std::string nestor::engine::prefillEntry(int64_t tokens) {
  return "prefill_" + std::to_string(tokens);
}

int64_t nestor::engine::prefillTokens(const std::string &name) {
  const std::string prefix = "prefill_";
  if (name.compare(0, prefix.size(), prefix) != 0 || name.size() == prefix.size() ||
      name.size() > prefix.size() + 9)
    return 0;
  int64_t n = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9')
      return 0;
    n = 10 * n + (name[i] - '0');
  }
  return prefillEntry(n) == name ? n : 0; // no leading zeros
}

std::vector<const pg::Function *> nestor::engine::inferenceFunctions(const pg::Program &program) {
  std::vector<const pg::Function *> out{findFunction(program, kDecodeStep)};
  std::vector<std::pair<int64_t, const pg::Function *>> prefill;
  for (const pg::Function &f : program.functions())
    if (int64_t n = prefillTokens(f.name()); n > 1)
      prefill.push_back({n, &f});
  std::sort(prefill.begin(), prefill.end(),
            [](const auto &a, const auto &b) { return a.first > b.first; });
  for (auto &[n, f] : prefill)
    out.push_back(f);
  return out;
}

std::vector<Parameter> nestor::engine::parameters(const pg::Function &fn) {
  std::vector<Parameter> out;
  for (const pg::Argument &a : fn.arguments())
    if (a.role() == pg::PARAM) {
      const pg::TensorType &type = fn.values(a.value()).type();
      out.push_back({a.name(), std::vector<int64_t>(type.shape().begin(), type.shape().end())});
    }
  return out;
}

std::string nestor::engine::encodeProgram(const pg::Program &program) {
  std::string payload;
  // Deterministic: maps in key order, so one program is always the same bytes (reproducible
  // builds, comparable files).
  {
    google::protobuf::io::StringOutputStream stream(&payload);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    program.SerializeToCodedStream(&coded);
  }
  std::string out(kMagic, sizeof(kMagic));
  putLE(out, kFormatVersion, 4);
  putLE(out, crcOf(payload.data(), payload.size()), 4);
  putLE(out, payload.size(), 8);
  out += payload;
  return out;
}

Result<pg::Program> nestor::engine::decodeProgram(const std::string &bytes,
                                                  const std::string &name) {
  auto fail = [&](const std::string &what) -> Result<pg::Program> {
    return Status::error(name + ": " + what);
  };
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    return fail("not a Nestor program (no NESTORPG header)");
  if (bytes.size() < kHeaderBytes)
    return fail("truncated program header (" + str(bytes.size()) + " bytes)");
  uint32_t version = static_cast<uint32_t>(getLE(bytes, 8, 4));
  if (version != kFormatVersion)
    return fail("program format version " + std::to_string(version) + ", but this Nestor reads " +
                "version " + std::to_string(kFormatVersion) +
                "; compile it again with this Nestor (nestor compile --emit program)");
  uint32_t crc = static_cast<uint32_t>(getLE(bytes, 12, 4));
  uint64_t size = getLE(bytes, 16, 8);
  if (bytes.size() - kHeaderBytes != size)
    return fail("truncated or padded program: the header announces " + std::to_string(size) +
                " payload bytes, the file has " + str(bytes.size() - kHeaderBytes));
  if (crcOf(bytes.data() + kHeaderBytes, size) != crc)
    return fail("corrupt program: the payload's checksum does not match the header's");
  pg::Program program;
  if (!program.ParseFromArray(bytes.data() + kHeaderBytes, static_cast<int>(size)))
    return fail("corrupt program: the payload does not parse");
  if (Status s = validateProgram(program))
    return fail(s.message());
  return program;
}

Status nestor::engine::writeProgramFile(const pg::Program &program, const std::string &path) {
  std::string bytes = encodeProgram(program);
  std::string tmp = path + ".tmp-XXXXXX";
  std::vector<char> name(tmp.begin(), tmp.end());
  name.push_back('\0');
  int fd = mkstemp(name.data());
  if (fd < 0)
    return Status::error(path +
                         ": cannot create a temporary file beside it: " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(name.data());
      return Status::error(path + ": write failed: " + why);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    std::string why = std::strerror(errno);
    ::unlink(name.data());
    return Status::error(path + ": write failed: " + why);
  }
  ::chmod(name.data(), 0644);
  if (std::rename(name.data(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    ::unlink(name.data());
    return Status::error(path + ": cannot replace: " + why);
  }
  return Status();
}

Result<pg::Program> nestor::engine::readProgramFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad())
    return Status::error(path + ": read failed");
  return decodeProgram(buffer.str(), path);
}

namespace {
constexpr char kAttachMagic[8] = {'N', 'E', 'S', 'T', 'O', 'R', 'A', 'T'};
constexpr size_t kTrailerBytes = 16;
} // namespace

std::string nestor::engine::attachmentTrailer(uint64_t programFileBytes) {
  std::string out;
  putLE(out, programFileBytes, 8);
  out.append(kAttachMagic, sizeof(kAttachMagic));
  return out;
}

Result<std::optional<pg::Program>> nestor::engine::readAttachedProgram(const std::string &path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in)
    return Status::error(path + ": cannot open: " + std::strerror(errno));
  std::streamoff size = in.tellg();
  if (size < static_cast<std::streamoff>(kTrailerBytes))
    return std::optional<pg::Program>();
  std::string trailer(kTrailerBytes, '\0');
  in.seekg(size - static_cast<std::streamoff>(kTrailerBytes));
  if (!in.read(trailer.data(), kTrailerBytes))
    return Status::error(path + ": read failed");
  if (std::memcmp(trailer.data() + 8, kAttachMagic, sizeof(kAttachMagic)) != 0)
    return std::optional<pg::Program>();
  uint64_t bytes = getLE(trailer, 0, 8);
  uint64_t room = static_cast<uint64_t>(size) - kTrailerBytes;
  if (bytes > room)
    return Status::error(path + ": the attached program claims " + std::to_string(bytes) +
                         " bytes but only " + std::to_string(room) +
                         " precede the trailer (a truncated or altered file)");
  std::string image(bytes, '\0');
  in.seekg(static_cast<std::streamoff>(room - bytes));
  if (bytes > 0 && !in.read(image.data(), static_cast<std::streamsize>(bytes)))
    return Status::error(path + ": read failed");
  auto program = decodeProgram(image, path + " (its attached program)");
  if (!program.ok())
    return program.status();
  return std::optional<pg::Program>(std::move(*program));
}

namespace {

Status checkType(const pg::TensorType &type, const std::string &what) {
  if (elementBytes(type.dtype()) == 0)
    return Status::error(what + " has no element type");
  int64_t n = 1;
  for (int64_t d : type.shape()) {
    if (d < 0 || (d > 0 && n > (int64_t(1) << 40) / d))
      return Status::error(what + " has a bad shape");
    n *= d;
  }
  return Status();
}

Status checkHost(const pg::HostBlock &host, int inputs, const std::string &where) {
  int locals = host.local_types_size();
  for (int i = 0; i < locals; ++i)
    if (Status s = checkType(host.local_types(i), where + ": host local " + std::to_string(i)))
      return s;
  int defined = inputs;
  for (const pg::HostOp &op : host.ops()) {
    for (int32_t id : op.operands())
      if (id < 0 || id >= defined)
        return Status::error(where + ": " + op.kind() + " reads host local " + std::to_string(id) +
                             " before it is defined");
    if (op.result_types_size() != op.results_size())
      return Status::error(where + ": " + op.kind() + " has results without types");
    for (int32_t id : op.results()) {
      if (id != defined || id >= locals)
        return Status::error(where + ": " + op.kind() + " defines host locals out of order");
      ++defined;
    }
  }
  for (int32_t id : host.yields())
    if (id < 0 || id >= defined)
      return Status::error(where + ": host block yields an undefined local");
  return Status();
}

Status checkFunction(const pg::Function &f) {
  const std::string where = "@" + f.name();
  int values = f.values_size();
  auto valueOk = [&](int32_t id) { return id >= 0 && id < values; };
  if (f.arena_bytes() < 0)
    return Status::error(where + ": negative arena size");
  std::set<int32_t> argIds;
  for (const pg::Argument &a : f.arguments()) {
    if (!valueOk(a.value()))
      return Status::error(where + ": argument '" + a.name() + "' names no value");
    if (!argIds.insert(a.value()).second)
      return Status::error(where + ": two arguments share value " + std::to_string(a.value()));
  }
  for (int i = 0; i < values; ++i) {
    const pg::Value &v = f.values(i);
    std::string what = where + ": value " + std::to_string(i);
    if (Status s = checkType(v.type(), what))
      return s;
    int64_t bytes = tensorBytes(v.type());
    switch (v.storage_case()) {
    case pg::Value::kArenaOffset:
      if (v.arena_offset() < 0 || v.arena_offset() + bytes > f.arena_bytes())
        return Status::error(what + " lies outside the arena");
      break;
    case pg::Value::kArgument:
      if (v.argument() < 0 || v.argument() >= f.arguments_size() ||
          f.arguments(v.argument()).value() != i)
        return Status::error(what + " names argument " + std::to_string(v.argument()) +
                             ", which does not name it back");
      break;
    case pg::Value::kConstant:
      if (static_cast<int64_t>(v.constant().size()) != bytes)
        return Status::error(what + ": constant of " + std::to_string(v.constant().size()) +
                             " bytes for a " + std::to_string(bytes) + "-byte type");
      break;
    default:
      return Status::error(what + " has no storage");
    }
  }
  for (const pg::Result &r : f.results())
    if (!valueOk(r.value()))
      return Status::error(where + ": a result names no value");
  if (f.keep_value() >= values || f.keep_value() < -1)
    return Status::error(where + ": the keep vector names no value");
  for (int s = 0; s < f.steps_size(); ++s) {
    const pg::Step &step = f.steps(s);
    std::string at = where + " step " + std::to_string(s) + " (" + step.kind() + ")";
    for (const auto &[name, id] : step.operands())
      if (!valueOk(id))
        return Status::error(at + ": operand '" + name + "' names no value");
    for (const auto &[name, id] : step.results())
      if (!valueOk(id) || f.values(id).storage_case() == pg::Value::kConstant)
        return Status::error(at + ": result '" + name + "' names no writable value");
    for (int32_t id : step.inputs())
      if (!valueOk(id))
        return Status::error(at + ": an input names no value");
    for (int32_t id : step.outputs())
      if (!valueOk(id) || f.values(id).storage_case() == pg::Value::kConstant)
        return Status::error(at + ": an output names no writable value");
    if (step.gated() && f.keep_value() < 0)
      return Status::error(at + ": gated by a layer but the function has no keep vector");
    if (step.gated() &&
        (step.layer() < 0 || step.layer() >= numElements(f.values(f.keep_value()).type())))
      return Status::error(at + ": gated by layer " + std::to_string(step.layer()) +
                           ", outside the keep vector");
    if (step.kind() == "kernel.host") {
      if (step.host().yields_size() != step.outputs_size())
        return Status::error(at + ": host block yields " +
                             std::to_string(step.host().yields_size()) + " values for " +
                             std::to_string(step.outputs_size()) + " outputs");
      if (Status st = checkHost(step.host(), step.inputs_size(), at))
        return st;
      for (int i = 0; i < step.inputs_size(); ++i)
        if (i >= step.host().local_types_size() ||
            numElements(step.host().local_types(i)) != numElements(f.values(step.inputs(i)).type()))
          return Status::error(at + ": host input " + std::to_string(i) + " does not match");
      for (int i = 0; i < step.outputs_size(); ++i)
        if (numElements(step.host().local_types(step.host().yields(i))) !=
            numElements(f.values(step.outputs(i)).type()))
          return Status::error(at + ": host output " + std::to_string(i) + " does not match");
    }
  }
  return Status();
}

} // namespace

Status nestor::engine::validateProgram(const pg::Program &program) {
  std::set<std::string> names;
  for (const pg::Function &f : program.functions()) {
    if (!names.insert(f.name()).second)
      return Status::error("two functions named @" + f.name());
    if (Status s = checkFunction(f))
      return s;
  }
  return Status();
}

namespace {

void printAttributes(std::ostringstream &os, const pg::Attributes &a) {
  // Maps print in sorted order so that listings are stable.
  std::set<std::string> keys;
  for (const auto &kv : a.ints())
    keys.insert(kv.first);
  for (const auto &kv : a.floats())
    keys.insert(kv.first);
  for (const auto &kv : a.strings())
    keys.insert(kv.first);
  for (const auto &kv : a.arrays())
    keys.insert(kv.first);
  for (const auto &kv : a.float_arrays())
    keys.insert(kv.first);
  if (keys.empty())
    return;
  os << " {";
  bool first = true;
  for (const std::string &k : keys) {
    os << (first ? "" : ", ") << k << " = ";
    first = false;
    if (auto it = a.ints().find(k); it != a.ints().end())
      os << it->second;
    else if (auto f = a.floats().find(k); f != a.floats().end())
      os << f->second;
    else if (auto s = a.strings().find(k); s != a.strings().end())
      os << '"' << s->second << '"';
    else if (auto ar = a.arrays().find(k); ar != a.arrays().end()) {
      os << '[';
      for (int i = 0; i < ar->second.values_size(); ++i)
        os << (i ? ", " : "") << ar->second.values(i);
      os << ']';
    } else {
      const pg::FloatList &fl = a.float_arrays().at(k);
      os << '[';
      for (int i = 0; i < fl.values_size(); ++i)
        os << (i ? ", " : "") << fl.values(i);
      os << ']';
    }
  }
  os << '}';
}

std::string typeString(const pg::TensorType &t) {
  std::string s;
  for (int64_t d : t.shape())
    s += std::to_string(d) + "x";
  return s + dtypeName(t.dtype());
}

} // namespace

std::string nestor::engine::describeProgram(const pg::Program &program) {
  std::ostringstream os;
  os << "program format " << kFormatVersion << ", target " << program.target() << ", by "
     << program.generator() << "\n";
  for (const pg::Function &f : program.functions()) {
    os << "\nfunction @" << f.name() << ": " << f.arguments_size() << " arguments, "
       << f.results_size() << " results, " << f.steps_size() << " steps, arena " << f.arena_bytes()
       << " bytes\n";
    for (const pg::Argument &a : f.arguments())
      os << "  arg %" << a.value() << " "
         << (a.role() == pg::PARAM   ? "param"
             : a.role() == pg::STATE ? "state"
                                     : "input")
         << " \"" << a.name() << "\" : " << typeString(f.values(a.value()).type()) << "\n";
    for (const pg::Result &r : f.results()) {
      os << "  result %" << r.value();
      if (!r.grad_of().empty())
        os << " grad_of \"" << r.grad_of() << "\"";
      os << "\n";
    }
    for (const pg::Step &s : f.steps()) {
      os << "  " << s.kind() << " " << dtypeName(s.compute());
      std::set<std::string> names;
      for (const auto &kv : s.operands())
        names.insert(kv.first);
      for (const std::string &n : names)
        os << " " << n << "=%" << s.operands().at(n);
      for (int32_t id : s.inputs())
        os << " %" << id;
      os << " ->";
      names.clear();
      for (const auto &kv : s.results())
        names.insert(kv.first);
      for (const std::string &n : names)
        os << " " << n << "=%" << s.results().at(n);
      for (int32_t id : s.outputs())
        os << " %" << id;
      printAttributes(os, s.attributes());
      if (s.gated())
        os << " gated(layer " << s.layer() << ")";
      if (s.has_cuda())
        os << " cuda(" << s.cuda().file_name() << ", " << s.cuda().launches_size() << " launches)";
      os << "\n";
      for (const pg::HostOp &h : s.host().ops()) {
        os << "    " << h.kind();
        for (int32_t id : h.operands())
          os << " $" << id;
        os << " ->";
        for (int32_t id : h.results())
          os << " $" << id;
        printAttributes(os, h.attributes());
        os << "\n";
      }
    }
  }
  return os.str();
}
