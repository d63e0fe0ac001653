// Publisher against a scripted fake broker: one test per rule of
// docs/protocol.md, "Publishing".

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "ordo/client.h"
#include "tests/client/fake_broker.h"

namespace ordo {
namespace {

using std::chrono::milliseconds;
using testing::AckAll;
using testing::ErrorFrame;
using testing::FakeBroker;
using testing::PublishReplyFrame;
using testing::Request;
using testing::ResultSpec;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kRequestTimeout{150};
// A code no version of the protocol has (yet).
constexpr auto kUnknownCode = static_cast<wire::ErrorCode>(99);

ClientOptions Options(std::vector<std::string> brokers,
                      milliseconds call_timeout = milliseconds{3000}) {
  ClientOptions options;
  options.brokers = std::move(brokers);
  options.request_timeout = kRequestTimeout;
  options.call_timeout = call_timeout;
  return options;
}

// Acknowledges every publish, message i of the stream at offset 100 + i.
FakeBroker::Handler AckingLeader() {
  auto next_offset = std::make_shared<uint64_t>(100);
  return [next_offset](const Request& request, FakeBroker& broker) {
    if (request.body != wire::Body::Publish) return;
    broker.Send(request, AckAll(request, *next_offset));
    *next_offset += request.messages.size();
  };
}

// Records and never answers.
FakeBroker::Handler Silent() {
  return [](const Request&, FakeBroker&) {};
}

milliseconds Since(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

TEST(ParseBrokerListTest, SplitsTrimsAndSkipsEmpties) {
  EXPECT_EQ(ParseBrokerList("a:1,b:2"), (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(ParseBrokerList("  a:1 , ,\tb:2 ,"), (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(ParseBrokerList("host.example:7000"), (std::vector<std::string>{"host.example:7000"}));
  EXPECT_TRUE(ParseBrokerList("").empty());
  EXPECT_TRUE(ParseBrokerList(" , ,").empty());
}

TEST(PublisherTest, AcknowledgedMessagesReturnTheirOffsetsWithContiguousSequences) {
  FakeBroker leader(AckingLeader());
  Publisher publisher(Options({leader.endpoint()}), 0x1234);
  EXPECT_EQ(publisher.producer_id(), 0x1234u);

  Result<uint64_t> first = publisher.Publish("p0", "k0");
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first.value(), 100u);
  Result<std::vector<uint64_t>> batch =
      publisher.PublishBatch({{"", "p1"}, {"k2", "p2"}, {"", "p3"}});
  ASSERT_TRUE(batch.ok()) << batch.error().message;
  EXPECT_EQ(batch.value(), (std::vector<uint64_t>{101, 102, 103}));

  const std::vector<Request> requests = leader.requests(wire::Body::Publish);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].Sequences(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(requests[1].Sequences(), (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_NE(requests[0].request_id, requests[1].request_id);
  for (const Request& request : requests) {
    for (const Request::Message& message : request.messages) {
      EXPECT_EQ(message.producer, 0x1234u);
    }
  }
  EXPECT_EQ(requests[0].messages[0].key, "k0");
  EXPECT_EQ(requests[0].messages[0].payload, "p0");
  // An empty key travels as an absent one: the schema's "unkeyed".
  EXPECT_FALSE(requests[1].messages[0].has_key);
  EXPECT_EQ(requests[1].messages[1].key, "k2");
  EXPECT_EQ(requests[1].messages[2].payload, "p3");
  EXPECT_EQ(leader.undecodable(), 0);
}

TEST(PublisherTest, ProducerIdZeroPicksARandomOne) {
  Publisher a(Options({"127.0.0.1:1"}));
  Publisher b(Options({"127.0.0.1:1"}));
  EXPECT_NE(a.producer_id(), 0u);
  EXPECT_NE(b.producer_id(), 0u);
  EXPECT_NE(a.producer_id(), b.producer_id());
}

TEST(PublisherTest, EmptyBrokerListIsInvalidArgument) {
  Publisher publisher(Options({}));
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(result.error().message.find("brokers"), std::string::npos);
  EXPECT_EQ(Publisher(Options({""})).Publish("x").error().code, ErrorCode::kInvalidArgument);
}

TEST(PublisherTest, NotLeaderRedirectsToTheNamedLeaderEvenIfNotListed) {
  FakeBroker leader(AckingLeader());
  FakeBroker follower([&](const Request& request, FakeBroker& broker) {
    broker.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::NotLeader,
                                    "not the leader", leader.endpoint()));
  });
  Publisher publisher(Options({follower.endpoint()}));
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), 100u);
  ASSERT_EQ(follower.requests().size(), 1u);
  ASSERT_EQ(leader.requests().size(), 1u);
  EXPECT_EQ(leader.requests()[0].Sequences(), (std::vector<uint64_t>{1}));
}

TEST(PublisherTest, NotLeaderWithoutALeaderTriesTheNextBroker) {
  FakeBroker follower([](const Request& request, FakeBroker& broker) {
    broker.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::NotLeader, "no idea"));
  });
  FakeBroker leader(AckingLeader());
  Publisher publisher(Options({follower.endpoint(), leader.endpoint()}));
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(follower.requests().size(), 1u);
  EXPECT_EQ(leader.requests().size(), 1u);
}

TEST(PublisherTest, SilentBrokerTimesOutAndTheNextBrokerGetsTheSameSequences) {
  FakeBroker silent(Silent());
  FakeBroker leader(AckingLeader());
  Publisher publisher(Options({silent.endpoint(), leader.endpoint()}));
  const Clock::time_point start = Clock::now();
  Result<std::vector<uint64_t>> result = publisher.PublishBatch({{"", "a"}, {"", "b"}});
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_GE(Since(start), kRequestTimeout);
  EXPECT_EQ(result.value(), (std::vector<uint64_t>{100, 101}));

  ASSERT_EQ(silent.requests().size(), 1u);
  ASSERT_EQ(leader.requests().size(), 1u);
  EXPECT_EQ(silent.requests()[0].Sequences(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(leader.requests()[0].Sequences(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(leader.requests()[0].messages[1].payload, "b");
}

TEST(PublisherTest, OutOfSequenceAndStaleLeaderResendEveryUnacknowledgedMessage) {
  std::atomic<int> publishes{0};
  FakeBroker leader([&](const Request& request, FakeBroker& broker) {
    switch (publishes++) {
      case 0:  // [1, 2, 3, 4]: 1 stored, the rest lost in a leader change
        broker.Send(request, PublishReplyFrame(request.request_id,
                                               {{1, 50, wire::ErrorCode::None},
                                                {2, 0, wire::ErrorCode::OutOfSequence},
                                                {3, 0, wire::ErrorCode::StaleLeader},
                                                {4, 0, wire::ErrorCode::OutOfSequence}}));
        break;
      default:
        broker.Send(request, AckAll(request, 51));
        break;
    }
  });
  Publisher publisher(Options({leader.endpoint()}));
  Result<std::vector<uint64_t>> result =
      publisher.PublishBatch({{"", "a"}, {"", "b"}, {"", "c"}, {"", "d"}});
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), (std::vector<uint64_t>{50, 51, 52, 53}));
  const std::vector<Request> requests = leader.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].Sequences(), (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(requests[1].messages[0].payload, "b");
}

TEST(PublisherTest, BusyBacksOffAndRetriesTheSameBroker) {
  std::atomic<int> publishes{0};
  FakeBroker leader([&](const Request& request, FakeBroker& broker) {
    if (publishes++ < 2) {
      broker.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::Busy, "queue full"));
    } else {
      broker.Send(request, AckAll(request, 7));
    }
  });
  FakeBroker other(Silent());
  Publisher publisher(Options({leader.endpoint(), other.endpoint()}));
  const Clock::time_point start = Clock::now();
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), 7u);
  // 50 ms, then 100 ms: exponential.
  EXPECT_GE(Since(start), milliseconds{150});
  EXPECT_EQ(leader.requests().size(), 3u);
  EXPECT_EQ(other.requests().size(), 0u);
  for (const Request& request : leader.requests()) {
    EXPECT_EQ(request.Sequences(), (std::vector<uint64_t>{1}));
  }
}

TEST(PublisherTest, UnavailablePausesAndTriesTheNextBroker) {
  FakeBroker candidate([](const Request& request, FakeBroker& broker) {
    broker.Send(request,
                ErrorFrame(request.request_id, wire::ErrorCode::Unavailable, "election running"));
  });
  FakeBroker leader(AckingLeader());
  Publisher publisher(Options({candidate.endpoint(), leader.endpoint()}));
  const Clock::time_point start = Clock::now();
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_GE(Since(start), milliseconds{50});
  EXPECT_EQ(candidate.requests().size(), 1u);
  EXPECT_EQ(leader.requests().size(), 1u);
}

TEST(PublisherTest, BadRequestIsRejectedAndTheMessagesAreDropped) {
  std::atomic<int> publishes{0};
  FakeBroker leader([&](const Request& request, FakeBroker& broker) {
    if (publishes++ == 0) {
      broker.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::TooLarge,
                                      "message of 2000000 bytes above 1048576"));
    } else {
      broker.Send(request, AckAll(request, 9));
    }
  });
  Publisher publisher(Options({leader.endpoint()}));
  Result<std::vector<uint64_t>> rejected = publisher.PublishBatch({{"", "huge"}, {"", "b"}});
  ASSERT_FALSE(rejected.ok());
  EXPECT_EQ(rejected.error().code, ErrorCode::kRejected);
  EXPECT_NE(rejected.error().message.find("above 1048576"), std::string::npos)
      << rejected.error().message;
  EXPECT_EQ(leader.requests().size(), 1u);  // not retried

  // The rejected messages are gone, and their sequences are reused so the
  // producer's sequences stay contiguous at the broker.
  Result<uint64_t> next = publisher.Publish("c");
  ASSERT_TRUE(next.ok()) << next.error().message;
  ASSERT_EQ(leader.requests().size(), 2u);
  EXPECT_EQ(leader.requests()[1].Sequences(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(leader.requests()[1].messages[0].payload, "c");
}

TEST(PublisherTest, DeadlineReturnsTimeoutAndKeepsTheMessagesQueued) {
  std::atomic<bool> silent{true};
  FakeBroker broker_a([&](const Request& request, FakeBroker& broker) {
    if (!silent) broker.Send(request, AckAll(request, 40));
  });
  Publisher publisher(Options({broker_a.endpoint()}, milliseconds{400}));
  const Clock::time_point start = Clock::now();
  Result<std::vector<uint64_t>> result = publisher.PublishBatch({{"", "a"}, {"", "b"}});
  const milliseconds elapsed = Since(start);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kTimeout);
  EXPECT_NE(result.error().message.find(broker_a.endpoint()), std::string::npos)
      << result.error().message;
  EXPECT_GE(elapsed, milliseconds{400});
  EXPECT_LT(elapsed, milliseconds{1500});
  // One broker: every attempt went to it, from a fresh socket each time.
  EXPECT_GE(broker_a.requests().size(), 2u);

  // The next call resends the queued messages, oldest first, ahead of its
  // own, and returns only its own offsets.
  silent = false;
  Result<std::vector<uint64_t>> next = publisher.PublishBatch({{"", "c"}});
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next.value(), (std::vector<uint64_t>{42}));
  EXPECT_EQ(broker_a.requests().back().Sequences(), (std::vector<uint64_t>{1, 2, 3}));
}

TEST(PublisherTest, DuplicateTooOldOfAnOlderQueuedMessageCountsAsAcknowledged) {
  std::atomic<bool> silent{true};
  FakeBroker leader([&](const Request& request, FakeBroker& broker) {
    if (silent) return;
    std::vector<ResultSpec> results;
    for (const Request::Message& message : request.messages) {
      results.push_back(message.sequence == 1 ? ResultSpec{1, 0, wire::ErrorCode::DuplicateTooOld}
                                              : ResultSpec{message.sequence, 60 + message.sequence,
                                                           wire::ErrorCode::None});
    }
    broker.Send(request, PublishReplyFrame(request.request_id, results));
  });
  Publisher publisher(Options({leader.endpoint()}, milliseconds{200}));
  ASSERT_EQ(publisher.Publish("old").error().code, ErrorCode::kTimeout);
  silent = false;
  Result<uint64_t> result = publisher.Publish("new");
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), 62u);
}

TEST(PublisherTest, DuplicateTooOldOfThisCallsMessageIsAProtocolError) {
  FakeBroker leader([](const Request& request, FakeBroker& broker) {
    const uint64_t sequence = request.messages.at(0).sequence;
    broker.Send(request, sequence == 1
                             ? PublishReplyFrame(request.request_id,
                                                 {{1, 0, wire::ErrorCode::DuplicateTooOld}})
                             : AckAll(request, 30));
  });
  Publisher publisher(Options({leader.endpoint()}));
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kProtocol);
  EXPECT_NE(result.error().message.find("DuplicateTooOld"), std::string::npos);
  // It is stored: nothing stays queued.
  Result<uint64_t> next = publisher.Publish("y");
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next.value(), 30u);
  EXPECT_EQ(leader.requests().back().Sequences(), (std::vector<uint64_t>{2}));
}

// protocol.md: a per-message code this client does not know means "outcome
// unknown": the message is resent with the same sequence, never failed. The
// AsyncPublisher has the same test.
TEST(PublisherTest, AnUnknownPerMessageCodeIsResentWithTheSameSequence) {
  std::atomic<int> publishes{0};
  FakeBroker leader([&](const Request& request, FakeBroker& broker) {
    if (publishes++ == 0) {
      broker.Send(request, PublishReplyFrame(request.request_id,
                                             {{1, 0, kUnknownCode}, {2, 0, kUnknownCode}}));
    } else {
      broker.Send(request, AckAll(request, 20));
    }
  });
  Publisher publisher(Options({leader.endpoint()}));
  Result<std::vector<uint64_t>> result = publisher.PublishBatch({{"", "a"}, {"", "b"}});
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), (std::vector<uint64_t>{20, 21}));
  const std::vector<Request> requests = leader.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].Sequences(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(requests[1].Sequences(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(requests[1].messages[1].payload, "b");
}

TEST(PublisherTest, AnUnknownPerMessageCodeUntilCallTimeoutIsUnavailableAndStaysQueued) {
  std::atomic<bool> confused{true};
  FakeBroker leader([&](const Request& request, FakeBroker& broker) {
    broker.Send(request, confused ? PublishReplyFrame(request.request_id, {{1, 0, kUnknownCode}})
                                  : AckAll(request, 70));
  });
  Publisher publisher(Options({leader.endpoint()}, milliseconds{300}));
  Result<uint64_t> failed = publisher.Publish("a");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(failed.error().message.find("code 99 (unknown to this client)"), std::string::npos)
      << failed.error().message;
  // Resent with a pause that grows, not flooded: 50 + 100 + 200 ms.
  EXPECT_LE(leader.requests().size(), 5u);
  confused = false;
  Result<uint64_t> next = publisher.Publish("b");
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next.value(), 71u);
  EXPECT_EQ(leader.requests().back().Sequences(), (std::vector<uint64_t>{1, 2}));
}

TEST(PublisherTest, RefusalKeepsMessagesThatMayBeStoredAndDropsTheRest) {
  std::atomic<bool> silent{true};
  FakeBroker leader([&](const Request& request, FakeBroker& broker) {
    if (silent) return;
    for (const Request::Message& message : request.messages) {
      if (message.payload == "huge") {
        broker.Send(request,
                    ErrorFrame(request.request_id, wire::ErrorCode::TooLarge, "message too large"));
        return;
      }
    }
    broker.Send(request, AckAll(request, 10 + request.messages.front().sequence));
  });
  Publisher publisher(Options({leader.endpoint()}, milliseconds{200}));
  ASSERT_EQ(publisher.Publish("a").error().code, ErrorCode::kTimeout);  // "a" may be stored
  silent = false;
  Result<uint64_t> refused = publisher.Publish("huge");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kRejected);
  EXPECT_NE(refused.error().message.find("1 message(s) that were never stored are dropped"),
            std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("(sequences 1..1 of producer"), std::string::npos)
      << refused.error().message;
  EXPECT_EQ(leader.requests().back().Sequences(), (std::vector<uint64_t>{1, 2}));

  // "a" goes alone, keeping its sequence; "c" then gets the refused one's.
  Result<uint64_t> next = publisher.Publish("c");
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next.value(), 12u);
  const std::vector<Request> requests = leader.requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_EQ(requests[requests.size() - 2].Sequences(), (std::vector<uint64_t>{1}));
  EXPECT_EQ(requests[requests.size() - 2].messages[0].payload, "a");
  EXPECT_EQ(requests.back().Sequences(), (std::vector<uint64_t>{2}));
  EXPECT_EQ(requests.back().messages[0].payload, "c");
}

TEST(PublisherTest, GarbageFramesAreIgnored) {
  FakeBroker leader([](const Request& request, FakeBroker& broker) {
    const std::string valid = AckAll(request, 5);
    broker.Send(request, "");
    broker.Send(request, "hello");
    broker.Send(request, std::string(3, '\xff'));
    broker.Send(request, valid.substr(0, valid.size() / 2));  // truncated
    std::string wrong_identifier = valid;
    wrong_identifier.replace(4, 4, "ORDP");
    broker.Send(request, wrong_identifier);
    std::string bad_offsets = valid;
    for (size_t i = 8; i < bad_offsets.size(); i += 3) bad_offsets[i] = '\x7f';
    broker.Send(request, bad_offsets);
    broker.Send(request, testing::EnvelopeFrame(request.request_id, 2));  // unknown version
    broker.SendMultipart(request, {valid, valid});  // one frame per message only
    // A reply to another request: ignored, not matched.
    broker.Send(request,
                PublishReplyFrame(request.request_id + 1000, {{1, 999, wire::ErrorCode::None}}));
    broker.Send(request, valid);
  });
  Publisher publisher(Options({leader.endpoint()}));
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), 5u);
  EXPECT_EQ(leader.requests().size(), 1u);
}

TEST(PublisherTest, AnUnusableEndpointInTheListIsSkipped) {
  FakeBroker leader(AckingLeader());
  Publisher publisher(Options({"no-port-here", leader.endpoint()}));
  Result<uint64_t> result = publisher.Publish("x");
  ASSERT_TRUE(result.ok()) << result.error().message;
  EXPECT_EQ(result.value(), 100u);

  Publisher only_bad(Options({"no-port-here"}, milliseconds{200}));
  Result<uint64_t> failed = only_bad.Publish("x");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, ErrorCode::kTimeout);
  EXPECT_NE(failed.error().message.find("no-port-here"), std::string::npos)
      << failed.error().message;
}

TEST(PublisherTest, MovedFromPublisherReportsAnErrorInsteadOfCrashing) {
  Publisher a(Options({"127.0.0.1:1"}), 5);
  Publisher b(std::move(a));
  EXPECT_EQ(b.producer_id(), 5u);
  EXPECT_EQ(a.Publish("x").error().code, ErrorCode::kInvalidArgument);  // NOLINT: use after move
}

}  // namespace
}  // namespace ordo
