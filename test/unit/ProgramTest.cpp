//===- ProgramTest.cpp - The program artifact and the runtime without MLIR -===//
//
// A program written to a file and read back runs exactly like the one emitted in memory; a
// truncated, altered, foreign or other-version file is refused with a message saying which;
// inconsistent programs are refused before anything runs; and the runtime libraries need no
// MLIR or LLVM.
//
//===----------------------------------------------------------------------===//
#include "engine/program/Program.h"
#include "engine/cpu/CpuExecutor.h"
#include "nestor/Compile.h"
#include "nestor/EmitProgram.h"
#include "nestor/Spec.h"

#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <unistd.h>

using namespace nestor;
namespace pg = nestor::program;

namespace {

std::string sourceDir() {
  const char *src = std::getenv("NESTOR_SRC");
  return src ? src : ".";
}

/// A fresh directory for one test's files.
std::string tempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "nestor-program-XXXXXX").string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  EXPECT_NE(mkdtemp(name.data()), nullptr);
  return name.data();
}

std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void writeBytes(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

/// Deterministic arguments for `fn` by their names and types.
struct Args {
  std::vector<std::vector<char>> storage;
  std::vector<const void *> pointers;
  Args(const pg::Function &fn, int64_t vocab, int32_t budget) {
    std::mt19937_64 rng(5);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (const pg::Argument &a : fn.arguments()) {
      const pg::TensorType &t = fn.values(a.value()).type();
      int64_t n = engine::numElements(t);
      std::vector<char> bytes(std::max<int64_t>(1, engine::tensorBytes(t)));
      for (int64_t i = 0; i < n; ++i) {
        double v = a.name() == "tau" ? 1.3 : a.name() == "logit_scale" ? 2.0 : 0.4 * normal(rng);
        switch (t.dtype()) {
        case pg::F32:
          reinterpret_cast<float *>(bytes.data())[i] = static_cast<float>(v);
          break;
        case pg::F64:
          reinterpret_cast<double *>(bytes.data())[i] = v;
          break;
        case pg::I32:
          reinterpret_cast<int32_t *>(bytes.data())[i] =
              a.name() == "budget" ? budget : static_cast<int32_t>(rng() % vocab);
          break;
        case pg::I64:
          reinterpret_cast<int64_t *>(bytes.data())[i] = 11;
          break;
        default:
          bytes[i] = 0; // hard_sample
        }
      }
      storage.push_back(std::move(bytes));
    }
    for (auto &s : storage)
      pointers.push_back(s.data());
  }
};

struct Compiled {
  mlir::MLIRContext context;
  spec::ModelSpec spec;
  std::unique_ptr<CompiledStep> step;
  pg::Program program;
};

std::unique_ptr<Compiled> compileTiny() {
  auto c = std::make_unique<Compiled>();
  auto spec = spec::loadSpecFile(sourceDir() + "/examples/specs/tiny-hybrid.pbtxt");
  EXPECT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  if (!spec)
    return nullptr;
  c->spec = *spec;
  StepOptions options;
  options.batch = 2;
  options.seqLen = 21;
  auto step = compileTrainStep(c->context, c->spec, options);
  EXPECT_TRUE(static_cast<bool>(step)) << llvm::toString(step.takeError());
  if (!step)
    return nullptr;
  c->step = std::move(*step);
  auto program = emitProgram(*c->step->module);
  EXPECT_TRUE(static_cast<bool>(program)) << llvm::toString(program.takeError());
  if (!program)
    return nullptr;
  c->program = std::move(*program);
  return c;
}

} // namespace

TEST(ProgramTest, AProgramReadFromItsFileRunsLikeTheOneInMemory) {
  auto c = compileTiny();
  ASSERT_TRUE(c);
  std::string dir = tempDir(), path = dir + "/step.nestorprog";
  ASSERT_TRUE(engine::writeProgramFile(c->program, path).ok());
  auto read = engine::readProgramFile(path);
  ASSERT_TRUE(read.ok()) << read.status().message();
  std::string name = c->step->step.getSymName().str();
  const pg::Function *fn = engine::findFunction(*read, name);
  ASSERT_NE(fn, nullptr) << "no @" << name << " in the program read back";
  auto fromFile = engine::CpuExecutor::create(*fn);
  ASSERT_TRUE(fromFile.ok()) << fromFile.status().message();

  // Both budgets: the full model and a prefix-dense one with run-time extents.
  for (int32_t budget : {0, c->spec.elastic().budgets_size() - 1}) {
    Args args(*fn, c->spec.architecture().vocab_size(), budget);
    engine::Status a = c->step->program->run(args.pointers);
    ASSERT_TRUE(a.ok()) << a.message();
    engine::Status b = (*fromFile)->run(args.pointers);
    ASSERT_TRUE(b.ok()) << b.message();
    ASSERT_EQ((*fromFile)->numResults(), c->step->program->numResults());
    for (unsigned r = 0; r < (*fromFile)->numResults(); ++r) {
      int64_t bytes = engine::tensorBytes(fn->values(fn->results(r).value()).type());
      EXPECT_EQ(std::memcmp((*fromFile)->result(r), c->step->program->result(r), bytes), 0)
          << "result " << r << " (" << fn->results(r).grad_of() << ") differs at budget " << budget;
    }
    // The loss is a real number (the comparison above is not between two zero buffers).
    const float *loss = static_cast<const float *>((*fromFile)->result(1));
    EXPECT_TRUE(std::isfinite(*loss) && *loss > 0.0f) << *loss;
  }
  std::filesystem::remove_all(dir);
}

TEST(ProgramTest, DamagedOrForeignFilesAreRefusedWithTheReason) {
  auto c = compileTiny();
  ASSERT_TRUE(c);
  std::string dir = tempDir(), path = dir + "/p.nestorprog";
  ASSERT_TRUE(engine::writeProgramFile(c->program, path).ok());
  const std::string good = readBytes(path);
  ASSERT_GT(good.size(), 1000u);
  auto refusal = [&](const std::string &bytes) {
    writeBytes(path, bytes);
    auto r = engine::readProgramFile(path);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.status().message();
  };
  auto expectHas = [](const std::string &message, const char *what) {
    EXPECT_NE(message.find(what), std::string::npos) << message;
  };
  expectHas(refusal(good.substr(0, good.size() - 17)), "truncated");
  expectHas(refusal(good.substr(0, 12)), "truncated program header");
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x20;
  expectHas(refusal(flipped), "checksum");
  std::string version = good;
  version[8] = static_cast<char>(engine::kFormatVersion + 1);
  std::string v = refusal(version);
  expectHas(v, "version");
  expectHas(v, "compile it again");
  expectHas(refusal("not a program at all, just some text"), "not a Nestor program");
  expectHas(refusal(""), "not a Nestor program");
  // Every message names the file.
  expectHas(refusal(flipped), path.c_str());
  // A write that cannot happen fails cleanly and leaves no file behind.
  EXPECT_FALSE(engine::writeProgramFile(c->program, dir + "/missing/p.nestorprog").ok());
  std::filesystem::remove_all(dir);
}

TEST(ProgramTest, InconsistentProgramsAreRefusedBeforeRunning) {
  auto c = compileTiny();
  ASSERT_TRUE(c);
  const pg::Function &fn = *engine::findFunction(c->program, c->step->step.getSymName().str());
  ASSERT_GT(fn.steps_size(), 0);
  {
    pg::Function bad = fn;
    (*bad.mutable_steps(0)->mutable_operands())["a"] = bad.values_size() + 3;
    auto e = engine::CpuExecutor::create(bad);
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("names no value"), std::string::npos)
        << e.status().message();
  }
  {
    pg::Function bad = fn;
    for (pg::Value &v : *bad.mutable_values())
      if (v.storage_case() == pg::Value::kArenaOffset) {
        v.set_arena_offset(bad.arena_bytes());
        break;
      }
    auto e = engine::CpuExecutor::create(bad);
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("outside the arena"), std::string::npos)
        << e.status().message();
  }
  {
    // A step kind this runtime does not know is named, with its source location.
    pg::Function bad = fn;
    int s = 0;
    while (bad.steps(s).kind() == "kernel.host")
      ++s;
    bad.mutable_steps(s)->set_kind("kernel.frobnicate");
    auto e = engine::CpuExecutor::create(bad);
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("kernel.frobnicate"), std::string::npos)
        << e.status().message();
  }
  {
    // A kernel missing an attribute its kernel needs.
    pg::Function bad = fn;
    int s = 0;
    while (bad.steps(s).kind() != "kernel.rmsnorm")
      ++s;
    bad.mutable_steps(s)->mutable_attributes()->mutable_floats()->erase("epsilon");
    auto e = engine::CpuExecutor::create(bad);
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.status().message().find("'epsilon'"), std::string::npos) << e.status().message();
  }
  {
    auto e = engine::CpuExecutor::create(fn);
    ASSERT_TRUE(e.ok()) << e.status().message();
    std::vector<const void *> tooFew(2, nullptr);
    engine::Status s = (*e)->run(tooFew);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("arguments"), std::string::npos) << s.message();
  }
}

TEST(ProgramTest, TheListingShowsEntryPointsStepsAndTheirOperands) {
  auto c = compileTiny();
  ASSERT_TRUE(c);
  std::string text = engine::describeProgram(c->program);
  for (const char *what : {"function @elastic_model_train_step", "kernel.gemm", "kernel.host",
                           "elastic.router", "param \"backbone.embeddings.weight\"",
                           "grad_of \"backbone.embeddings.weight\"", "gated(layer"})
    EXPECT_NE(text.find(what), std::string::npos) << what;
}

#ifdef NESTOR_RUNTIME_LIBS
// The runtime's libraries (and everything they load) need no MLIR or LLVM: that is what lets a
// program run on a machine that only has the runtime. The runtime executable (what every
// executable `nestor build` writes is a copy of) needs no Nestor library either.
TEST(ProgramTest, TheRuntimeLinksNoMlirOrLlvm) {
  std::istringstream libs(NESTOR_RUNTIME_LIBS);
  std::string lib;
  int checked = 0;
  while (std::getline(libs, lib, ':')) {
    std::string cmd = "ldd '" + lib + "' 2>&1";
    FILE *p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p))
      out.append(buf, n);
    ASSERT_EQ(pclose(p), 0) << out;
    EXPECT_EQ(out.find("LLVM"), std::string::npos) << lib << ":\n" << out;
    EXPECT_EQ(out.find("MLIR"), std::string::npos) << lib << ":\n" << out;
    EXPECT_EQ(out.find("not found"), std::string::npos) << lib << ":\n" << out;
    if (lib.size() >= 10 && lib.compare(lib.size() - 10, 10, "nestor-run") == 0) {
      EXPECT_EQ(out.find("libNestor"), std::string::npos) << lib << ":\n" << out;
      EXPECT_EQ(out.find("protobuf"), std::string::npos) << lib << " (linked statically):\n" << out;
    }
    ++checked;
  }
  EXPECT_GE(checked, 6);
}
#endif
