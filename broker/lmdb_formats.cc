#include "broker/lmdb_formats.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "broker/crc32c.h"

namespace ordo::broker::lmdb {

std::string EncodeIndex(const paxos::AppliedInstance& a) {
  std::string body;
  PutLe<uint16_t>(&body, kIndexFormatVersion);
  PutLe<uint64_t>(&body, a.first_offset.value());
  PutLe<uint64_t>(&body, a.instance.value());
  PutLe<uint32_t>(&body, a.appended);
  std::vector<uint32_t> skipped;
  for (size_t i = 0; i < a.results.size(); ++i) {
    if (a.results[i].outcome != paxos::PublishOutcome::kAppended) {
      skipped.push_back(static_cast<uint32_t>(i));
    }
  }
  PutLe<uint32_t>(&body, static_cast<uint32_t>(skipped.size()));
  for (uint32_t s : skipped) PutLe<uint32_t>(&body, s);
  body.append(reinterpret_cast<const char*>(a.chain_before.bytes.data()), a.chain_before.kBytes);
  body.append(reinterpret_cast<const char*>(a.chain.bytes.data()), a.chain.kBytes);
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

ChainCheck CheckRecordChain(std::span<const uint8_t> record, const IndexRecord& idx) {
  if (!idx.has_chain) return ChainCheck::kMatches;
  paxos::ChainStep step(idx.chain_before, idx.instance, idx.first_offset, idx.appended);
  size_t skip = 0;
  uint32_t hashed = 0;
  bool admitted = false;
  const DecodeStatus d = VisitLogRecord(
      record,
      [&](uint64_t instance, uint32_t messages) {
        admitted = instance == idx.instance && messages == idx.appended + idx.skipped.size();
        return admitted;
      },
      [&](uint32_t i, const MessageView& m) {
        if (skip < idx.skipped.size() && idx.skipped[skip] == i) {
          ++skip;
          return;
        }
        ++hashed;
        step.Add(m.producer, m.sequence,
                 {reinterpret_cast<const char*>(m.key.data()), m.key.size()},
                 {reinterpret_cast<const char*>(m.payload.data()), m.payload.size()});
      });
  if (!d.ok() || !admitted || hashed != idx.appended) return ChainCheck::kUnreadable;
  return step.Finish() == idx.chain ? ChainCheck::kMatches : ChainCheck::kDiffers;
}

bool DecodeIndex(const MDB_val& key, const MDB_val& v, IndexRecord* out) {
  if (key.mv_size != 8) return false;
  const uint64_t first_offset = GetBigEndian(key.mv_data);
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size < 4 + 2) return false;
  if (GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  const uint16_t version = GetLe<uint16_t>(p + 4);
  size_t at = 6;
  if (version == 2 || version == kIndexFormatVersion) {
    if (v.mv_size < at + 8 || GetLe<uint64_t>(p + at) != first_offset) return false;
    at += 8;
  } else if (version != 1) {
    return false;
  }
  const size_t fixed = at + 8 + 4 + 4;
  if (v.mv_size < fixed) return false;
  out->first_offset = first_offset;
  out->instance = GetLe<uint64_t>(p + at);
  out->appended = GetLe<uint32_t>(p + at + 8);
  const uint32_t n = GetLe<uint32_t>(p + at + 12);
  const size_t chains = version == kIndexFormatVersion ? 2 * paxos::ChainValue::kBytes : 0;
  if (n > (v.mv_size - fixed) / 4 || v.mv_size != fixed + size_t{n} * 4 + chains ||
      out->appended == 0 || out->instance == 0) {
    return false;
  }
  out->skipped.resize(n);
  for (uint32_t i = 0; i < n; ++i) out->skipped[i] = GetLe<uint32_t>(p + fixed + 4 * i);
  out->has_chain = chains != 0;
  if (out->has_chain) {
    const unsigned char* c = p + fixed + size_t{n} * 4;
    std::memcpy(out->chain_before.bytes.data(), c, paxos::ChainValue::kBytes);
    std::memcpy(out->chain.bytes.data(), c + paxos::ChainValue::kBytes, paxos::ChainValue::kBytes);
  } else {
    out->chain_before = out->chain = paxos::ChainValue{};
  }
  return true;
}

std::string EncodeRetained(const Retained& r) {
  std::string body;
  PutLe<uint16_t>(&body, kRetainedFormatVersion);
  PutLe<uint64_t>(&body, r.first_instance);
  PutLe<uint64_t>(&body, r.first_offset);
  PutLe<uint64_t>(&body, r.log_bytes);
  PutLe<uint64_t>(&body, r.snapshot.instance);
  PutLe<uint64_t>(&body, r.snapshot.size);
  PutLe<uint32_t>(&body, r.snapshot.checksum);
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

bool DecodeRetained(const MDB_val& v, Retained* out) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size != 4 + 2 + 8 * 5 + 4) return false;
  if (GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  if (GetLe<uint16_t>(p + 4) != kRetainedFormatVersion) return false;
  out->first_instance = GetLe<uint64_t>(p + 6);
  out->first_offset = GetLe<uint64_t>(p + 14);
  out->log_bytes = GetLe<uint64_t>(p + 22);
  out->snapshot.instance = GetLe<uint64_t>(p + 30);
  out->snapshot.size = GetLe<uint64_t>(p + 38);
  out->snapshot.checksum = GetLe<uint32_t>(p + 46);
  return true;
}

std::string EncodeJournalMeta(uint64_t generation) {
  std::string body;
  PutLe<uint16_t>(&body, kJournalMetaVersion);
  PutLe<uint64_t>(&body, generation);
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

bool DecodeJournalMeta(const MDB_val& v, uint64_t* generation) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size != 4 + 2 + 8) return false;
  if (GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  if (GetLe<uint16_t>(p + 4) != kJournalMetaVersion) return false;
  *generation = GetLe<uint64_t>(p + 6);
  return true;
}

std::string EncodeBase(const paxos::AppliedSnapshot& state) {
  std::string body;
  PutLe<uint16_t>(&body, kBaseFormatVersion);
  body += EncodeSnapshotFile(state, {});
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

bool DecodeBase(const MDB_val& v, paxos::AppliedSnapshot* state) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size < 4 + 2 || GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  if (GetLe<uint16_t>(p + 4) != kBaseFormatVersion) return false;
  // The snapshot buffer must be aligned for FlatBuffers: copy it.
  const std::string file(reinterpret_cast<const char*>(p + 6), v.mv_size - 6);
  return DecodeSnapshotFile(AsBytes(file), state, nullptr).ok();
}

std::string EncodeKeyed(std::string_view key, uint64_t offset, uint64_t producer,
                        uint64_t sequence, std::string_view payload) {
  std::string body;
  PutLe<uint16_t>(&body, kKeyedFormatVersion);
  PutLe<uint64_t>(&body, offset);
  PutLe<uint64_t>(&body, producer);
  PutLe<uint64_t>(&body, sequence);
  body += payload;
  std::string out;
  PutLe<uint32_t>(&out, Crc32cExtend(Crc32c(key), body.data(), body.size()));
  return out + body;
}

bool DecodeKeyed(const MDB_val& key, const MDB_val& v, StreamMessage* out) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size < 4) return false;
  const uint32_t crc = GetLe<uint32_t>(p);
  size_t at = 0;
  if (v.mv_size >= 4 + 2 + 24 && GetLe<uint16_t>(p + 4) == kKeyedFormatVersion &&
      crc == Crc32cExtend(Crc32c(key.mv_data, key.mv_size), p + 4, v.mv_size - 4)) {
    at = 6;
  } else if (v.mv_size >= 4 + 24 && crc == Crc32c(p + 4, v.mv_size - 4)) {
    at = 4;  // version 1
  } else {
    return false;
  }
  out->offset = GetLe<uint64_t>(p + at);
  out->producer = GetLe<uint64_t>(p + at + 8);
  out->sequence = GetLe<uint64_t>(p + at + 16);
  out->payload.assign(reinterpret_cast<const char*>(p + at + 24), v.mv_size - at - 24);
  out->key.assign(static_cast<const char*>(key.mv_data), key.mv_size);
  return true;
}

std::string LmdbError(const char* what, int rc) {
  return std::string(what) + ": " + mdb_strerror(rc);
}

void AppendJournalOp(std::vector<uint8_t>* body, uint8_t op, JournalDb db, const MDB_val& key,
                     size_t value_bytes) {
  const size_t at = body->size();
  body->resize(at + kJournalOpHeaderBytes + key.mv_size);
  uint8_t* p = body->data() + at;
  p[0] = op;
  p[1] = db;
  p[2] = static_cast<uint8_t>(key.mv_size & 0xff);
  p[3] = static_cast<uint8_t>(key.mv_size >> 8);
  for (int i = 0; i < 4; ++i) p[4 + i] = static_cast<uint8_t>((value_bytes >> (8 * i)) & 0xff);
  std::memcpy(p + kJournalOpHeaderBytes, key.mv_data, key.mv_size);
}

JournalOpParse ParseJournalOp(std::span<const uint8_t> body, size_t* at, JournalOp* out) {
  if (*at > body.size() || body.size() - *at < kJournalOpHeaderBytes) {
    return JournalOpParse::kMalformed;
  }
  const uint8_t* p = body.data() + *at;
  const size_t klen = size_t{p[2]} | (size_t{p[3]} << 8);
  const size_t vlen = GetLe<uint32_t>(p + 4);
  if (p[0] == 0 || body.size() - *at - kJournalOpHeaderBytes < klen + vlen) {
    return JournalOpParse::kMalformed;
  }
  if (p[0] != kJournalPut && p[0] != kJournalDel) return JournalOpParse::kNewer;
  if (p[1] >= kDbCount || (p[0] == kJournalDel && vlen != 0)) return JournalOpParse::kMalformed;
  out->op = p[0];
  out->db = static_cast<JournalDb>(p[1]);
  out->key = MDB_val{klen, const_cast<uint8_t*>(p + kJournalOpHeaderBytes)};
  out->value = MDB_val{vlen, const_cast<uint8_t*>(p + kJournalOpHeaderBytes + klen)};
  *at += kJournalOpHeaderBytes + klen + vlen;
  return JournalOpParse::kOk;
}

bool IsLmdbDamage(int rc) {
  return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID ||
         rc == MDB_VERSION_MISMATCH || rc == MDB_BAD_TXN || rc == MDB_BAD_VALSIZE ||
         rc == MDB_INCOMPATIBLE;
}

Status OpenFailure(const std::string& what, int rc) {
  const std::string message = LmdbError(what.c_str(), rc);
  return IsLmdbDamage(rc) ? Status::Damaged(message) : Status::Storage(message);
}

Status CheckMetaPages(const std::string& data_file, size_t page_size, size_t last) {
  // The page header (16 bytes) and MDB_meta up to mm_txnid: magic, version,
  // address, map size, two MDB_db (48 bytes each), last page.
  // (The layout of a 64-bit build of LMDB 0.9, data version 1.)
  static_assert(sizeof(size_t) == 8 && sizeof(void*) == 8, "LMDB's 64-bit meta page layout");
  constexpr size_t kTxnIdAt = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8;
  constexpr uint32_t kMagic = 0xBEEFC0DE;
  constexpr uint32_t kDataVersion = 1;
  const int fd = ::open(data_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Storage(data_file + ": " + std::strerror(errno));
  uint64_t ids[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    unsigned char page[kTxnIdAt + 8];
    const ssize_t n = ::pread(fd, page, sizeof(page), static_cast<off_t>(k * page_size));
    uint32_t magic = 0, version = 0;
    if (n == static_cast<ssize_t>(sizeof(page))) {
      std::memcpy(&magic, page + 16, sizeof(magic));
      std::memcpy(&version, page + 20, sizeof(version));
    }
    if (magic != kMagic || version != kDataVersion) {
      ::close(fd);
      return Status::Damaged(data_file + ": meta page " + std::to_string(k) +
                             " fails its check (bad magic or version)");
    }
    std::memcpy(&ids[k], page + kTxnIdAt, sizeof(ids[k]));
  }
  ::close(fd);
  const uint64_t high = std::max(ids[0], ids[1]);
  const uint64_t low = std::min(ids[0], ids[1]);
  const bool consecutive = high == last && (high == 0 ? low == 0 : low == high - 1);
  if (!consecutive) {
    return Status::Damaged(data_file + ": its meta pages name transactions " +
                           std::to_string(ids[0]) + " and " + std::to_string(ids[1]) +
                           " (opened at " + std::to_string(last) +
                           "): one of them rotted, and LMDB may have opened an older commit");
  }
  return Status::Ok();
}

}  // namespace ordo::broker::lmdb
