// A small JSON value for ordo-bench results: build, dump, parse. The project
// has no JSON dependency; results are flat objects of numbers and strings, so
// a few hundred lines are enough. Objects keep their keys in insertion order
// so the files diff well between runs.
#pragma once

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace ordo::bench {

class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;

  Json() = default;  // null
  Json(std::nullptr_t) {}  // NOLINT
  Json(bool b) : v_(b) {}  // NOLINT
  Json(double d) : v_(d) {}  // NOLINT
  Json(int i) : v_(static_cast<double>(i)) {}  // NOLINT
  Json(int64_t i) : v_(static_cast<double>(i)) {}  // NOLINT
  Json(uint64_t i) : v_(static_cast<double>(i)) {}  // NOLINT
  Json(uint32_t i) : v_(static_cast<double>(i)) {}  // NOLINT
  Json(const char* s) : v_(std::string(s)) {}  // NOLINT
  Json(std::string s) : v_(std::move(s)) {}  // NOLINT
  Json(Array a) : v_(std::move(a)) {}  // NOLINT
  Json(Object o) : v_(std::move(o)) {}  // NOLINT
  // An optional number: null when absent (e.g. CPU of external brokers).
  static Json Maybe(std::optional<double> d) { return d ? Json(*d) : Json(); }

  static Json MakeObject() { return Json(Object{}); }
  static Json MakeArray() { return Json(Array{}); }

  bool is_null() const { return v_.index() == 0; }
  bool is_bool() const { return v_.index() == 1; }
  bool is_number() const { return v_.index() == 2; }
  bool is_string() const { return v_.index() == 3; }
  bool is_array() const { return v_.index() == 4; }
  bool is_object() const { return v_.index() == 5; }

  bool boolean() const { return std::get<bool>(v_); }
  double number() const { return std::get<double>(v_); }
  const std::string& string() const { return std::get<std::string>(v_); }
  const Array& array() const { return std::get<Array>(v_); }
  Array& array() { return std::get<Array>(v_); }
  const Object& object() const { return std::get<Object>(v_); }

  // Object access: sets (replacing) or adds a key.
  Json& operator[](const std::string& key) {
    auto& o = std::get<Object>(v_);
    for (auto& [k, v] : o) {
      if (k == key) return v;
    }
    o.emplace_back(key, Json());
    return o.back().second;
  }
  // nullptr when absent or not an object.
  const Json* Find(std::string_view key) const {
    if (!is_object()) return nullptr;
    for (const auto& [k, v] : object()) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  // A number at a dotted path ("throughput.msgs_per_s"), if present.
  std::optional<double> NumberAt(std::string_view path) const {
    const Json* j = this;
    while (j) {
      const size_t dot = path.find('.');
      j = j->Find(path.substr(0, dot));
      if (dot == std::string_view::npos) break;
      path.remove_prefix(dot + 1);
    }
    if (j && j->is_number()) return j->number();
    return std::nullopt;
  }
  void Push(Json j) { std::get<Array>(v_).push_back(std::move(j)); }

  std::string Dump(int indent = 2) const {
    std::string out;
    DumpTo(out, indent, 0);
    out += '\n';
    return out;
  }

  // Throws std::runtime_error naming the byte offset on malformed input.
  static Json Parse(std::string_view text) {
    size_t pos = 0;
    Json j = ParseValue(text, pos, 0);
    SkipSpace(text, pos);
    if (pos != text.size()) Fail("trailing characters", pos);
    return j;
  }

 private:
  static void Fail(const char* what, size_t pos) {
    throw std::runtime_error(std::string("JSON: ") + what + " at byte " + std::to_string(pos));
  }
  static void SkipSpace(std::string_view s, size_t& p) {
    while (p < s.size() && (s[p] == ' ' || s[p] == '\n' || s[p] == '\t' || s[p] == '\r')) ++p;
  }
  static std::string ParseString(std::string_view s, size_t& p) {
    if (p >= s.size() || s[p] != '"') Fail("expected a string", p);
    ++p;
    std::string out;
    while (true) {
      if (p >= s.size()) Fail("unterminated string", p);
      const char c = s[p++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) Fail("control character in string", p);
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p >= s.size()) Fail("unterminated escape", p);
      const char e = s[p++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (p + 4 > s.size()) Fail("short \\u escape", p);
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i, ++p) {
            const char h = s[p];
            if (!std::isxdigit(static_cast<unsigned char>(h))) Fail("bad \\u escape", p);
            cp = cp * 16 + static_cast<unsigned>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: Fail("bad escape", p);
      }
    }
  }
  static Json ParseValue(std::string_view s, size_t& p, int depth) {
    if (depth > 64) Fail("nested too deeply", p);
    SkipSpace(s, p);
    if (p >= s.size()) Fail("unexpected end", p);
    const char c = s[p];
    if (c == '{') {
      ++p;
      Json o = MakeObject();
      SkipSpace(s, p);
      if (p < s.size() && s[p] == '}') return ++p, o;
      while (true) {
        SkipSpace(s, p);
        std::string key = ParseString(s, p);
        SkipSpace(s, p);
        if (p >= s.size() || s[p] != ':') Fail("expected ':'", p);
        ++p;
        o[key] = ParseValue(s, p, depth + 1);
        SkipSpace(s, p);
        if (p < s.size() && s[p] == ',') { ++p; continue; }
        if (p < s.size() && s[p] == '}') return ++p, o;
        Fail("expected ',' or '}'", p);
      }
    }
    if (c == '[') {
      ++p;
      Json a = MakeArray();
      SkipSpace(s, p);
      if (p < s.size() && s[p] == ']') return ++p, a;
      while (true) {
        a.Push(ParseValue(s, p, depth + 1));
        SkipSpace(s, p);
        if (p < s.size() && s[p] == ',') { ++p; continue; }
        if (p < s.size() && s[p] == ']') return ++p, a;
        Fail("expected ',' or ']'", p);
      }
    }
    if (c == '"') return Json(ParseString(s, p));
    if (s.substr(p, 4) == "true") return p += 4, Json(true);
    if (s.substr(p, 5) == "false") return p += 5, Json(false);
    if (s.substr(p, 4) == "null") return p += 4, Json();
    const size_t start = p;
    if (p < s.size() && s[p] == '-') ++p;
    while (p < s.size() && (std::isdigit(static_cast<unsigned char>(s[p])) || s[p] == '.' ||
                            s[p] == 'e' || s[p] == 'E' || s[p] == '+' || s[p] == '-')) {
      ++p;
    }
    if (p == start) Fail("unexpected character", p);
    try {
      size_t used = 0;
      const std::string num(s.substr(start, p - start));
      const double d = std::stod(num, &used);
      if (used != num.size()) Fail("bad number", start);
      return Json(d);
    } catch (const std::logic_error&) {
      Fail("bad number", start);
    }
    return Json();
  }
  static void Escape(std::string& out, const std::string& s) {
    out += '"';
    for (const char c : s) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (c == '\n') {
        out += "\\n";
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        out += buf;
      } else {
        out += c;
      }
    }
    out += '"';
  }
  void DumpTo(std::string& out, int indent, int level) const {
    const std::string pad(static_cast<size_t>(indent * (level + 1)), ' ');
    const std::string end_pad(static_cast<size_t>(indent * level), ' ');
    switch (v_.index()) {
      case 0: out += "null"; break;
      case 1: out += std::get<bool>(v_) ? "true" : "false"; break;
      case 2: {
        const double d = std::get<double>(v_);
        if (!std::isfinite(d)) {
          out += "null";
        } else if (d == std::floor(d) && std::fabs(d) < 1e15) {
          out += std::to_string(static_cast<int64_t>(d));
        } else {
          char buf[32];
          std::snprintf(buf, sizeof buf, "%.6g", d);
          out += buf;
        }
        break;
      }
      case 3: Escape(out, std::get<std::string>(v_)); break;
      case 4: {
        const auto& a = std::get<Array>(v_);
        if (a.empty()) { out += "[]"; break; }
        out += "[\n";
        for (size_t i = 0; i < a.size(); ++i) {
          out += pad;
          a[i].DumpTo(out, indent, level + 1);
          out += i + 1 < a.size() ? ",\n" : "\n";
        }
        out += end_pad + "]";
        break;
      }
      case 5: {
        const auto& o = std::get<Object>(v_);
        if (o.empty()) { out += "{}"; break; }
        out += "{\n";
        for (size_t i = 0; i < o.size(); ++i) {
          out += pad;
          Escape(out, o[i].first);
          out += ": ";
          o[i].second.DumpTo(out, indent, level + 1);
          out += i + 1 < o.size() ? ",\n" : "\n";
        }
        out += end_pad + "}";
        break;
      }
    }
  }

  std::variant<std::monostate, bool, double, std::string, Array, Object> v_;
};

}  // namespace ordo::bench
