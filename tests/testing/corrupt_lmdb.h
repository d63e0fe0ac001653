// Test helpers that change stored log records in the LMDB environment at
// `dir` behind the broker's back: EditLogRecord hands the bytes of the first
// record `pick` chooses to `edit` and stores what it leaves; FlipBitOnDisk
// flips one bit of instance's record, leaving its checksum as it was (what
// a rotting disk does). The broker using `dir` must be stopped, or must
// commit its writes within a moment (LMDB serialises the two).
#pragma once

#include <gtest/gtest.h>
#include <lmdb.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

namespace ordo::testing {

// pick(key, value): the record to edit; edit(&bytes): changes it.
inline void EditLogRecord(const std::string& dir,
                          const std::function<bool(const MDB_val&, const MDB_val&)>& pick,
                          const std::function<void(std::string*)>& edit) {
  MDB_env* env = nullptr;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  // At most what the file records: LMDB keeps the larger of the two, and a
  // larger one written here would be a resize to a running broker.
  mdb_env_set_mapsize(env, 64ull << 20);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0644), 0);
  MDB_txn* txn = nullptr;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi log;
  ASSERT_EQ(mdb_dbi_open(txn, "log", 0, &log), 0);
  MDB_cursor* cur = nullptr;
  ASSERT_EQ(mdb_cursor_open(txn, log, &cur), 0);
  MDB_val k, v;
  std::string key, bytes;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (pick(k, v)) {
      key.assign(static_cast<const char*>(k.mv_data), k.mv_size);
      bytes.assign(static_cast<const char*>(v.mv_data), v.mv_size);
      break;
    }
  }
  mdb_cursor_close(cur);
  ASSERT_FALSE(key.empty()) << "no log record to edit";
  edit(&bytes);
  MDB_val nk{key.size(), key.data()}, nv{bytes.size(), bytes.data()};
  ASSERT_EQ(mdb_put(txn, log, &nk, &nv, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

inline void FlipBitOnDisk(const std::string& dir, uint64_t instance) {
  unsigned char want[8];
  for (int i = 7; i >= 0; --i, instance >>= 8) want[i] = instance & 0xff;
  EditLogRecord(
      dir,
      [&](const MDB_val& k, const MDB_val&) {
        return k.mv_size == 8 && std::memcmp(k.mv_data, want, 8) == 0;
      },
      [](std::string* bytes) { (*bytes)[bytes->size() - 3] ^= 0x10; });
}

}  // namespace ordo::testing
