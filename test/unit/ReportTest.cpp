//===- ReportTest.cpp - The HTML report of a training run -----------------===//
//
// Builds a synthetic run (10 parent steps, 30 elastic steps over two stages sampling two
// budgets, evaluations, a heterogeneous Mamba-heads axis, a dropped layer) as metrics.jsonl
// and summary.json text and checks the page: one HTML document with the expected plots, a
// curve per budget, the final table's numbers, escaped names, the dropped layer, finite
// coordinates whatever the data, no scripts or external references, and errors that name the
// file and line.
//
//===----------------------------------------------------------------------===//
#include "nestor/Report.h"

#include "nlohmann/json.hpp"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

using namespace nestor;
using nlohmann::json;

namespace {

struct SyntheticRun {
  std::vector<std::string> budgets = {"full", "half"};
  int parentSteps = 10, elasticSteps = 30;
  double hugeLossAt = -1; // an elastic step whose loss diverges
};

std::string metricsText(const SyntheticRun &run) {
  std::string out;
  for (int s = 0; s < run.parentSteps; ++s)
    out += json({{"kind", "step"},
                 {"phase", "parent"},
                 {"stage", -1},
                 {"step", s},
                 {"budget", "parent"},
                 {"budget_index", -1},
                 {"loss", 6.0 - 0.3 * s},
                 {"kd", 0.0},
                 {"ce", 6.0 - 0.3 * s},
                 {"router_loss", 0.0},
                 {"grad_norm", 1.5},
                 {"lr", 1e-3},
                 {"tau", 1.0},
                 {"logit_scale", 1.0},
                 {"tokens_per_s", 5000.0},
                 {"seconds", 0.5}})
               .dump() +
           "\n";
  out += json({{"kind", "eval"},
               {"phase", "parent"},
               {"step", run.parentSteps - 1},
               {"budget", "parent"},
               {"validation_loss", 3.3},
               {"accuracy", 0.31}})
             .dump() +
         "\n";
  out += json({{"kind", "message"}, {"text", "parent phase done <ok>"}}).dump() + "\n";
  size_t nb = run.budgets.size();
  for (int s = 0; s < run.elasticSteps; ++s) {
    int stage = s < run.elasticSteps / 2 ? 0 : 1;
    size_t b = size_t(s) % nb;
    json choices = json::object();
    for (size_t k = 0; k < nb; ++k)
      choices[run.budgets[k]] = {
          {"hidden_size", json::array({k == 0 ? 0 : (s < 10 ? 1 : 2)})},
          {"mamba_num_heads", k == 0 ? json::array({0, 0, 0}) : json::array({1, 2, 1})},
          {"depth", json::array({k == 0 ? 0 : 1})}};
    double loss = 3.5 - 0.02 * s + 0.1 * std::sin(s) + 0.2 * double(b);
    if (s == run.hugeLossAt)
      loss = 1e300;
    out += json({{"kind", "step"},
                 {"phase", stage == 0 ? "stage1" : "stage2"},
                 {"stage", stage},
                 {"step", s},
                 {"budget", run.budgets[b]},
                 {"budget_index", b},
                 {"loss", loss},
                 {"kd", loss - 1},
                 {"ce", 1.0},
                 {"router_loss", 0.01},
                 {"grad_norm", 0.9},
                 {"lr", 5e-4},
                 {"tau", 1.0 - 0.02 * s},
                 {"logit_scale", 1.0 + 0.1 * s},
                 {"tokens_per_s", 4000.0},
                 {"seconds", 0.7},
                 {"choices", choices},
                 {"a_future_field", "ignored"}})
               .dump() +
           "\n";
    if (run.elasticSteps > 1 && (s == run.elasticSteps / 2 - 1 || s == run.elasticSteps - 1))
      for (const std::string &budget : run.budgets)
        out += json({{"kind", "eval"},
                     {"phase", stage == 0 ? "stage1" : "stage2"},
                     {"step", s},
                     {"budget", budget},
                     {"validation_loss", 3.0},
                     {"accuracy", nullptr}})
                   .dump() +
               "\n";
  }
  out += json({{"kind", "checkpoint"}, {"path", "step30.safetensors"}}).dump() + "\n";
  return out;
}

json layer(char kind, bool kept, int fraction) {
  json l = {{"kind", std::string(1, kind)}, {"kept", kept}};
  if (kind == 'M')
    l["mamba_num_heads"] = 8 - 2 * fraction, l["mamba_head_dim"] = 16;
  else if (kind == '*')
    l["num_attention_heads"] = 4;
  else
    l["intermediate_size"] = 256 - 64 * fraction;
  return l;
}

/// Pattern "M-*M-M": the second budget drops layer 4 (an MLP) and narrows the rest.
std::string summaryText(const SyntheticRun &run) {
  const std::string pattern = "M-*M-M";
  json rows = json::array();
  auto architecture = [&](int fraction) {
    json layers = json::array();
    for (size_t j = 0; j < pattern.size(); ++j)
      layers.push_back(layer(pattern[j], !(fraction > 0 && j == 4), fraction));
    return json{{"hidden_size", 64 - 16 * fraction}, {"layers", layers}};
  };
  rows.push_back({{"name", "parent"},
                  {"fraction", 1.0},
                  {"params", 1000000},
                  {"validation_loss", 2.5},
                  {"accuracy", 0.4},
                  {"baseline_loss", nullptr},
                  {"baseline_accuracy", nullptr},
                  {"architecture", architecture(0)}});
  for (size_t k = 0; k < run.budgets.size(); ++k) {
    bool half = k > 0;
    rows.push_back({{"name", run.budgets[k]},
                    {"fraction", half ? 0.5 : 1.0},
                    {"params", half ? 512345 : 1000000},
                    {"validation_loss", half ? 2.8123 : 2.51},
                    {"accuracy", half ? json(0.35) : json(nullptr)},
                    {"baseline_loss", half ? 3.1 : 2.5},
                    {"baseline_accuracy", half ? 0.3 : 0.4},
                    {"token_accuracy", half ? 0.875 : 0.9},
                    {"baseline_token_accuracy", half ? 0.625 : 0.9},
                    {"architecture", architecture(half ? 1 : 0)}});
  }
  return json({{"name", "tiny-hybrid"},
               {"pattern", pattern},
               {"tokens", 1234567},
               {"axes",
                {{"hidden_size", {64, 48, 32}},
                 {"mamba_num_heads", {8, 6, 4}},
                 {"depth", {0, 1, 2}}}},
               {"rows", rows},
               {"parent_sizes",
                {{"hidden_size", 64},
                 {"intermediate_size", 256},
                 {"num_attention_heads", 4},
                 {"mamba_num_heads", 8},
                 {"mamba_head_dim", 16}}}})
      .dump(1);
}

std::string render(const std::string &metrics, const std::string &summary) {
  auto page = report::renderReport(metrics, summary);
  if (!page) {
    ADD_FAILURE() << llvm::toString(page.takeError());
    return "";
  }
  return *page;
}

std::string renderError(const std::string &metrics, const std::string &summary,
                        llvm::StringRef metricsName = "metrics.jsonl") {
  auto page = report::renderReport(metrics, summary, metricsName);
  if (page) {
    ADD_FAILURE() << "expected an error";
    return "";
  }
  return llvm::toString(page.takeError());
}

size_t count(const std::string &text, const std::string &needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
    ++n;
  return n;
}

/// The <svg> element whose class list has `cssClass`, or "".
std::string svgWithClass(const std::string &page, const std::string &cssClass) {
  size_t at = page.find("<svg class=\"plot " + cssClass);
  if (at == std::string::npos)
    return "";
  return page.substr(at, page.find("</svg>", at) + 6 - at);
}

/// Every number in a geometry attribute of the page's SVG must be finite.
void expectFiniteGeometry(const std::string &page) {
  static const std::regex attribute(
      R"re(\s(points|x|y|x1|x2|y1|y2|cx|cy|r|width|height|d|viewBox)="([^"]*)")re");
  static const std::regex number(R"([-+0-9.eE]+|[A-Za-z]+)");
  size_t attributes = 0;
  for (std::sregex_iterator it(page.begin(), page.end(), attribute), end; it != end; ++it) {
    std::string value = (*it)[2];
    ++attributes;
    std::string lower = value;
    for (char &c : lower)
      c = char(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(lower.find("nan"), std::string::npos) << (*it)[0];
    EXPECT_EQ(lower.find("inf"), std::string::npos) << (*it)[0];
    for (std::sregex_iterator n(value.begin(), value.end(), number); n != end; ++n) {
      std::string token = (*n)[0];
      if (std::isalpha(static_cast<unsigned char>(token[0])))
        continue; // path commands
      EXPECT_TRUE(std::isfinite(std::strtod(token.c_str(), nullptr))) << (*it)[0];
    }
  }
  EXPECT_GT(attributes, 0u);
}

TEST(Report, OneDocumentWithEveryPlot) {
  SyntheticRun run;
  std::string page = render(metricsText(run), summaryText(run));
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count(page, "<html"), 1u);
  EXPECT_EQ(count(page, "</html>"), 1u);
  EXPECT_EQ(count(page, "<body>"), 1u);
  // Parent loss, elastic loss, tau, logit scale, three router axes, architecture, params.
  EXPECT_EQ(count(page, "<svg "), 9u);
  EXPECT_EQ(count(page, "</svg>"), 9u);
  for (const char *plot :
       {"loss-parent", "loss-elastic", "tau", "logit-scale", "choices axis-hidden_size",
        "choices axis-mamba_num_heads", "choices axis-depth", "architecture", "params"})
    EXPECT_FALSE(svgWithClass(page, plot).empty()) << plot;
  EXPECT_NE(page.find("<h1>tiny-hybrid</h1>"), std::string::npos);
  EXPECT_NE(page.find("1.23 M"), std::string::npos); // tokens
  EXPECT_NE(page.find("<table>"), std::string::npos);
  EXPECT_NE(page.find("parent phase done &lt;ok&gt;"), std::string::npos);
  EXPECT_EQ(page.find("no summary yet"), std::string::npos);
}

TEST(Report, LossPlotHasACurvePerBudgetAndEvalMarkers) {
  SyntheticRun run;
  std::string page = render(metricsText(run), summaryText(run));
  std::string elastic = svgWithClass(page, "loss-elastic");
  ASSERT_FALSE(elastic.empty());
  EXPECT_EQ(count(elastic, "<polyline class=\"smooth\""), 2u);
  EXPECT_EQ(count(elastic, "<polyline class=\"raw\""), 2u);
  EXPECT_EQ(count(elastic, "class=\"eval\""), 4u); // two evaluations of two budgets
  // Each budget keeps one colour everywhere (the palette's first two).
  EXPECT_NE(elastic.find("stroke=\"#4e79a7\""), std::string::npos);
  EXPECT_NE(elastic.find("stroke=\"#f28e2b\""), std::string::npos);
  // 15 points per budget, one dot each.
  EXPECT_EQ(count(elastic, "<circle class=\"dot\""), 30u);
  // Both stages are marked on the step axis.
  EXPECT_NE(elastic.find(">stage1</text>"), std::string::npos);
  EXPECT_NE(elastic.find(">stage2</text>"), std::string::npos);
  EXPECT_EQ(count(elastic, "<line class=\"stage\""), 1u);
  std::string parent = svgWithClass(page, "loss-parent");
  EXPECT_EQ(count(parent, "<polyline class=\"smooth\""), 1u);
  EXPECT_EQ(count(parent, "class=\"eval\""), 1u);
}

TEST(Report, RouterChoicesMapIndicesToSizes) {
  SyntheticRun run;
  std::string page = render(metricsText(run), summaryText(run));
  std::string heads = svgWithClass(page, "choices axis-mamba_num_heads");
  // Indices [1, 2, 1] of sizes {8, 6, 4}: a mean over layers, per-layer sizes on hover.
  EXPECT_NE(heads.find("per layer 6 4 6"), std::string::npos);
  EXPECT_NE(heads.find("mean size over layers"), std::string::npos);
  std::string hidden = svgWithClass(page, "choices axis-hidden_size");
  for (const char *tick : {">64</text>", ">48</text>", ">32</text>"})
    EXPECT_NE(hidden.find(tick), std::string::npos) << tick;
  std::string depth = svgWithClass(page, "choices axis-depth");
  EXPECT_NE(depth.find("layers dropped"), std::string::npos);
  EXPECT_EQ(count(depth, "class=\"line\""), 2u);
}

TEST(Report, FinalTableHasARowPerModel) {
  SyntheticRun run;
  std::string page = render(metricsText(run), summaryText(run));
  size_t table = page.find("<table>");
  ASSERT_NE(table, std::string::npos);
  std::string body = page.substr(table, page.find("</table>") - table);
  EXPECT_EQ(count(body, "<tr><td>"), 3u);
  for (const char *cell : {">512,345</td>", ">1,000,000</td>", "<td>0.500</td>", "<td>51.2%</td>",
                           "<td>2.8123</td>", "<td>35.0%</td>", "<td>3.1000</td>", "<td>30.0%</td>",
                           "-0.2877</td>", "+0.0100</td>", "<td>87.5%</td>", "<td>62.5%</td>"})
    EXPECT_NE(body.find(cell), std::string::npos) << cell;
  // The parent has no baseline; "full" has no accuracy.
  EXPECT_GE(count(body, "<td>–</td>"), 4u);
  EXPECT_EQ(body.find("nan"), std::string::npos);
}

TEST(Report, NamesAreEscaped) {
  SyntheticRun run;
  run.budgets = {"<b>big</b>", "50% & \"small\""};
  std::string page = render(metricsText(run), summaryText(run));
  EXPECT_EQ(page.find("<b>"), std::string::npos);
  EXPECT_EQ(page.find("\"small\""), std::string::npos);
  EXPECT_NE(page.find("&lt;b&gt;big&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(page.find("50% &amp; &quot;small&quot;"), std::string::npos);
}

TEST(Report, DroppedLayerIsMarked) {
  SyntheticRun run;
  std::string page = render(metricsText(run), summaryText(run));
  std::string grid = svgWithClass(page, "architecture");
  ASSERT_FALSE(grid.empty());
  // Three models of six layers; only "half" drops one.
  EXPECT_EQ(count(grid, "<g class=\"cell "), 18u);
  EXPECT_EQ(count(grid, "<g class=\"cell dropped\""), 1u);
  EXPECT_NE(grid.find("<title>half · layer 4 · MLP · dropped</title>"), std::string::npos);
  EXPECT_NE(grid.find("half · layer 0 · Mamba2 · heads 6/8 (75%), head dim 16/16 (100%)"),
            std::string::npos);
  EXPECT_NE(grid.find("hidden 48 (75%) · 5/6 layers"), std::string::npos);
  std::string params = svgWithClass(page, "params");
  EXPECT_EQ(count(params, "<g class=\"param-row\""), 3u);
  EXPECT_NE(params.find("51.2% of parent"), std::string::npos);
}

TEST(Report, ErrorsNameTheFileAndLine) {
  SyntheticRun run;
  std::string good = metricsText(run);
  std::string bad = good.substr(0, good.find('\n') + 1) + good.substr(0, good.find('\n') + 1) +
                    "{\"kind\": \"step\", oops}\n" + good;
  EXPECT_EQ(
      renderError(bad, "", "runs/x/metrics.jsonl").rfind("runs/x/metrics.jsonl:3: invalid JSON", 0),
      0u);
  EXPECT_EQ(
      renderError("{\"kind\":\"step\",\"phase\":\"parent\",\"step\":0,\"budget\":\"p\"}\n", ""),
      "metrics.jsonl:1: step record: lacks field 'loss'");
  EXPECT_EQ(renderError("\n{\"kind\":\"eval\",\"phase\":\"s\",\"step\":\"x\",\"budget\":\"b\","
                        "\"validation_loss\":1}\n",
                        ""),
            "metrics.jsonl:2: eval record: field 'step' is not an integer");
  EXPECT_EQ(renderError("{\"kind\":\"step\",\"loss\":1e999}\n", "")
                .rfind("metrics.jsonl:1: invalid JSON: number overflow", 0),
            0u);
  EXPECT_EQ(renderError("[1, 2]\n", ""), "metrics.jsonl:1: expected a JSON object");
  EXPECT_EQ(renderError("{\"text\":\"no kind\"}\n", ""), "metrics.jsonl:1: lacks field 'kind'");

  json summary = json::parse(summaryText(run));
  summary["rows"][1].erase("params");
  EXPECT_EQ(renderError(good, summary.dump()), "summary.json: rows[1]: lacks field 'params'");
  EXPECT_EQ(renderError(good, "{").rfind("summary.json: invalid JSON", 0), 0u);
}

TEST(Report, HalfWrittenLastLineIsLeftOut) {
  SyntheticRun run;
  std::string metrics = metricsText(run) + "{\"kind\":\"step\",\"pha";
  std::string page = render(metrics, "");
  EXPECT_NE(page.find("was still being written"), std::string::npos);
  // The same line with its newline is an error.
  EXPECT_FALSE(report::renderReport(metrics + "\n", ""));
}

TEST(Report, SelfContained) {
  SyntheticRun run;
  std::string page = render(metricsText(run), summaryText(run));
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("http://"), std::string::npos);
  EXPECT_EQ(page.find("https://"), std::string::npos);
  EXPECT_EQ(page.find("<link"), std::string::npos);
  EXPECT_EQ(page.find("<img"), std::string::npos);
  EXPECT_EQ(page.find("@import"), std::string::npos);
  for (size_t at = page.find("url("); at != std::string::npos; at = page.find("url(", at + 1))
    EXPECT_EQ(page.compare(at, 5, "url(#"), 0) << "only in-page references";
}

TEST(Report, SummaryLessPageShowsTheCurves) {
  SyntheticRun run;
  std::string page = render(metricsText(run), "");
  EXPECT_NE(page.find("no summary yet"), std::string::npos);
  // Both loss plots, tau, logit scale and the three router axes (as choice indices).
  EXPECT_EQ(count(page, "<svg "), 7u);
  EXPECT_EQ(count(svgWithClass(page, "loss-elastic"), "<polyline class=\"smooth\""), 2u);
  EXPECT_NE(svgWithClass(page, "choices axis-hidden_size").find("choice index"), std::string::npos);
  EXPECT_EQ(page.find("<table"), std::string::npos);
  EXPECT_EQ(page.find("</html>") + 8, page.size());
  // Whitespace only counts as no summary too.
  EXPECT_NE(render(metricsText(run), " \n").find("no summary yet"), std::string::npos);
}

TEST(Report, EmptyMetricsSayNoStepsYet) {
  std::string page = render("", "");
  EXPECT_NE(page.find("No steps yet"), std::string::npos);
  EXPECT_EQ(count(page, "<svg "), 0u);
  SyntheticRun run;
  page = render("\n\n", summaryText(run));
  EXPECT_NE(page.find("No steps yet"), std::string::npos);
  EXPECT_EQ(count(page, "<svg "), 2u); // architecture and params
  EXPECT_NE(page.find("<table>"), std::string::npos);
}

TEST(Report, CoordinatesStayFinite) {
  SyntheticRun run;
  run.hugeLossAt = 7;
  std::string page = render(metricsText(run), summaryText(run));
  expectFiniteGeometry(page);
  // Losses at the edge of double's range; a single elastic step is a single point.
  std::string metrics =
      "{\"kind\":\"step\",\"phase\":\"stage1\",\"stage\":0,\"step\":0,\"budget\":\"a\","
      "\"loss\":1.7e308,\"tau\":null,\"logit_scale\":1}\n"
      "{\"kind\":\"step\",\"phase\":\"stage1\",\"stage\":0,\"step\":1,\"budget\":\"b\","
      "\"loss\":2.5,\"tau\":0.5}\n"
      "{\"kind\":\"step\",\"phase\":\"parent\",\"step\":0,\"budget\":\"parent\",\"loss\":null}\n"
      "{\"kind\":\"eval\",\"phase\":\"stage1\",\"step\":1,\"budget\":\"b\","
      "\"validation_loss\":1e308}\n";
  page = render(metrics, "");
  expectFiniteGeometry(page);
  EXPECT_EQ(count(svgWithClass(page, "loss-elastic"), "<circle class=\"smooth\""), 2u);
  // Every loss of one series equal: a flat line, still finite.
  SyntheticRun flat;
  flat.parentSteps = 1;
  flat.elasticSteps = 1;
  expectFiniteGeometry(render(metricsText(flat), summaryText(flat)));
}

TEST(Report, WriteReportWritesTheRunFolder) {
  llvm::SmallString<128> dir;
  ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("nestor-report", dir));
  SyntheticRun run;
  auto inDir = [&](const char *name) {
    llvm::SmallString<128> path(dir);
    llvm::sys::path::append(path, name);
    return std::string(path);
  };
  // No metrics.jsonl: the error names it.
  auto missing = report::writeReport(dir);
  ASSERT_FALSE(missing);
  EXPECT_NE(llvm::toString(missing.takeError()).find(inDir("metrics.jsonl")), std::string::npos);
  std::ofstream(inDir("metrics.jsonl")) << metricsText(run);
  auto written = report::writeReport(dir);
  ASSERT_TRUE(bool(written)) << llvm::toString(written.takeError());
  EXPECT_EQ(*written, inDir("report.html"));
  std::ifstream in(*written);
  std::string page((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("no summary yet"), std::string::npos);
  std::ofstream(inDir("summary.json")) << summaryText(run);
  ASSERT_TRUE(bool(report::writeReport(dir)));
  std::ifstream again(*written);
  page.assign((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  EXPECT_NE(page.find("<table>"), std::string::npos);
  // Errors in summary.json name its path.
  std::ofstream(inDir("summary.json")) << "{\"name\": 1}";
  auto bad = report::writeReport(dir);
  ASSERT_FALSE(bad);
  EXPECT_NE(llvm::toString(bad.takeError()).find(inDir("summary.json") + ": "), std::string::npos);
  std::error_code ec = llvm::sys::fs::remove_directories(dir);
  EXPECT_FALSE(ec);
}

} // namespace
