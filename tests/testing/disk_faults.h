// Test helpers that damage a stopped broker's data directory the way a disk
// does: bits flipped in place below LMDB (its checksums untouched), pages
// zeroed, files truncated or deleted, records of meta removed. Everything
// here works on the files themselves, so the broker finds what a rotting
// disk would leave.
#pragma once

#include <lmdb.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace ordo::testing {

// Where one LMDB record's key and value lie in data.mdb.
struct RecordOnDisk {
  std::string key;
  uint64_t key_at = 0, value_at = 0, value_bytes = 0;
};

inline std::string ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void WriteFileBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Flips bit `bit` of the byte at `at`, in place.
inline void FlipBit(const std::string& path, uint64_t at, int bit) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ (1 << bit));
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}

// Runs `fn(txn, dbi)` on database `db` of the environment at `dir`, in a
// write transaction when `write` (committed after), else read-only.
template <typename F>
void WithLmdb(const std::string& dir, const char* db, bool write, F&& fn) {
  MDB_env* env = nullptr;
  if (mdb_env_create(&env) != 0) throw std::runtime_error("mdb_env_create");
  mdb_env_set_maxdbs(env, 8);
  mdb_env_set_mapsize(env, 64ull << 30);
  const unsigned flags = write ? 0 : MDB_RDONLY | MDB_NOLOCK;
  if (int rc = mdb_env_open(env, dir.c_str(), flags, 0644); rc != 0) {
    mdb_env_close(env);
    throw std::runtime_error(std::string("mdb_env_open: ") + mdb_strerror(rc));
  }
  MDB_txn* txn = nullptr;
  mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn);
  MDB_dbi dbi = 0;
  if (int rc = mdb_dbi_open(txn, db, 0, &dbi); rc != 0) {
    mdb_txn_abort(txn);
    mdb_env_close(env);
    throw std::runtime_error(std::string("mdb_dbi_open ") + db + ": " + mdb_strerror(rc));
  }
  fn(txn, dbi);
  if (write) {
    mdb_txn_commit(txn);
  } else {
    mdb_txn_abort(txn);
  }
  mdb_env_close(env);
}

// Every record of database `db` with where it lies in data.mdb. LMDB does
// not tell where its map starts; the file offset of a pointer into the map is
// found by locating the largest value (unique in the tests' data) in the file.
inline std::vector<RecordOnDisk> RecordsOnDisk(const std::string& dir, const char* db) {
  const std::string file = ReadFileBytes(dir + "/data.mdb");
  struct Raw {
    std::string key, value;
    const char* key_ptr;
    const char* value_ptr;
  };
  std::vector<Raw> raw;
  std::vector<RecordOnDisk> out;
  WithLmdb(dir, db, false, [&](MDB_txn* txn, MDB_dbi dbi) {
    MDB_cursor* cur = nullptr;
    mdb_cursor_open(txn, dbi, &cur);
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      raw.push_back({std::string(static_cast<const char*>(k.mv_data), k.mv_size),
                     std::string(static_cast<const char*>(v.mv_data), v.mv_size),
                     static_cast<const char*>(k.mv_data), static_cast<const char*>(v.mv_data)});
    }
    mdb_cursor_close(cur);
    if (raw.empty()) return;
    const Raw& anchor = *std::max_element(raw.begin(), raw.end(), [](const Raw& a, const Raw& b) {
      return a.value.size() < b.value.size();
    });
    const size_t at = file.find(anchor.value);
    if (at == std::string::npos) throw std::runtime_error("record not found in data.mdb");
    const char* base = anchor.value_ptr - at;
    for (const Raw& r : raw) {
      out.push_back({r.key, static_cast<uint64_t>(r.key_ptr - base),
                     static_cast<uint64_t>(r.value_ptr - base), r.value.size()});
    }
  });
  return out;
}

inline std::string BigEndianKey(uint64_t v) {
  std::string k(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) k[i] = static_cast<char>(v & 0xff);
  return k;
}

inline void DeleteMetaKey(const std::string& dir, const std::string& key) {
  WithLmdb(dir, "meta", true, [&](MDB_txn* txn, MDB_dbi dbi) {
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    mdb_del(txn, dbi, &k, nullptr);
  });
}

inline void RenameMetaKey(const std::string& dir, const std::string& from, const std::string& to) {
  WithLmdb(dir, "meta", true, [&](MDB_txn* txn, MDB_dbi dbi) {
    MDB_val k{from.size(), const_cast<char*>(from.data())}, v;
    if (mdb_get(txn, dbi, &k, &v) != 0) return;
    const std::string value(static_cast<const char*>(v.mv_data), v.mv_size);
    mdb_del(txn, dbi, &k, nullptr);
    MDB_val nk{to.size(), const_cast<char*>(to.data())};
    MDB_val nv{value.size(), const_cast<char*>(value.data())};
    mdb_put(txn, dbi, &nk, &nv, 0);
  });
}

inline uint64_t LmdbPageBytes(const std::string& dir) {
  uint64_t psize = 4096;
  WithLmdb(dir, "meta", false, [&](MDB_txn* txn, MDB_dbi) {
    MDB_stat st{};
    mdb_env_stat(mdb_txn_env(txn), &st);
    psize = st.ms_psize;
  });
  return psize;
}

// The page number of the root of database `db` (a leaf while it is
// small): the main database holds each named one's MDB_db, md_root at
// byte 40.
inline uint64_t RootPage(const std::string& dir, const char* db) {
  uint64_t root = 0;
  WithLmdb(dir, nullptr, false, [&](MDB_txn* txn, MDB_dbi main) {
    MDB_val k{std::char_traits<char>::length(db), const_cast<char*>(db)}, v;
    if (mdb_get(txn, main, &k, &v) != 0 || v.mv_size != 48) {
      throw std::runtime_error(std::string("no database ") + db);
    }
    std::copy_n(static_cast<const char*>(v.mv_data) + 40, 8, reinterpret_cast<char*>(&root));
  });
  return root;
}

// Makes the root page of database `db` claim one record slot more than it
// holds (its header's lower bound, 2 bytes at offset 12, grows by one slot),
// as a flipped bit there does. Nothing LMDB reads checks it: a walk sees a
// bogus record at the page's end (key size 0), and a write into the page
// moves bytes by that record's sizes.
inline void DamageRootPageBounds(const std::string& dir, const char* db) {
  const uint64_t root = RootPage(dir, db);
  const std::string path = dir + "/data.mdb";
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  const auto at = static_cast<std::streamoff>(root * LmdbPageBytes(dir) + 12);
  unsigned char lower[2] = {0, 0};
  f.seekg(at);
  f.read(reinterpret_cast<char*>(lower), 2);
  const uint16_t grown = static_cast<uint16_t>((lower[0] | (lower[1] << 8)) + 2);
  lower[0] = static_cast<unsigned char>(grown & 0xff);
  lower[1] = static_cast<unsigned char>(grown >> 8);
  f.seekp(at);
  f.write(reinterpret_cast<const char*>(lower), 2);
}

// Clears the flags of database `db`'s record in the main database (in the
// current root page, a leaf while the store is small), as a flipped bit
// there does: LMDB then refuses to open `db` (MDB_INCOMPATIBLE).
inline void DamageNamedDatabaseRecord(const std::string& dir, const std::string& db) {
  const std::string path = dir + "/data.mdb";
  const uint64_t page = LmdbPageBytes(dir);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  // The current meta page (the higher transaction id) names the main
  // database's root: MDB_meta's second MDB_db, md_root at its byte 40.
  constexpr size_t kMainRootAt = 16 + 4 + 4 + 8 + 8 + 48 + 40;
  constexpr size_t kTxnIdAt = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8;
  uint64_t txnid[2], root[2];
  for (int m = 0; m < 2; ++m) {
    f.seekg(static_cast<std::streamoff>(m * page + kTxnIdAt));
    f.read(reinterpret_cast<char*>(&txnid[m]), 8);
    f.seekg(static_cast<std::streamoff>(m * page + kMainRootAt));
    f.read(reinterpret_cast<char*>(&root[m]), 8);
  }
  const uint64_t main_root = txnid[0] > txnid[1] ? root[0] : root[1];
  std::string bytes(page, '\0');
  f.seekg(static_cast<std::streamoff>(main_root * page));
  f.read(bytes.data(), static_cast<std::streamsize>(page));
  // A leaf node: data size (4 bytes: 48), flags (2: F_SUBDATA), key size, key.
  std::string node("\x30\0\0\0\x02\0", 6);
  node += static_cast<char>(db.size());
  node += '\0';
  node += db;
  const size_t at = bytes.find(node);
  if (at == std::string::npos) throw std::runtime_error("no record of database " + db);
  f.seekp(static_cast<std::streamoff>(main_root * page + at + 4));
  f.write("\0", 1);
}

}  // namespace ordo::testing
