// ReadTxn: an LMDB read transaction that one thread begins, uses and ends.
// The environment is MDB_NOTLS, so LMDB itself would let a transaction move
// between threads; the store does not: a transaction handed to another
// thread is how a reader ends up seeing a commit it did not expect, or
// outliving the store. get() from any thread but the one that began it is a
// bug and aborts.
#pragma once

#include <lmdb.h>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>

namespace ordo::broker {

class ReadTxn {
 public:
  ReadTxn() = default;
  // Begins one in `env` on this thread; empty (false) when LMDB refuses,
  // with its code in *rc.
  static ReadTxn Begin(MDB_env* env, int* rc) {
    ReadTxn t;
    *rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &t.txn_);
    if (*rc != 0) t.txn_ = nullptr;
    return t;
  }
  ~ReadTxn() { End(); }
  ReadTxn(ReadTxn&& other) noexcept
      : txn_(std::exchange(other.txn_, nullptr)), owner_(other.owner_) {}
  ReadTxn& operator=(ReadTxn&& other) noexcept {
    if (this != &other) {
      End();
      txn_ = std::exchange(other.txn_, nullptr);
      owner_ = other.owner_;
    }
    return *this;
  }
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;

  explicit operator bool() const { return txn_ != nullptr; }
  MDB_txn* get() const {
    if (txn_ != nullptr && owner_ != std::this_thread::get_id()) {
      std::fputs("ordo: an LMDB read transaction used by a thread that did not begin it\n",
                 stderr);
      std::abort();
    }
    return txn_;
  }
  // Ends it now (what it read is no longer valid); also by the destructor.
  void End() {
    if (txn_ != nullptr) mdb_txn_abort(get());
    txn_ = nullptr;
  }

 private:
  MDB_txn* txn_ = nullptr;
  std::thread::id owner_ = std::this_thread::get_id();
};

}  // namespace ordo::broker
