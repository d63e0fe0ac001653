#include "client/cli/cli_util.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace ordo::cli {

int ExitCodeFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kTimeout:
    case ErrorCode::kUnavailable:
    case ErrorCode::kClosed:
    case ErrorCode::kBackpressure:  // the window stayed full: brokers too slow or gone
      return kExitUnavailable;
    case ErrorCode::kOffsetBelowRetained:
      return kExitBelowRetained;
    case ErrorCode::kInvalidArgument:
      return kExitUsage;
    case ErrorCode::kRejected:
    case ErrorCode::kProtocol:
      return kExitFailed;
    case ErrorCode::kAuthenticationFailed:
    case ErrorCode::kPermissionDenied:
      return kExitRefused;
    case ErrorCode::kUnknownMember:
      return kExitUnknownMember;
    case ErrorCode::kAlreadyMember:
      return kExitAlreadyMember;
    case ErrorCode::kLastVoter:
      return kExitLastVoter;
    case ErrorCode::kNotCaughtUp:
      return kExitNotCaughtUp;
    case ErrorCode::kChangeInProgress:
      return kExitChangeInProgress;
    case ErrorCode::kIntegrity:
      return kExitIntegrity;
  }
  return kExitFailed;
}

namespace {

std::string Rate(double per_second) {
  char text[32];
  if (per_second < 1000) {
    std::snprintf(text, sizeof text, "%.0f", per_second);
  } else if (per_second < 1e6) {
    std::snprintf(text, sizeof text, "%.1fk", per_second / 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.1fM", per_second / 1e6);
  }
  return text;
}

}  // namespace

std::string RenderProgress(uint64_t done, uint64_t total, double elapsed_seconds, size_t width) {
  done = std::min(done, total);
  const unsigned percent = total == 0 ? 100u : static_cast<unsigned>(done * 100 / total);
  const double rate = elapsed_seconds > 0 ? static_cast<double>(done) / elapsed_seconds : 0;
  char numbers[96];
  std::snprintf(numbers, sizeof numbers, " %3u%% %llu/%llu %s msg/s", percent,
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                Rate(rate).c_str());
  std::string suffix = numbers;
  // A bar narrower than this says nothing.
  constexpr size_t kBarColumnsMin = 10;
  if (width < suffix.size() + 2 + kBarColumnsMin) {
    suffix.erase(0, suffix.find_first_not_of(' '));
    if (suffix.size() > width) suffix.resize(width);
    return suffix;
  }
  const size_t bar = width - suffix.size() - 2;
  const size_t filled = total == 0 ? bar : static_cast<size_t>(done * bar / total);
  std::string line = "[";
  line.append(filled, '=');
  if (filled < bar) {
    line += '>';
    line.append(bar - filled - 1, ' ');
  }
  line += ']';
  return line + suffix;
}

}  // namespace ordo::cli

namespace ordo::cli {

namespace {

void ReplaceAll(std::string& s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

}  // namespace

std::string ForUsers(std::string message) {
  // Longest names first: a shorter one may be part of a longer one.
  static constexpr std::pair<std::string_view, std::string_view> kNames[] = {
      {"; split it, or raise both that option and the brokers' limits.message_bytes_max",
       "; split it, or raise both --message-bytes-max and the brokers' "
       "limits.message_bytes_max"},
      {"AsyncPublisherOptions::message_bytes_max", "--message-bytes-max"},
      {"ClientOptions::request_timeout", "--request-timeout-ms"},
      {"ClientOptions::call_timeout", "--timeout-ms"},
      {"ClientOptions::brokers", "--brokers"},
      {"ClientOptions::credentials.", "the credentials' "},
      {"for call_timeout (", "for --timeout-ms ("},
      {"within call_timeout (", "within --timeout-ms ("},
      {"after call_timeout (", "after --timeout-ms ("},
      {" and call_timeout (", " and --timeout-ms ("},
      {"call_timeout", "--timeout-ms"},
      {"request_timeout", "--request-timeout-ms"},
      {"; calling Next again keeps trying.", "."},
      {"calling Next again keeps trying", "ordo keeps trying"},
      {"this AsyncPublisher stopped", "the publisher stopped"},
      {"this AsyncPublisher is closed; create a new one to publish", "the publisher is closed"},
      {"the AsyncPublisher was closed", "ordo gave up waiting (--timeout-ms)"},
      {"the AsyncPublisher stopped", "the publisher stopped"},
      {"; retry after some callbacks ran, or use WhenFull::kBlock", ""},
      {"; ParseBrokerList splits it", ""},
      {"The messages stay queued and the next call resends them, with the same sequences, "
       "ahead of its own.",
       "Run the command again to publish them."},
  };
  for (const auto& [from, to] : kNames) ReplaceAll(message, from, to);
  // "Start a new Subscriber at StartAt::Offset(N) to read what remains."
  const size_t start = message.find("Start a new Subscriber at StartAt::Offset(");
  if (start != std::string::npos) {
    const size_t open = message.find('(', start);
    const size_t close = message.find(')', open);
    if (close != std::string::npos) {
      const std::string offset = message.substr(open + 1, close - open - 1);
      size_t end = message.find('.', close);
      end = end == std::string::npos ? message.size() : end + 1;
      message.replace(start, end - start, "Use --from " + offset + ", or --from earliest.");
    }
  }
  return message;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string Closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(1, word.size() / 3) + 1;
  std::string prefixed;
  size_t prefixes = 0;
  for (const std::string& c : candidates) {
    if (!word.empty() && c.size() > word.size() && c.compare(0, word.size(), word) == 0) {
      prefixed = c;
      ++prefixes;
    }
    const size_t d = EditDistance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  if (!best.empty()) return best;
  return prefixes == 1 ? prefixed : "";
}

std::optional<std::string> CheckEndpoint(const std::string& endpoint) {
  std::string rest = endpoint;
  if (rest.rfind("tcp://", 0) == 0) rest.erase(0, 6);
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos) {
    return "'" + endpoint + "' has no port: a broker's client endpoint is HOST:PORT (e.g. " +
           "127.0.0.1:7201; `scripts/cluster status` lists them)";
  }
  std::string host = rest.substr(0, colon);
  const std::string port = rest.substr(colon + 1);
  const bool digits =
      !port.empty() && port.size() <= 5 &&
      std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || std::stoul(port) == 0 || std::stoul(port) > 65535) {
    return "'" + endpoint + "': the port '" + port + "' is not a number from 1 to 65535";
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty()) return "'" + endpoint + "' has no host: HOST:PORT";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
  if (found != nullptr) freeaddrinfo(found);
  if (rc != 0) {
    return "'" + endpoint + "': cannot resolve the host '" + host + "' (" + gai_strerror(rc) +
           "); check the spelling";
  }
  return std::nullopt;
}

std::optional<std::string> Unescape(std::string_view text, std::string* error) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    if (++i == text.size()) {
      *error = "a lone backslash at the end of '" + std::string(text) + "' (write \\\\)";
      return std::nullopt;
    }
    switch (text[i]) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '0':
        out += '\0';
        break;
      case '\\':
        out += '\\';
        break;
      case 'x': {
        auto hex = [](char c) -> int {
          if (c >= '0' && c <= '9') return c - '0';
          if (c >= 'a' && c <= 'f') return c - 'a' + 10;
          if (c >= 'A' && c <= 'F') return c - 'A' + 10;
          return -1;
        };
        if (i + 2 >= text.size() || hex(text[i + 1]) < 0 || hex(text[i + 2]) < 0) {
          *error = "\\x takes two hex digits in '" + std::string(text) + "'";
          return std::nullopt;
        }
        out += static_cast<char>(hex(text[i + 1]) * 16 + hex(text[i + 2]));
        i += 2;
        break;
      }
      default:
        *error = std::string("unknown escape \\") + text[i] + " in '" + std::string(text) +
                 "' (\\n \\t \\r \\0 \\\\ \\xHH)";
        return std::nullopt;
    }
  }
  return out;
}

bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

std::string Base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = static_cast<unsigned char>(bytes[i]) << 16 |
                       static_cast<unsigned char>(bytes[i + 1]) << 8 |
                       static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v =
        static_cast<unsigned char>(bytes[i]) << 16 | static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string JsonString(std::string_view utf8) {
  std::string out = "\"";
  for (unsigned char c : utf8) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

namespace {

void JsonBytes(std::string& out, std::string_view name, std::string_view bytes) {
  out += '"';
  out += name;
  out += "\":";
  if (IsUtf8(bytes)) {
    out += JsonString(bytes);
    return;
  }
  out += '"' + Base64(bytes) + "\",\"";
  out += name;
  out += "_encoding\":\"base64\"";
}

}  // namespace

std::string JsonRecord(const Record& r) {
  std::string out = "{\"offset\":" + std::to_string(r.offset) + ",";
  JsonBytes(out, "key", r.key);
  out += ',';
  JsonBytes(out, "payload", r.payload);
  out += ",\"producer\":\"" + std::to_string(r.producer) +
         "\",\"sequence\":" + std::to_string(r.sequence) + "}\n";
  return out;
}

std::optional<Template> ParseTemplate(std::string_view format, std::string* error) {
  // Check the directives first, then unescape around them: %X stays as is.
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') continue;
    if (++i == format.size() ||
        std::string_view("okKsSpq%").find(format[i]) == std::string_view::npos) {
      *error = "--format: unknown directive '%" +
               (i < format.size() ? std::string(1, format[i]) : std::string()) +
               "' (%o offset, %k key, %K key bytes, %s payload, %S payload bytes, %p producer, "
               "%q sequence, %% a percent sign)";
      return std::nullopt;
    }
  }
  std::optional<std::string> text = Unescape(format, error);
  if (!text) {
    *error = "--format: " + *error;
    return std::nullopt;
  }
  return Template{std::move(*text)};
}

std::string RenderRecord(const Template& t, const Record& r) {
  std::string out;
  const std::string& f = t.text;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] != '%' || i + 1 == f.size()) {
      out += f[i];
      continue;
    }
    switch (f[++i]) {
      case 'o':
        out += std::to_string(r.offset);
        break;
      case 'k':
        out += r.key;
        break;
      case 'K':
        out += std::to_string(r.key.size());
        break;
      case 's':
        out += r.payload;
        break;
      case 'S':
        out += std::to_string(r.payload.size());
        break;
      case 'p':
        out += std::to_string(r.producer);
        break;
      case 'q':
        out += std::to_string(r.sequence);
        break;
      default:
        out += f[i];
        break;  // %%
    }
  }
  return out;
}

InputReader::InputReader(int fd, Framing framing, std::string delimiter)
    : fd_(fd), framing_(framing), delimiter_(std::move(delimiter)) {}

bool InputReader::Fill() {
  if (eof_ || interrupted_ || !error_.empty()) return false;
  if (start_ > 0 && start_ >= buffer_.size() / 2) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  char chunk[65536];
  const ssize_t n = read(fd_, chunk, sizeof chunk);
  if (n > 0) {
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }
  if (n == 0) {
    eof_ = true;
  } else if (errno == EINTR) {
    interrupted_ = true;
  } else {
    error_ = std::string("reading the input: ") + std::strerror(errno);
  }
  return false;
}

InputReader::Got InputReader::Next(std::string& out) {
  auto stopped = [&] {
    if (interrupted_) return Got::kInterrupted;
    if (!error_.empty()) return Got::kError;
    return Got::kEnd;
  };
  if (done_) return stopped();
  switch (framing_) {
    case Framing::kWhole:
      while (Fill()) {
      }
      if (!eof_) return stopped();
      out.assign(buffer_, start_, std::string::npos);
      done_ = true;
      return Got::kMessage;
    case Framing::kLengthPrefixed:
      while (true) {
        const size_t have = buffer_.size() - start_;
        if (have >= 4) {
          const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data() + start_);
          const size_t length = size_t{p[0]} << 24 | size_t{p[1]} << 16 | size_t{p[2]} << 8 | p[3];
          if (have >= 4 + length) {
            out.assign(buffer_, start_ + 4, length);
            start_ += 4 + length;
            return Got::kMessage;
          }
        }
        if (!Fill()) {
          if (eof_ && have > 0) {
            error_ = "the input ends inside a frame: " + std::to_string(have) +
                     " byte(s) left over (--length-prefixed: each message is a 4-byte "
                     "big-endian length, then that many bytes)";
            done_ = true;
          }
          return stopped();
        }
      }
    case Framing::kDelimited: {
      size_t searched = start_;
      while (true) {
        const size_t at = buffer_.find(delimiter_, searched);
        if (at != std::string::npos) {
          out.assign(buffer_, start_, at - start_);
          start_ = at + delimiter_.size();
          return Got::kMessage;
        }
        const size_t old_start = start_;
        searched = buffer_.size() >= delimiter_.size() ? buffer_.size() - delimiter_.size() + 1 : 0;
        searched = std::max(searched, start_);
        if (!Fill()) {
          // The last message needs no delimiter after it.
          if (eof_ && buffer_.size() > start_) {
            out.assign(buffer_, start_, std::string::npos);
            start_ = buffer_.size();
            return Got::kMessage;
          }
          return stopped();
        }
        // Fill may have moved the buffer's start.
        searched -= old_start - start_;
      }
    }
  }
  return stopped();
}

}  // namespace ordo::cli
