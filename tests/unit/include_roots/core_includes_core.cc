// Must compile with the core's include root (the check beside it fails for the right reason).
#include "paxos/replica.h"
