#include "client/cli/cli_util.h"

#include <algorithm>
#include <cstdio>

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
