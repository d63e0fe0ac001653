// The broker's Status is the shared one (base/status.h).
#pragma once

#include "base/status.h"

namespace ordo::broker {
using Status = ::ordo::Status;
using ::ordo::StatusOr;
}  // namespace ordo::broker
