// PublishSession on its own: no socket, no clock. Each test builds requests,
// answers them with frames made by the fake broker's helpers, and checks
// the step (reconnect, target, pause), what is resent with which sequences,
// and what resolves. Whether a message counts as "maybe stored" is seen
// through a later TooLarge: a message certainly not stored is dropped and
// gives its sequence back, a maybe-stored one stays queued.

#include "client/internal/publish_session.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/client/fake_broker.h"

namespace ordo::client_internal {
namespace {

using std::chrono::milliseconds;
using testing::ErrorFrame;
using testing::PublishReplyFrame;
using testing::ResultSpec;
using Kind = PublishOutcome::Kind;

constexpr auto kUnknownCode = static_cast<wire::ErrorCode>(99);

// One request as built.
struct Sent {
  uint64_t request_id = 0;
  std::vector<uint64_t> sequences;
  std::vector<std::string> payloads;
};

class Harness {
 public:
  explicit Harness(PublishLimits limits = {}) : session(kProducer, &brokers, limits) {}

  static constexpr uint64_t kProducer = 77;
  std::vector<std::string> brokers{"a:1", "b:2", "c:3"};
  PublishSession session;

  void Enqueue(const std::vector<std::string>& payloads) {
    for (const std::string& p : payloads) session.Enqueue("", p);
  }
  // Builds the next request and decodes it as a broker would.
  Sent Send() {
    Sent sent;
    sent.request_id = session.BuildRequest(builder_);
    if (sent.request_id == 0) return sent;
    const wire::ClientEnvelope* envelope = wire::GetClientEnvelope(builder_.GetBufferPointer());
    EXPECT_EQ(envelope->request_id(), sent.request_id);
    const wire::Publish* publish = envelope->body_as_Publish();
    EXPECT_NE(publish, nullptr);
    for (const wire::ClientMessage* m : *publish->messages()) {
      EXPECT_EQ(m->producer(), kProducer);
      sent.sequences.push_back(m->sequence());
      sent.payloads.emplace_back(reinterpret_cast<const char*>(m->payload()->data()),
                                 m->payload()->size());
    }
    return sent;
  }
  // Hands a frame to the session as the connection would: aligned bytes.
  PublishStep Deliver(const std::string& frame) {
    std::vector<uint8_t> bytes(frame.begin(), frame.end());
    return session.OnReply(*wire::GetClientEnvelope(bytes.data()));
  }
  PublishStep Reply(const Sent& sent, const std::vector<ResultSpec>& results) {
    return Deliver(PublishReplyFrame(sent.request_id, results));
  }
  // Every message of `sent` with one code; offsets from `first_offset`.
  PublishStep ReplyAll(const Sent& sent, wire::ErrorCode code, uint64_t first_offset = 0) {
    std::vector<ResultSpec> results;
    for (size_t i = 0; i < sent.sequences.size(); ++i) {
      results.push_back({sent.sequences[i], first_offset + i, code});
    }
    return Reply(sent, results);
  }
  PublishStep Refuse(const Sent& sent, wire::ErrorCode code, const std::string& leader = "") {
    return Deliver(ErrorFrame(sent.request_id, code, "refused by the test", leader));
  }
  std::vector<PublishOutcome> Resolved() {
    std::vector<PublishOutcome> outcomes;
    PublishOutcome outcome;
    while (session.PopResolved(&outcome)) outcomes.push_back(outcome);
    return outcomes;
  }
  // Resends the queue and refuses it TooLarge: how many messages were
  // dropped as never stored (the rest may be stored and stay queued).
  size_t DroppedByTooLarge() {
    const Sent sent = Send();
    EXPECT_NE(sent.request_id, 0u);
    const PublishStep step = Refuse(sent, wire::ErrorCode::TooLarge);
    EXPECT_TRUE(step.rejection.has_value());
    size_t dropped = 0;
    for (const PublishOutcome& o : Resolved()) dropped += o.kind == Kind::kRejected;
    return dropped;
  }

 private:
  flatbuffers::FlatBufferBuilder builder_;
};

std::vector<uint64_t> Sequences(const std::vector<PublishOutcome>& outcomes) {
  std::vector<uint64_t> sequences;
  for (const PublishOutcome& o : outcomes) sequences.push_back(o.sequence);
  return sequences;
}

TEST(PublishSessionTest, SequencesAreContiguousFromOneAndRequestsCarryTheWholeQueue) {
  Harness h;
  h.Enqueue({"m1", "m2", "m3"});
  const Sent sent = h.Send();
  EXPECT_EQ(sent.sequences, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(sent.payloads, (std::vector<std::string>{"m1", "m2", "m3"}));
  EXPECT_FALSE(h.session.CanSend());  // one request in flight, nothing more to send
  const PublishStep step = h.ReplyAll(sent, wire::ErrorCode::None, 100);
  EXPECT_TRUE(step.matched);
  EXPECT_FALSE(step.reconnect);
  EXPECT_EQ(step.pause, milliseconds{0});
  const std::vector<PublishOutcome> outcomes = h.Resolved();
  ASSERT_EQ(outcomes.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(outcomes[i].kind, Kind::kStored);
    EXPECT_EQ(outcomes[i].ticket, i + 1);
    EXPECT_EQ(outcomes[i].offset, 100 + i);
  }
  EXPECT_TRUE(h.session.empty());
  h.Enqueue({"m4"});
  EXPECT_EQ(h.Send().sequences, (std::vector<uint64_t>{4}));
}

// Every code a PublishResult can carry, for a request of one message.
TEST(PublishSessionTest, EachPerMessageCode) {
  struct Case {
    wire::ErrorCode code;
    bool resolved;        // taken from the queue
    Kind kind;            // if resolved
    bool refused;         // step.refused: answered without being taken
    bool maybe_stored;    // kept by a later TooLarge
    const char* attempt;  // in the attempt log, if not resolved
  };
  const Case cases[] = {
      {wire::ErrorCode::None, true, Kind::kStored, false, false, ""},
      {wire::ErrorCode::DuplicateTooOld, true, Kind::kOffsetForgotten, false, false, ""},
      {wire::ErrorCode::OutOfSequence, false, Kind::kStored, false, false, "asked to resend"},
      {wire::ErrorCode::StaleLeader, false, Kind::kStored, false, false, "asked to resend"},
      // Codes protocol.md does not allow per message, and one this client
      // does not know: outcome unknown, resent with the same sequence.
      {wire::ErrorCode::Busy, false, Kind::kStored, true, true, "with Busy"},
      {wire::ErrorCode::NotLeader, false, Kind::kStored, true, true, "with NotLeader"},
      {wire::ErrorCode::Internal, false, Kind::kStored, true, true, "with Internal"},
      {wire::ErrorCode::TooLarge, false, Kind::kStored, true, true, "with TooLarge"},
      {kUnknownCode, false, Kind::kStored, true, true, "with code 99 (unknown to this client)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(WireCodeName(c.code));
    Harness h;
    h.Enqueue({"m"});
    const Sent sent = h.Send();
    const PublishStep step = h.Reply(sent, {{1, 40, c.code}});
    EXPECT_TRUE(step.matched);
    EXPECT_FALSE(step.reconnect);  // a reply never costs the connection
    EXPECT_EQ(step.refused, c.refused);
    const std::vector<PublishOutcome> outcomes = h.Resolved();
    if (c.resolved) {
      ASSERT_EQ(outcomes.size(), 1u);
      EXPECT_EQ(outcomes[0].kind, c.kind);
      EXPECT_EQ(outcomes[0].sequence, 1u);
      if (c.kind == Kind::kStored) {
        EXPECT_EQ(outcomes[0].offset, 40u);
      }
      EXPECT_EQ(step.pause, milliseconds{0});
      continue;
    }
    EXPECT_TRUE(outcomes.empty());
    // No progress: the resend waits, so a confused broker is not flooded.
    EXPECT_EQ(step.pause, kBusyBackoffMin);
    EXPECT_NE(h.session.attempts().Summary().find(c.attempt), std::string::npos)
        << h.session.attempts().Summary();
    EXPECT_EQ(h.session.Target(), "a:1");
    // Resent with the same sequence; then a TooLarge tells whether the
    // message may be stored.
    EXPECT_EQ(h.DroppedByTooLarge(), c.maybe_stored ? 0u : 1u);
  }
}

// Every code an Error answering a Publish can carry.
TEST(PublishSessionTest, EachRequestLevelCode) {
  struct Case {
    wire::ErrorCode code;
    std::string leader;
    bool reconnect;
    std::string target;  // after the step
    milliseconds pause;
    bool rejected;      // the messages are dropped as never stored
    bool maybe_stored;  // kept by a later TooLarge
  };
  const Case cases[] = {
      {wire::ErrorCode::NotLeader, "b:2", true, "b:2", milliseconds{0}, false, false},
      {wire::ErrorCode::NotLeader, "c:3", true, "c:3", milliseconds{0}, false, false},
      // A leader not in the list is used as it is named.
      {wire::ErrorCode::NotLeader, "z:9", true, "z:9", milliseconds{0}, false, false},
      // No leader named, or the broker names itself: the next broker.
      {wire::ErrorCode::NotLeader, "", true, "b:2", milliseconds{0}, false, false},
      {wire::ErrorCode::NotLeader, "a:1", true, "b:2", milliseconds{0}, false, false},
      {wire::ErrorCode::NotLeader, "tcp://a:1", true, "b:2", milliseconds{0}, false, false},
      // Busy: the same broker and socket, after a pause; stored nothing.
      {wire::ErrorCode::Busy, "", false, "a:1", kBusyBackoffMin, false, false},
      // Refusals of the request as a whole: never stored, dropped.
      {wire::ErrorCode::TooLarge, "", false, "a:1", milliseconds{0}, true, false},
      {wire::ErrorCode::BadRequest, "", false, "a:1", milliseconds{0}, true, false},
      // Unavailable may come for a request a leader had accepted: maybe
      // stored. Internal, codes not meant for a Publish and unknown ones
      // are handled the same way.
      {wire::ErrorCode::Unavailable, "", true, "b:2", kRetryPause, false, true},
      {wire::ErrorCode::Internal, "", true, "b:2", kRetryPause, false, true},
      {wire::ErrorCode::OffsetBelowRetained, "", true, "b:2", kRetryPause, false, true},
      {wire::ErrorCode::OutOfSequence, "", true, "b:2", kRetryPause, false, true},
      {kUnknownCode, "", true, "b:2", kRetryPause, false, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(WireCodeName(c.code) + " naming \"" + c.leader + "\"");
    Harness h;
    h.Enqueue({"m1", "m2"});
    const Sent sent = h.Send();
    const PublishStep step = h.Refuse(sent, c.code, c.leader);
    EXPECT_TRUE(step.matched);
    EXPECT_TRUE(step.refused);
    EXPECT_EQ(step.reconnect, c.reconnect);
    EXPECT_EQ(h.session.Target(), c.target);
    EXPECT_EQ(step.pause, c.pause);
    EXPECT_EQ(step.rejection.has_value(), c.rejected);
    EXPECT_NE(h.session.attempts().Summary().find("refused by the test"), std::string::npos);
    const std::vector<PublishOutcome> outcomes = h.Resolved();
    if (c.rejected) {
      ASSERT_EQ(outcomes.size(), 2u);
      EXPECT_EQ(outcomes[0].kind, Kind::kRejected);
      EXPECT_EQ(outcomes[1].kind, Kind::kRejected);
      EXPECT_NE(step.rejection->find("2 message(s) that were never stored are dropped"),
                std::string::npos)
          << *step.rejection;
      EXPECT_NE(h.session.rejection().find("never stored"), std::string::npos);
      // Their sequences are given back.
      h.Enqueue({"m3"});
      EXPECT_EQ(h.Send().sequences, (std::vector<uint64_t>{1}));
      continue;
    }
    EXPECT_TRUE(outcomes.empty());
    // Resent, with the same sequences.
    EXPECT_EQ(h.DroppedByTooLarge(), c.maybe_stored ? 0u : 2u);
  }
}

TEST(PublishSessionTest, ABodyThatIsNotAnAnswerCountsAsMaybeStored) {
  Harness h;
  h.Enqueue({"m"});
  const Sent sent = h.Send();
  const PublishStep step = h.Deliver(testing::DeliverRange(sent.request_id, 0, 1, 1));
  EXPECT_TRUE(step.matched);
  EXPECT_TRUE(step.reconnect);
  EXPECT_EQ(h.session.Target(), "b:2");
  EXPECT_NE(h.session.attempts().Summary().find("Deliver frame"), std::string::npos);
  EXPECT_EQ(h.DroppedByTooLarge(), 0u);
}

TEST(PublishSessionTest, AnswersToRequestsNotInFlightAreIgnored) {
  Harness h;
  h.Enqueue({"m"});
  const Sent sent = h.Send();
  Sent other = sent;
  other.request_id += 1000;
  const PublishStep step = h.ReplyAll(other, wire::ErrorCode::None, 5);
  EXPECT_FALSE(step.matched);
  EXPECT_TRUE(h.Resolved().empty());
  EXPECT_EQ(h.session.inflight(), 1u);
  // Answered twice: the second answer changes nothing.
  EXPECT_TRUE(h.ReplyAll(sent, wire::ErrorCode::None, 7).matched);
  EXPECT_FALSE(h.ReplyAll(sent, wire::ErrorCode::None, 8).matched);
  const std::vector<PublishOutcome> outcomes = h.Resolved();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].offset, 7u);
}

TEST(PublishSessionTest, PartialAcksResendTheRestAtOnceWithTheSameSequences) {
  Harness h;
  h.Enqueue({"m1", "m2", "m3", "m4"});
  const Sent first = h.Send();
  const PublishStep step = h.Reply(first, {{1, 50, wire::ErrorCode::None},
                                           {2, 0, wire::ErrorCode::OutOfSequence},
                                           {3, 0, wire::ErrorCode::StaleLeader},
                                           {4, 0, wire::ErrorCode::OutOfSequence}});
  EXPECT_EQ(step.pause, milliseconds{0});  // progress: resend at once
  EXPECT_FALSE(step.refused);
  EXPECT_EQ(Sequences(h.Resolved()), (std::vector<uint64_t>{1}));
  const Sent second = h.Send();
  EXPECT_EQ(second.sequences, (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(second.payloads, (std::vector<std::string>{"m2", "m3", "m4"}));
  h.ReplyAll(second, wire::ErrorCode::None, 51);
  const std::vector<PublishOutcome> outcomes = h.Resolved();
  ASSERT_EQ(outcomes.size(), 3u);
  EXPECT_EQ(outcomes[2].offset, 53u);
}

TEST(PublishSessionTest, AnOutOfOrderAckWaitsForTheOlderMessage) {
  Harness h;
  h.Enqueue({"m1", "m2"});
  const Sent first = h.Send();
  h.Reply(first, {{1, 0, wire::ErrorCode::StaleLeader}, {2, 9, wire::ErrorCode::None}});
  EXPECT_TRUE(h.Resolved().empty());  // resolved in order only
  const Sent second = h.Send();
  EXPECT_EQ(second.sequences, (std::vector<uint64_t>{1}));  // the acknowledged one is skipped
  h.ReplyAll(second, wire::ErrorCode::None, 8);
  EXPECT_EQ(Sequences(h.Resolved()), (std::vector<uint64_t>{1, 2}));
}

TEST(PublishSessionTest, AMessageTheReplyLeavesUnansweredIsResentAndMaybeStored) {
  Harness h;
  h.Enqueue({"m1", "m2"});
  const Sent first = h.Send();
  const PublishStep step = h.Reply(first, {{1, 3, wire::ErrorCode::None}});
  EXPECT_EQ(step.pause, milliseconds{0});
  EXPECT_NE(h.session.attempts().Summary().find("left 1 message(s) unanswered"), std::string::npos);
  EXPECT_EQ(Sequences(h.Resolved()), (std::vector<uint64_t>{1}));
  EXPECT_EQ(h.DroppedByTooLarge(), 0u);
}

TEST(PublishSessionTest, ResendBackoffGrowsWithoutProgressAndResetsWithIt) {
  Harness h;
  h.Enqueue({"m"});
  const milliseconds expected[] = {milliseconds{50},  milliseconds{100}, milliseconds{200},
                                   milliseconds{400}, milliseconds{500}, milliseconds{500}};
  for (const milliseconds pause : expected) {
    EXPECT_EQ(h.ReplyAll(h.Send(), wire::ErrorCode::OutOfSequence).pause, pause);
  }
  h.Enqueue({"n"});
  const Sent both = h.Send();
  EXPECT_EQ(
      h.Reply(both, {{1, 0, wire::ErrorCode::None}, {2, 0, wire::ErrorCode::OutOfSequence}}).pause,
      milliseconds{0});
  EXPECT_EQ(h.ReplyAll(h.Send(), wire::ErrorCode::OutOfSequence).pause, milliseconds{50});
}

TEST(PublishSessionTest, BusyBacksOffExponentiallyOnTheSameBrokerUntilAReply) {
  Harness h;
  h.Enqueue({"m"});
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::Busy).pause, milliseconds{50});
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::Busy).pause, milliseconds{100});
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::Busy).pause, milliseconds{200});
  h.session.BeginCall();  // a new synchronous call starts afresh
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::Busy).pause, milliseconds{50});
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::Busy).pause, milliseconds{100});
  const Sent sent = h.Send();
  EXPECT_EQ(sent.sequences, (std::vector<uint64_t>{1}));
  h.ReplyAll(sent, wire::ErrorCode::OutOfSequence);
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::Busy).pause, milliseconds{50});
  EXPECT_EQ(h.session.Target(), "a:1");
}

TEST(PublishSessionTest, NotLeaderPausesFromTheSecondHopInARow) {
  Harness h;
  h.Enqueue({"m"});
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "b:2").pause, milliseconds{0});
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "a:1").pause, kRetryPause);
  EXPECT_EQ(h.session.Target(), "a:1");
  // A reply ends the run of redirects.
  h.ReplyAll(h.Send(), wire::ErrorCode::OutOfSequence);
  EXPECT_EQ(h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "c:3").pause, milliseconds{0});
  const Sent sent = h.Send();
  EXPECT_EQ(sent.sequences, (std::vector<uint64_t>{1}));
  h.ReplyAll(sent, wire::ErrorCode::None);
  EXPECT_EQ(h.Resolved().size(), 1u);
}

TEST(PublishSessionTest, AFollowerThatNamesTheLeaderJustGivenUpOnIsPassedBy) {
  // A partition: a:1 led and lost its quorum, b:2 is cut off with it and
  // still names it, c:3 is on the side that elects a new leader. Going back
  // to a:1 would bounce between a and b for the whole partition.
  Harness h;
  h.Enqueue({"m"});
  h.Send();
  h.session.OnSilence("no reply within 150 ms");
  EXPECT_EQ(h.session.Target(), "b:2");
  h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "a:1");
  EXPECT_EQ(h.session.Target(), "c:3");
  // A leader named elsewhere is still followed, and once it fails too the
  // rotation goes on from where it was, past the one just given up on.
  h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "b:2");
  EXPECT_EQ(h.session.Target(), "b:2");
  h.session.OnSilence("no reply within 150 ms");
  EXPECT_EQ(h.session.Target(), "a:1");
  // Passed by once: named again, it is tried again (it may be back).
  h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "b:2");
  EXPECT_EQ(h.session.Target(), "c:3");
  h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "b:2");
  EXPECT_EQ(h.session.Target(), "b:2");
  const Sent sent = h.Send();
  h.ReplyAll(sent, wire::ErrorCode::None);
  EXPECT_EQ(h.Resolved().size(), 1u);
}

TEST(PublishSessionTest, WithOneBrokerListedARedirectIsAlwaysFollowed) {
  Harness h;
  h.brokers = {"a:1"};
  h.Enqueue({"m"});
  h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "b:2");
  EXPECT_EQ(h.session.Target(), "b:2");
  h.session.OnSilence("no reply within 150 ms");  // b:2 is cut off for now
  EXPECT_EQ(h.session.Target(), "a:1");
  h.Refuse(h.Send(), wire::ErrorCode::NotLeader, "b:2");
  EXPECT_EQ(h.session.Target(), "b:2");  // the only way on: it may be back
}

TEST(PublishSessionTest, SilenceMovesOnAndMarksEveryRequestInFlightMaybeStored) {
  Harness h(PublishLimits{1, UINT64_MAX, 4});
  h.Enqueue({"m1", "m2", "m3"});
  const Sent s1 = h.Send();
  const Sent s2 = h.Send();
  EXPECT_EQ(s2.sequences, (std::vector<uint64_t>{2}));
  const PublishStep step = h.session.OnSilence("no reply within 150 ms");
  EXPECT_TRUE(step.reconnect);
  EXPECT_EQ(step.pause, milliseconds{0});
  EXPECT_EQ(h.session.Target(), "b:2");
  EXPECT_EQ(h.session.inflight(), 0u);
  EXPECT_NE(h.session.attempts().Summary().find("a:1 (no reply within 150 ms)"), std::string::npos);
  // A late answer on the abandoned socket is not matched.
  EXPECT_FALSE(h.ReplyAll(s1, wire::ErrorCode::None).matched);
  // Resent from the front, same sequences; m3 was never sent.
  const Sent again = h.Send();
  EXPECT_EQ(again.sequences, (std::vector<uint64_t>{1}));
  h.Refuse(again, wire::ErrorCode::TooLarge);
  EXPECT_TRUE(h.Resolved().empty());  // m1 may be stored: kept
}

TEST(PublishSessionTest, ASendThatFailedLeavesItsMessagesAsTheyWere) {
  Harness h;
  h.Enqueue({"m1"});
  h.Send();
  const PublishStep step = h.session.OnSendFailed("the send queue to a:1 is full");
  EXPECT_TRUE(step.reconnect);
  EXPECT_EQ(h.session.inflight(), 0u);
  EXPECT_EQ(h.session.Target(), "b:2");
  EXPECT_EQ(h.DroppedByTooLarge(), 1u);  // it never left: certainly not stored
}

TEST(PublishSessionTest, AConnectFailurePausesAndTriesTheNextBroker) {
  Harness h;
  h.Enqueue({"m1"});
  const PublishStep step = h.session.OnConnectFailed("cannot connect");
  EXPECT_EQ(step.pause, kRetryPause);
  EXPECT_FALSE(step.reconnect);
  EXPECT_EQ(h.session.Target(), "b:2");
  EXPECT_EQ(h.Send().sequences, (std::vector<uint64_t>{1}));
}

TEST(PublishSessionTest, DuplicateTooOldResolvesWithTheOffsetForgotten) {
  Harness h;
  h.Enqueue({"m1", "m2"});
  const Sent sent = h.Send();
  h.Reply(sent, {{1, 0, wire::ErrorCode::DuplicateTooOld}, {2, 12, wire::ErrorCode::None}});
  const std::vector<PublishOutcome> outcomes = h.Resolved();
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_EQ(outcomes[0].kind, Kind::kOffsetForgotten);
  EXPECT_EQ(outcomes[0].sequence, 1u);
  EXPECT_EQ(outcomes[1].kind, Kind::kStored);
  EXPECT_EQ(outcomes[1].offset, 12u);
}

// TooLarge / BadRequest of a batch where some messages may be stored: those
// stay queued and are resent alone; the rest are dropped once the kept ones
// are resolved, and give their sequences back.
TEST(PublishSessionTest, RefusalKeepsTheMaybeStoredMessagesAndDropsTheOthers) {
  for (const wire::ErrorCode code : {wire::ErrorCode::TooLarge, wire::ErrorCode::BadRequest}) {
    SCOPED_TRACE(WireCodeName(code));
    Harness h;
    h.Enqueue({"m1", "m2"});
    h.Send();
    h.session.OnSilence("no reply");  // m1, m2 may be stored
    h.Enqueue({"m3", "m4"});
    const Sent refused = h.Send();
    EXPECT_EQ(refused.sequences, (std::vector<uint64_t>{1, 2, 3, 4}));
    const PublishStep step = h.Refuse(refused, code);
    ASSERT_TRUE(step.rejection.has_value());
    EXPECT_NE(step.rejection->find("2 message(s) that were never stored are dropped"),
              std::string::npos)
        << *step.rejection;
    EXPECT_NE(step.rejection->find("2 message(s) (sequences 1..2 of producer 77) stay queued"),
              std::string::npos)
        << *step.rejection;
    EXPECT_TRUE(h.Resolved().empty());  // m1 first: in order
    h.Enqueue({"m5"});
    // The kept ones go alone: the refused ones stop the request.
    const Sent kept = h.Send();
    EXPECT_EQ(kept.sequences, (std::vector<uint64_t>{1, 2}));
    EXPECT_FALSE(h.session.CanSend());
    h.ReplyAll(kept, wire::ErrorCode::None, 30);
    const std::vector<PublishOutcome> outcomes = h.Resolved();
    ASSERT_EQ(outcomes.size(), 4u);
    EXPECT_EQ(outcomes[0].kind, Kind::kStored);
    EXPECT_EQ(outcomes[1].kind, Kind::kStored);
    EXPECT_EQ(outcomes[2].kind, Kind::kRejected);
    EXPECT_EQ(outcomes[3].kind, Kind::kRejected);
    EXPECT_EQ(outcomes[3].ticket, 4u);
    // m5 takes m3's sequence: the producer's sequences stay contiguous.
    const Sent next = h.Send();
    EXPECT_EQ(next.sequences, (std::vector<uint64_t>{3}));
    EXPECT_EQ(next.payloads, (std::vector<std::string>{"m5"}));
  }
}

TEST(PublishSessionTest, RefusalOfMessagesThatMayAllBeStoredKeepsThemAll) {
  Harness h;
  h.Enqueue({"m1", "m2"});
  h.Send();
  h.session.OnSilence("no reply");
  const PublishStep step = h.Refuse(h.Send(), wire::ErrorCode::TooLarge);
  ASSERT_TRUE(step.rejection.has_value());
  EXPECT_NE(step.rejection->find("stay queued"), std::string::npos);
  EXPECT_EQ(step.rejection->find("dropped"), std::string::npos);
  EXPECT_EQ(step.pause, kBusyBackoffMin);  // the AsyncPublisher resends after it
  EXPECT_TRUE(h.Resolved().empty());
  EXPECT_EQ(h.Send().sequences, (std::vector<uint64_t>{1, 2}));
}

TEST(PublishSessionTest, PipelinedRefusalIsSettledOnceNothingIsInFlight) {
  Harness h(PublishLimits{1, UINT64_MAX, 3});
  h.Enqueue({"m1", "m2", "m3"});
  const Sent s1 = h.Send();
  const Sent s2 = h.Send();
  const Sent s3 = h.Send();
  EXPECT_EQ(s3.sequences, (std::vector<uint64_t>{3}));
  // m2's request is refused; m3's is still in flight.
  const PublishStep refused = h.Refuse(s2, wire::ErrorCode::TooLarge);
  EXPECT_FALSE(refused.rejection.has_value());
  EXPECT_FALSE(h.session.CanSend());  // nothing goes out until it is settled
  h.ReplyAll(s1, wire::ErrorCode::None, 10);
  EXPECT_EQ(Sequences(h.Resolved()), (std::vector<uint64_t>{1}));
  // The last answer settles it: m3 was out of sequence behind m2.
  const PublishStep settled = h.ReplyAll(s3, wire::ErrorCode::OutOfSequence);
  ASSERT_TRUE(settled.rejection.has_value());
  EXPECT_NE(settled.rejection->find("1 message(s) that were never stored are dropped"),
            std::string::npos)
      << *settled.rejection;
  const std::vector<PublishOutcome> outcomes = h.Resolved();
  ASSERT_EQ(outcomes.size(), 1u);
  EXPECT_EQ(outcomes[0].kind, Kind::kRejected);
  EXPECT_EQ(outcomes[0].ticket, 2u);
  // m3 is numbered again with m2's sequence.
  const Sent resent = h.Send();
  EXPECT_EQ(resent.sequences, (std::vector<uint64_t>{2}));
  EXPECT_EQ(resent.payloads, (std::vector<std::string>{"m3"}));
}

TEST(PublishSessionTest, BatchLimitsCutRequestsAndBusyRewindsThePipeline) {
  Harness h(PublishLimits{2, UINT64_MAX, 3});
  h.Enqueue({"m1", "m2", "m3", "m4", "m5", "m6"});
  const Sent s1 = h.Send();
  const Sent s2 = h.Send();
  const Sent s3 = h.Send();
  EXPECT_EQ(s1.sequences, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(s3.sequences, (std::vector<uint64_t>{5, 6}));
  EXPECT_FALSE(h.session.CanSend());
  h.ReplyAll(s1, wire::ErrorCode::None, 0);
  EXPECT_EQ(h.Refuse(s2, wire::ErrorCode::Busy).pause, kBusyBackoffMin);
  EXPECT_FALSE(h.ReplyAll(s3, wire::ErrorCode::OutOfSequence).reconnect);
  EXPECT_EQ(Sequences(h.Resolved()), (std::vector<uint64_t>{1, 2}));
  const Sent r1 = h.Send();
  const Sent r2 = h.Send();
  EXPECT_EQ(r1.sequences, (std::vector<uint64_t>{3, 4}));
  EXPECT_EQ(r2.sequences, (std::vector<uint64_t>{5, 6}));
  h.ReplyAll(r2, wire::ErrorCode::OutOfSequence);  // overtook r1 at the broker
  h.ReplyAll(r1, wire::ErrorCode::None, 2);
  EXPECT_EQ(Sequences(h.Resolved()), (std::vector<uint64_t>{3, 4}));
  const Sent r3 = h.Send();
  EXPECT_EQ(r3.sequences, (std::vector<uint64_t>{5, 6}));
  h.ReplyAll(r3, wire::ErrorCode::None, 4);
  EXPECT_EQ(Sequences(h.Resolved()), (std::vector<uint64_t>{5, 6}));
}

TEST(PublishSessionTest, BatchBytesLimitLetsALargeMessageGoAlone) {
  Harness h(PublishLimits{100, 4, 8});
  h.session.Enqueue("", "12");
  h.session.Enqueue("", "34");
  h.session.Enqueue("", "567890");
  h.session.Enqueue("", "1");
  EXPECT_EQ(h.session.unsent_bytes(), 11u);
  EXPECT_EQ(h.Send().sequences, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(h.Send().sequences, (std::vector<uint64_t>{3}));
  EXPECT_EQ(h.Send().sequences, (std::vector<uint64_t>{4}));
  EXPECT_EQ(h.session.unsent_bytes(), 0u);
}

TEST(PublishSessionTest, PopAnyTakesUnresolvedMessagesToo) {
  Harness h;
  h.Enqueue({"m1", "m2"});
  const Sent sent = h.Send();
  h.Reply(sent, {{1, 0, wire::ErrorCode::OutOfSequence}, {2, 6, wire::ErrorCode::None}});
  PublishOutcome outcome;
  ASSERT_TRUE(h.session.PopAny(&outcome));
  EXPECT_EQ(outcome.kind, Kind::kUnresolved);
  ASSERT_TRUE(h.session.PopAny(&outcome));
  EXPECT_EQ(outcome.kind, Kind::kStored);
  EXPECT_EQ(outcome.offset, 6u);
  EXPECT_FALSE(h.session.PopAny(&outcome));
  EXPECT_EQ(h.session.queued_bytes(), 0u);
}

}  // namespace
}  // namespace ordo::client_internal
