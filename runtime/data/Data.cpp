//===- Data.cpp - Byte tokenizer, reasoning generator, text-file source ---===//
//
// Every random choice comes from a counter-based generator keyed by what it is for (seed,
// split, difficulty, problem index, draw), never from std:: distributions, whose output differs
// between standard libraries: a problem, a batch row or a window offset is then a pure function
// of its coordinates, the same on every machine and after a resume.
//
//===----------------------------------------------------------------------===//
#include "nestor/Data.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>

using namespace nestor;
using namespace nestor::data;
using train::BatchRequest;
using train::Difficulty;

namespace {

//===----------------------------------------------------------------------===//
// Counter-based randomness
//===----------------------------------------------------------------------===//

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

/// SplitMix64's finaliser: a bijection that spreads every input bit over the output.
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Folds `value` into the key `hash`; order matters, so (a, b) and (b, a) differ.
uint64_t combine(uint64_t hash, uint64_t value) { return mix64(hash ^ mix64(value + kGolden)); }

/// Separate key spaces for each use, so that e.g. a batch row never reuses a problem's draws.
enum Stream : uint64_t { kProblemStream = 1, kReasoningRowStream = 2, kTextWindowStream = 3 };

/// Draw number `counter` of the stream `key`.
class CounterRng {
public:
  explicit CounterRng(uint64_t key) : key(key) {}
  uint64_t next() { return mix64(key + kGolden * ++counter); }
  /// Uniform in [lo, hi]; the modulo bias (range / 2^64) is far below anything observable.
  int64_t uniform(int64_t lo, int64_t hi) {
    assert(lo <= hi && "empty range");
    return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool chance(uint64_t numerator, uint64_t denominator) { return next() % denominator < numerator; }
  template <typename T, size_t N> const T &pick(const T (&options)[N]) {
    return options[uniform(0, N - 1)];
  }

private:
  uint64_t key, counter = 0;
};

uint64_t fnv1a(llvm::StringRef text) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : text)
    h = (h ^ c) * 0x100000001B3ull;
  return h;
}

//===----------------------------------------------------------------------===//
// Reasoning problems
//===----------------------------------------------------------------------===//

/// One problem in 20 belongs to the held-out split.
constexpr uint64_t kValidationOneIn = 20;

bool isValidationText(llvm::StringRef prompt) {
  return mix64(fnv1a(prompt)) % kValidationOneIn == 0;
}

/// The generator's settings with defaults applied. Digits stop at 9 and steps at 64, so that
/// every value fits in int64 with room to spare (at most 64 terms of 9 digits times a one-digit
/// factor).
struct Settings {
  int64_t maxDigits, maxSteps, minSteps;
  /// The longest problem (prompt + completion, in bytes) this difficulty writes.
  size_t maxBytes;
  bool isLong;
};

Settings settingsFor(const spec::ReasoningData &r, Difficulty difficulty) {
  auto clamp = [](int64_t v, int64_t hi) { return std::clamp<int64_t>(v, 1, hi); };
  Settings s;
  s.isLong = difficulty == Difficulty::Long;
  if (s.isLong) {
    s.maxDigits = clamp(r.has_max_digits_long() ? r.max_digits_long() : 5, 9);
    s.maxSteps = clamp(r.has_max_steps_long() ? r.max_steps_long() : 6, 64);
    s.minSteps = std::min<int64_t>(3, s.maxSteps);
  } else {
    s.maxDigits = clamp(r.has_max_digits_short() ? r.max_digits_short() : 3, 9);
    s.maxSteps = clamp(r.has_max_steps_short() ? r.max_steps_short() : 2, 64);
    s.minSteps = 1;
  }
  // The defaults fit the tiny spec's rows with kBos/kEos: 96 tokens in stage 1, 256 in stage 2.
  // Larger settings scale the bound with steps x digits, so that they still produce their long
  // chains instead of having them all rejected for length.
  double scale = s.isLong ? s.maxSteps * s.maxDigits / 30.0 : s.maxSteps * s.maxDigits / 6.0;
  size_t base = s.isLong ? 250 : 94;
  s.maxBytes = std::max(base, static_cast<size_t>(base * scale));
  return s;
}

int64_t powerOf10(int64_t digits) {
  int64_t p = 1;
  for (int64_t i = 0; i < digits; ++i)
    p *= 10;
  return p;
}

/// A number of up to `maxDigits` digits, biased towards several digits: the digit count is
/// drawn first, so 3-digit numbers are as common as 2-digit ones.
int64_t drawNumber(CounterRng &rng, int64_t maxDigits) {
  int64_t digits = rng.uniform(std::min<int64_t>(2, maxDigits), maxDigits);
  return rng.uniform(digits == 1 ? 1 : powerOf10(digits - 1), powerOf10(digits) - 1);
}

/// The working of a problem being written: one line per step, in canonical form.
class Working {
public:
  int64_t apply(int64_t a, char op, int64_t b) {
    int64_t r = op == '+' ? a + b : op == '-' ? a - b : a * b;
    assert(r >= 0 && "the generator keeps every value non-negative");
    text += std::to_string(a);
    text += op;
    text += std::to_string(b);
    text += '=';
    text += std::to_string(r);
    text += '\n';
    ++steps;
    return r;
  }
  std::string text;
  int64_t steps = 0;
};

Problem finish(std::string prompt, Working working, int64_t result) {
  Problem p;
  p.prompt = std::move(prompt);
  p.answer = std::to_string(result);
  p.completion = std::move(working.text) + "#### " + p.answer;
  return p;
}

/// "What is 347+58*3?": a sum of terms, each a number or a number times a one-digit factor,
/// worked as the products left to right, then the sums and differences left to right.
/// Each operator is one step.
Problem arithmeticProblem(CounterRng &rng, int64_t maxDigits, int64_t steps) {
  struct Term {
    int64_t value, factor; // factor 0: a plain number
    char sign;
  };
  std::vector<Term> terms{{drawNumber(rng, maxDigits), 0, '+'}};
  for (int64_t s = 0; s < steps; ++s) {
    if (terms.back().factor == 0 && rng.chance(1, 3))
      terms.back().factor = rng.uniform(2, 9);
    else
      terms.push_back({drawNumber(rng, maxDigits), 0, '+'});
  }

  Working working;
  std::vector<int64_t> values;
  for (Term &t : terms)
    values.push_back(t.factor ? working.apply(t.value, '*', t.factor) : t.value);
  int64_t result = values[0];
  for (size_t i = 1; i < terms.size(); ++i) {
    // A difference only where it stays non-negative.
    terms[i].sign = values[i] <= result && rng.chance(1, 2) ? '-' : '+';
    result = working.apply(result, terms[i].sign, values[i]);
  }

  std::string prompt = "Q: What is ";
  for (size_t i = 0; i < terms.size(); ++i) {
    if (i)
      prompt += terms[i].sign;
    prompt += std::to_string(terms[i].value);
    if (terms[i].factor)
      prompt += "*" + std::to_string(terms[i].factor);
  }
  prompt += "?\nA: ";
  return finish(std::move(prompt), std::move(working), result);
}

struct Person {
  const char *name, *pronoun;
};
constexpr Person kPeople[] = {{"Ana", "She"}, {"Ben", "He"},   {"Cleo", "She"}, {"Dev", "He"},
                              {"Eva", "She"}, {"Finn", "He"},  {"Gia", "She"},  {"Hugo", "He"},
                              {"Ivy", "She"}, {"Jon", "He"},   {"Kira", "She"}, {"Leo", "He"},
                              {"Mia", "She"}, {"Noah", "He"},  {"Omar", "He"},  {"Pia", "She"},
                              {"Raj", "He"},  {"Sara", "She"}, {"Tom", "He"},   {"Uma", "She"}};
constexpr const char *kItems[] = {"apples", "pens",  "coins",  "books",   "shells",
                                  "stamps", "cards", "eggs",   "marbles", "beads",
                                  "seeds",  "bolts", "stones", "shirts",  "cups"};
constexpr const char *kContainers[] = {"boxes", "bags", "packs", "crates", "jars"};
constexpr const char *kGains[] = {"gets {0} more", "finds {0}", "buys {0}", "wins {0}"};
constexpr const char *kLosses[] = {"gives away {0}", "sells {0}", "loses {0}", "uses {0}"};
constexpr const char *kGroupGains[] = {"buys {0} {1} of {2}", "gets {0} {1} of {2}"};
constexpr const char *kGroupLosses[] = {"sells {0} {1} of {2}", "gives away {0} {1} of {2}"};

/// "Ana has 347 apples. She buys 5 boxes of 28, gives away 119, then doubles them. How many
/// apples now?": a starting amount and a chain of events, each event one step (a gain, a loss,
/// doubling or tripling) or two (a number of groups: the product, then the gain or loss).
Problem wordProblem(CounterRng &rng, int64_t maxDigits, int64_t steps) {
  const Person &person = rng.pick(kPeople);
  const char *items = rng.pick(kItems);
  // Group sizes have about half the digits, so the products stay readable.
  int64_t groupDigits = std::max<int64_t>(1, std::min(maxDigits - 1, (maxDigits + 1) / 2));

  Working working;
  int64_t value = drawNumber(rng, maxDigits);
  std::string prompt =
      llvm::formatv("Q: {0} has {1} {2}. {3} ", person.name, value, items, person.pronoun).str();
  bool scaled = false;
  std::vector<std::string> events;
  while (working.steps < steps) {
    bool twoSteps = steps - working.steps >= 2;
    int64_t kind = rng.uniform(0, 9);
    if (kind < 3 && twoSteps) {
      int64_t count = rng.uniform(2, 9);
      bool loss = value / count >= 2 && rng.chance(1, 2);
      int64_t size = drawNumber(rng, groupDigits);
      if (loss && size > value / count)
        size = 1 + (size - 1) % (value / count);
      int64_t total = working.apply(count, '*', size);
      value = working.apply(value, loss ? '-' : '+', total);
      // Two draws: named, in a fixed order (the order of function arguments is unspecified;
      // g++ and clang++ differ, and the data must not depend on the compiler).
      const char *containers = rng.pick(kContainers);
      const char *event = loss ? rng.pick(kGroupLosses) : rng.pick(kGroupGains);
      events.push_back(llvm::formatv(event, count, containers, size).str());
    } else if (kind == 3 && !scaled) {
      // Doubling at most once keeps the numbers from outgrowing the byte budget.
      scaled = true;
      int64_t factor = rng.uniform(2, 3);
      value = working.apply(value, '*', factor);
      events.push_back(factor == 2 ? "doubles them" : "triples them");
    } else if (kind < 7 && value > 0) {
      int64_t amount = drawNumber(rng, maxDigits);
      if (amount > value)
        amount = 1 + (amount - 1) % value;
      value = working.apply(value, '-', amount);
      events.push_back(llvm::formatv(rng.pick(kLosses), amount).str());
    } else {
      int64_t amount = drawNumber(rng, maxDigits);
      value = working.apply(value, '+', amount);
      events.push_back(llvm::formatv(rng.pick(kGains), amount).str());
    }
  }
  for (size_t i = 0; i < events.size(); ++i) {
    if (i)
      prompt += i + 1 == events.size() ? ", then " : ", ";
    prompt += events[i];
  }
  prompt += llvm::formatv(". How many {0} now?\nA: ", items).str();
  return finish(std::move(prompt), std::move(working), value);
}

/// Candidate number `draw` for problem `index`; the caller keeps it only when its split matches.
Problem candidateProblem(const Settings &settings, uint64_t key) {
  CounterRng rng(key);
  // Over-long candidates are redrawn from the same stream; the last resort, a one-step problem,
  // fits any byte budget (two 9-digit numbers and their sum take about 80 bytes).
  for (int attempt = 0; attempt < 16; ++attempt) {
    int64_t steps = rng.uniform(settings.minSteps, settings.maxSteps);
    // Stage 1 mixes in short word problems so that stage 2's format is not new to the model.
    bool word = settings.isLong || rng.chance(1, 3);
    Problem p = word ? wordProblem(rng, settings.maxDigits, steps)
                     : arithmeticProblem(rng, settings.maxDigits, steps);
    if (p.prompt.size() + p.completion.size() <= settings.maxBytes)
      return p;
  }
  return arithmeticProblem(rng, settings.maxDigits, 1);
}

} // namespace

Problem nestor::data::reasoningProblem(const spec::ReasoningData &settings, Difficulty difficulty,
                                       uint64_t seed, bool validation, uint64_t index) {
  Settings s = settingsFor(settings, difficulty);
  uint64_t key =
      combine(combine(combine(combine(seed, kProblemStream), static_cast<uint64_t>(difficulty)),
                      validation),
              index);
  // Rejection over the hash class: a train candidate lands in validation 1 time in 20, so
  // training needs ~1.05 draws and validation ~20. The bound is far out of reach (the chance of
  // 4096 misses is below 1e-90); past it, the last candidate is returned rather than looping.
  Problem p;
  for (uint64_t draw = 0; draw < 4096; ++draw) {
    p = candidateProblem(s, combine(key, draw));
    if (isValidationText(p.prompt) == validation)
      return p;
  }
  return p;
}

bool nestor::data::problemRow(const Problem &problem, int64_t length, int32_t *tokens,
                              int32_t *targets) {
  int64_t promptSize = problem.prompt.size(), completionSize = problem.completion.size();
  int64_t end = 1 + promptSize + completionSize; // position of kEos
  if (end + 1 > length)
    return false;
  tokens[0] = kBos;
  for (int64_t i = 0; i < promptSize; ++i)
    tokens[1 + i] = static_cast<unsigned char>(problem.prompt[i]);
  for (int64_t i = 0; i < completionSize; ++i)
    tokens[1 + promptSize + i] = static_cast<unsigned char>(problem.completion[i]);
  tokens[end] = kEos;
  std::fill(tokens + end + 1, tokens + length, kPad);
  std::fill(targets, targets + length, -1);
  // Position t predicts token t+1: the last prompt byte predicts the first completion byte, and
  // the last completion byte predicts kEos.
  for (int64_t t = promptSize; t < end; ++t)
    targets[t] = tokens[t + 1];
  return true;
}

train::BatchFn DataSource::batchFn() const {
  return [this](const BatchRequest &request, int32_t *tokens, int32_t *targets) {
    batch(request, tokens, targets);
  };
}

namespace {

/// Copies `row` (length + 1 tokens) into one row of tokens and next-token targets.
void emitRow(const std::vector<int32_t> &row, int64_t length, int32_t *tokens, int32_t *targets) {
  std::copy(row.begin(), row.begin() + length, tokens);
  std::copy(row.begin() + 1, row.begin() + length + 1, targets);
}

class ReasoningSource final : public DataSource {
public:
  ReasoningSource(spec::ReasoningData settings, uint64_t seed)
      : settings(std::move(settings)), seed(seed) {}

  void batch(const BatchRequest &request, int32_t *tokens, int32_t *targets) const override {
    assert(request.length > 0 && request.batch >= 0 && "bad batch shape");
    std::vector<int32_t> row(request.length + 1);
    for (int64_t r = 0; r < request.batch; ++r) {
      // Each row starts its own run of problem numbers at a hashed offset; runs of a few
      // problems out of 2^64 numbers never meet in practice.
      uint64_t first = seed;
      for (uint64_t v : {uint64_t(kReasoningRowStream), uint64_t(request.validation),
                         uint64_t(request.difficulty), uint64_t(request.index), uint64_t(r),
                         uint64_t(request.length)})
        first = combine(first, v);
      size_t filled = 0;
      for (uint64_t doc = 0; filled < row.size(); ++doc) {
        Problem p =
            reasoningProblem(settings, request.difficulty, seed, request.validation, first + doc);
        auto put = [&](int32_t token) {
          if (filled < row.size())
            row[filled++] = token;
        };
        put(kBos);
        for (unsigned char c : p.prompt)
          put(c);
        for (unsigned char c : p.completion)
          put(c);
        put(kEos);
      }
      emitRow(row, request.length, tokens + r * request.length, targets + r * request.length);
    }
  }

  std::vector<Problem> heldOutProblems(Difficulty difficulty, int64_t count) const override {
    std::vector<Problem> problems;
    for (int64_t i = 0; i < count; ++i)
      problems.push_back(reasoningProblem(settings, difficulty, seed, true, i));
    return problems;
  }

  std::string describe() const override {
    return llvm::formatv("reasoning generator (seed {0})", seed).str();
  }

private:
  spec::ReasoningData settings;
  uint64_t seed;
};

std::string formatBytes(uint64_t bytes) {
  if (bytes < 1000)
    return llvm::formatv("{0} B", bytes).str();
  if (bytes < 1000 * 1000)
    return llvm::formatv("{0:F1} kB", bytes / 1e3).str();
  return llvm::formatv("{0:F1} MB", bytes / 1e6).str();
}

class TextFileSource final : public DataSource {
public:
  TextFileSource(std::vector<int32_t> train, std::vector<int32_t> validation, size_t files,
                 uint64_t bytes, double fraction, uint64_t seed)
      : trainStream(std::move(train)), validationStream(std::move(validation)), files(files),
        bytes(bytes), fraction(fraction), seed(seed) {}

  void batch(const BatchRequest &request, int32_t *tokens, int32_t *targets) const override {
    assert(request.length > 0 && request.batch >= 0 && "bad batch shape");
    const std::vector<int32_t> &stream = request.validation ? validationStream : trainStream;
    std::vector<int32_t> row(request.length + 1);
    for (int64_t r = 0; r < request.batch; ++r) {
      uint64_t key = seed;
      for (uint64_t v : {uint64_t(kTextWindowStream), uint64_t(request.validation),
                         uint64_t(request.index), uint64_t(r)})
        key = combine(key, v);
      // The stream is a cycle (it ends in kEos and starts with kBos), so a window that runs off
      // the end, or one longer than the whole stream, continues at the start.
      size_t at = key % stream.size();
      for (int64_t t = 0; t <= request.length; ++t) {
        row[t] = stream[at];
        if (++at == stream.size())
          at = 0;
      }
      emitRow(row, request.length, tokens + r * request.length, targets + r * request.length);
    }
  }

  std::vector<Problem> heldOutProblems(Difficulty, int64_t) const override { return {}; }

  std::string describe() const override {
    char percent[32];
    std::snprintf(percent, sizeof(percent), "%g", fraction * 100);
    return llvm::formatv("{0} text file{1}, {2} ({3}% validation)", files, files == 1 ? "" : "s",
                         formatBytes(bytes), percent)
        .str();
  }

private:
  std::vector<int32_t> trainStream, validationStream;
  size_t files;
  uint64_t bytes;
  double fraction;
  uint64_t seed;
};

llvm::Error fileError(llvm::StringRef field, llvm::StringRef path, const llvm::Twine &what) {
  return llvm::createStringError(field + ": '" + path + "' " + what);
}

void appendDocument(std::vector<int32_t> &stream, llvm::StringRef bytes) {
  stream.push_back(kBos);
  for (unsigned char c : bytes)
    stream.push_back(c);
  stream.push_back(kEos);
}

llvm::Expected<std::unique_ptr<DataSource>>
makeTextFileSource(const spec::Data &data, llvm::StringRef specDir, uint64_t seed) {
  double fraction = data.has_validation_fraction() ? data.validation_fraction() : 0.05;
  if (!(fraction > 0 && fraction < 1))
    return llvm::createStringError(std::errc::invalid_argument,
                                   "data.validation_fraction: must be in (0, 1), is %g", fraction);
  std::vector<int32_t> train, validation;
  uint64_t total = 0;
  for (int i = 0; i < data.text_files_size(); ++i) {
    std::string field = llvm::formatv("data.text_files[{0}]", i).str();
    // Relative paths are relative to the spec's directory, as in spec::resolveSpecRelativePath
    // (which takes the spec file rather than its directory).
    llvm::SmallString<256> path;
    if (llvm::sys::path::is_absolute(data.text_files(i)) || specDir.empty())
      path = data.text_files(i);
    else
      llvm::sys::path::append(path, specDir, data.text_files(i));
    auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                              /*RequiresNullTerminator=*/false);
    if (!buffer)
      return fileError(field, path, "cannot be read: " + buffer.getError().message());
    llvm::StringRef bytes = (*buffer)->getBuffer();
    // The reserved bytes would be read as document boundaries; text never contains them.
    size_t reserved = bytes.find_first_of(llvm::StringRef("\0\1\2", 3));
    if (reserved != llvm::StringRef::npos)
      return fileError(field, path,
                       llvm::formatv("holds byte {0} at offset {1}, which the byte tokenizer "
                                     "reserves (0 pad, 1 begin, 2 end); is it a text file?",
                                     int(static_cast<unsigned char>(bytes[reserved])), reserved));
    // Each file gives both splits at least one byte, so a file too short for that is an error.
    if (bytes.size() < 2)
      return fileError(field, path,
                       llvm::formatv("has {0} byte{1}; it needs at least 2 to give both the "
                                     "train and the validation split a part",
                                     bytes.size(), bytes.size() == 1 ? "" : "s"));
    size_t validationBytes =
        std::clamp<size_t>(std::llround(bytes.size() * fraction), 1, bytes.size() - 1);
    // The end of each file is held out, so validation text is never seen in training.
    appendDocument(train, bytes.drop_back(validationBytes));
    appendDocument(validation, bytes.take_back(validationBytes));
    total += bytes.size();
  }
  return std::make_unique<TextFileSource>(std::move(train), std::move(validation),
                                          data.text_files_size(), total, fraction, seed);
}

} // namespace

llvm::Expected<std::unique_ptr<DataSource>>
nestor::data::makeDataSource(const spec::ModelSpec &spec, llvm::StringRef specDir) {
  const spec::Data &data = spec.data();
  if (data.tokenizer() != spec::BYTE && data.tokenizer() != spec::TOKENIZER_UNSPECIFIED)
    return llvm::createStringError(std::errc::invalid_argument,
                                   "data.tokenizer: unsupported tokenizer %d",
                                   int(data.tokenizer()));
  if (spec.architecture().vocab_size() < kByteVocabSize)
    return llvm::createStringError(
        std::errc::invalid_argument,
        "data.tokenizer: the byte tokenizer needs architecture.vocab_size >= %d (is %lld)",
        kByteVocabSize, static_cast<long long>(spec.architecture().vocab_size()));
  uint64_t seed = data.has_seed()              ? data.seed()
                  : spec.training().has_seed() ? spec.training().seed()
                                               : 0;
  if (data.text_files_size() > 0)
    return makeTextFileSource(data, specDir, seed);
  return std::make_unique<ReasoningSource>(data.reasoning(), seed);
}
