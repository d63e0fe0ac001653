#include "broker/compacted_view.h"

#include "broker/lmdb_formats.h"

namespace ordo::broker {

using namespace lmdb;  // NOLINT: the formats this file reads and writes

int CompactedView::Apply(MDB_txn* txn, const paxos::AppliedInstance& a) {
  if (a.value == nullptr) return 0;
  const auto& msgs = a.value->messages;
  for (size_t i = 0; i < a.results.size() && i < msgs.size(); ++i) {
    if (a.results[i].outcome != paxos::PublishOutcome::kAppended || msgs[i].key.empty()) continue;
    if (msgs[i].key.size() > kKeyBytesMax) continue;  // refused at publish; defensive
    if (const int rc = Put(txn, msgs[i], a.results[i].offset.value()); rc != 0) return rc;
  }
  return 0;
}

int CompactedView::Replace(MDB_txn* txn, std::span<const StreamMessage> keyed) {
  int rc = 0;
  if ((rc = mdb_drop(txn, tables_.keys, 0)) != 0 ||
      (rc = mdb_drop(txn, tables_.key_offsets, 0)) != 0) {
    return rc;
  }
  for (const StreamMessage& m : keyed) {
    if (m.key.empty() || m.key.size() > kKeyBytesMax) continue;
    const paxos::ClientMessage cm{paxos::ProducerId(m.producer), m.sequence, m.key, m.payload};
    if ((rc = Put(txn, cm, m.offset)) != 0) return rc;
  }
  return 0;
}

int CompactedView::Put(MDB_txn* txn, const paxos::ClientMessage& m, uint64_t offset) {
  MDB_val k{m.key.size(), const_cast<char*>(m.key.data())}, v;
  int rc = mdb_get(txn, tables_.keys, &k, &v);
  if (rc == 0) {
    StreamMessage old;
    if (DecodeKeyed(k, v, &old)) {
      unsigned char ok[8];
      PutBigEndian(old.offset, ok);
      MDB_val okv{8, ok};
      rc = tables_.Del(txn, kKeyOffsetsDb, okv);
      if (rc != 0 && rc != MDB_NOTFOUND) return rc;
    }
  } else if (rc != MDB_NOTFOUND) {
    return rc;
  }
  const std::string record = EncodeKeyed(m.key, offset, m.producer.value(), m.sequence, m.payload);
  MDB_val rv{record.size(), const_cast<char*>(record.data())};
  if ((rc = tables_.Put(txn, kKeysDb, k, rv)) != 0) return rc;
  unsigned char ok[8];
  PutBigEndian(offset, ok);
  MDB_val okv{8, ok}, kv{m.key.size(), const_cast<char*>(m.key.data())};
  return tables_.Put(txn, kKeyOffsetsDb, okv, kv);
}

Status CompactedView::ReadAll(MDB_txn* txn, std::vector<StreamMessage>* out) const {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, tables_.keys, &cur);
  if (rc != 0) return Status::Error(LmdbError("mdb_cursor_open", rc));
  MDB_val k, v;
  Status result = Status::Ok();
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    StreamMessage m;
    if (!DecodeKeyed(k, v, &m)) {
      result = Status::Error("a compacted-view record fails its check");
      break;
    }
    out->push_back(std::move(m));
  }
  mdb_cursor_close(cur);
  return result;
}

paxos::StoreCode CompactedView::Read(MDB_txn* txn, uint64_t from, uint64_t to,
                                     size_t max_messages, size_t max_bytes,
                                     std::vector<StreamMessage>* out) const {
  MDB_cursor* cur = nullptr;
  if (const int rc = mdb_cursor_open(txn, tables_.key_offsets, &cur); rc != 0) {
    *last_error_ = LmdbError("mdb_cursor_open", rc);
    return paxos::StoreCode::kIoError;
  }
  unsigned char key[8];
  PutBigEndian(from, key);
  MDB_val k{8, key}, v;
  paxos::StoreCode code = paxos::StoreCode::kOk;
  size_t bytes = 0;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
       rc == 0 && out->size() < max_messages && (out->empty() || bytes < max_bytes);
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) break;
    const uint64_t offset = GetBigEndian(k.mv_data);
    if (to != 0 && offset >= to) break;
    MDB_val kv = v, rv;
    StreamMessage m;
    if (mdb_get(txn, tables_.keys, &kv, &rv) != 0 || !DecodeKeyed(kv, rv, &m) ||
        m.offset != offset) {
      code = damage_.Note(StorageDamage{StorageDamage::Kind::kCompactedView, 0, offset,
                                        "compacted view record for offset " +
                                            std::to_string(offset) + " fails its check"});
      break;
    }
    bytes += m.key.size() + m.payload.size() + 32;
    out->push_back(std::move(m));
  }
  mdb_cursor_close(cur);
  return code;
}

}  // namespace ordo::broker
