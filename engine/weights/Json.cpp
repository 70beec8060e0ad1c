//===- Json.cpp - Strict JSON parsing for the files Nestor reads -----------===//
#include "nestor/Json.h"

#include <set>
#include <vector>

nestor::json::StrictParse nestor::json::parseStrict(std::string_view text) {
  StrictParse out;
  std::vector<std::set<std::string>> openObjects;
  auto checkKeys = [&](int, nlohmann::json::parse_event_t event, nlohmann::json &parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start)
      openObjects.emplace_back();
    else if (event == Event::object_end)
      openObjects.pop_back();
    else if (event == Event::key && !openObjects.back().insert(parsed.get<std::string>()).second &&
             !out.repeatedKey)
      out.repeatedKey = parsed.get<std::string>();
    return true;
  };
  try {
    out.value = nlohmann::json::parse(text.begin(), text.end(), checkKeys);
  } catch (const nlohmann::json::exception &e) {
    // parse_error for bad syntax, out_of_range for a number that overflows (1e400).
    std::string_view what = e.what();
    size_t close = what.find("] ");
    if (what.substr(0, 1) == "[" && close != std::string_view::npos)
      what = what.substr(close + 2);
    out.syntaxError = std::string(what);
  }
  return out;
}
