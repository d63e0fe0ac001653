// Test helper: flips one bit inside the stored log record of `instance` in
// the LMDB environment at `dir`, leaving its checksum as it was (what a
// rotting disk does). The broker using `dir` must be stopped.
#pragma once

#include <gtest/gtest.h>
#include <lmdb.h>

#include <cstdint>
#include <string>

namespace ordo::testing {

inline void FlipBitOnDisk(const std::string& dir, uint64_t instance) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 3);
  mdb_env_set_mapsize(env, 64ull << 20);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0644), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi log;
  ASSERT_EQ(mdb_dbi_open(txn, "log", 0, &log), 0);
  unsigned char key[8];
  for (int i = 7; i >= 0; --i, instance >>= 8) key[i] = instance & 0xff;
  MDB_val k{8, key}, v;
  ASSERT_EQ(mdb_get(txn, log, &k, &v), 0);
  std::string bytes(static_cast<const char*>(v.mv_data), v.mv_size);
  bytes[bytes.size() - 3] ^= 0x10;
  MDB_val nv{bytes.size(), bytes.data()};
  ASSERT_EQ(mdb_put(txn, log, &k, &nv, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

}  // namespace ordo::testing
