// Must not compile with the core's include root: the core links nothing of the broker.
#include "broker/lmdb_store.h"
