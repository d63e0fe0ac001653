#include "paxos/types.h"

#include "paxos/log_store.h"
#include "paxos/message.h"
#include "paxos/value.h"

namespace ORDO_PAXOS_NAMESPACE {

std::string ToString(const Ballot& b) {
  return "(" + std::to_string(b.round) + "," + std::to_string(b.node.value()) + ")";
}

const char* ToString(ValueKind kind) {
  switch (kind) {
    case ValueKind::kBatch: return "batch";
    case ValueKind::kNoop: return "noop";
    case ValueKind::kBarrier: return "barrier";
    case ValueKind::kConfig:
      return "config";
  }
  return "?";
}

const char* ToString(MessageType type) {
  switch (type) {
    case MessageType::kPrepare: return "prepare";
    case MessageType::kPromise: return "promise";
    case MessageType::kAccept: return "accept";
    case MessageType::kAccepted: return "accepted";
    case MessageType::kReject: return "reject";
    case MessageType::kCommit: return "commit";
    case MessageType::kCommitReply: return "commit-reply";
    case MessageType::kFetch: return "fetch";
    case MessageType::kFetchReply: return "fetch-reply";
    case MessageType::kPreVote: return "pre-vote";
    case MessageType::kPreVoteGrant: return "pre-vote-grant";
    case MessageType::kTimeoutNow:
      return "timeout-now";
  }
  return "?";
}

const char* ToString(StoreCode code) {
  switch (code) {
    case StoreCode::kOk: return "ok";
    case StoreCode::kNotFound: return "not found";
    case StoreCode::kCorrupt: return "corrupt";
    case StoreCode::kIoError: return "i/o error";
  }
  return "?";
}

}  // namespace ordo::paxos
