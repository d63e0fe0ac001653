// Replay and GetStatus against a scripted fake broker: docs/protocol.md,
// "Replay" and "Status".

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "ordo/client.h"
#include "tests/client/fake_broker.h"

namespace ordo {
namespace {

using std::chrono::milliseconds;
using testing::DeliverRange;
using testing::ErrorFrame;
using testing::FakeBroker;
using testing::Request;
using testing::StatusReplyFrame;
using testing::StatusSpec;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kRequestTimeout{150};

ClientOptions Options(std::vector<std::string> brokers) {
  ClientOptions options;
  options.brokers = std::move(brokers);
  options.request_timeout = kRequestTimeout;
  options.call_timeout = milliseconds{3000};
  return options;
}

// Answers Fetch from the test stream [0, head), at most `page` records a
// reply (as a broker's frame limit would).
FakeBroker::Handler FetchServer(uint64_t head, uint64_t page) {
  return [head, page](const Request& request, FakeBroker& broker) {
    if (request.body != wire::Body::Fetch) return;
    const uint64_t first = std::min(request.from_offset, head);
    const uint64_t n = std::min<uint64_t>({page, request.max_messages, head - first});
    broker.Send(request, DeliverRange(request.request_id, first, first + n, head));
  };
}

void ExpectTestStream(const std::vector<Record>& records, uint64_t first, uint64_t end) {
  ASSERT_EQ(records.size(), end - first);
  for (uint64_t offset = first; offset < end; ++offset) {
    const Record& record = records[offset - first];
    EXPECT_EQ(record.offset, offset);
    EXPECT_EQ(record.payload, "m" + std::to_string(offset));
    EXPECT_EQ(record.key, "k" + std::to_string(offset));
  }
}

TEST(ReplayTest, PagesThroughFetchUpToTheHead) {
  FakeBroker broker(FetchServer(10, 3));
  Result<std::vector<Record>> records = Replay(Options({broker.endpoint()}), 2, 0);
  ASSERT_TRUE(records.ok()) << records.error().message;
  ExpectTestStream(records.value(), 2, 10);
  const std::vector<Request> fetches = broker.requests(wire::Body::Fetch);
  ASSERT_EQ(fetches.size(), 3u);
  EXPECT_EQ(fetches[0].from_offset, 2u);
  EXPECT_EQ(fetches[1].from_offset, 5u);
  EXPECT_EQ(fetches[2].from_offset, 8u);
  for (const Request& fetch : fetches) {
    EXPECT_GT(fetch.max_messages, 0u);
    EXPECT_LE(fetch.max_messages, 10000u);
  }
}

TEST(ReplayTest, StopsAtAnExplicitEndAndAsksForNoMore) {
  FakeBroker broker(FetchServer(100, 4));
  Result<std::vector<Record>> records = Replay(Options({broker.endpoint()}), 10, 17);
  ASSERT_TRUE(records.ok()) << records.error().message;
  ExpectTestStream(records.value(), 10, 17);
  const std::vector<Request> fetches = broker.requests(wire::Body::Fetch);
  ASSERT_EQ(fetches.size(), 2u);
  EXPECT_EQ(fetches[0].max_messages, 7u);
  EXPECT_EQ(fetches[1].from_offset, 14u);
  EXPECT_EQ(fetches[1].max_messages, 3u);
}

TEST(ReplayTest, EmptyRangesAndReversedRanges) {
  FakeBroker broker(FetchServer(5, 10));
  Result<std::vector<Record>> at_head = Replay(Options({broker.endpoint()}), 5, 0);
  ASSERT_TRUE(at_head.ok()) << at_head.error().message;
  EXPECT_TRUE(at_head.value().empty());
  Result<std::vector<Record>> empty = Replay(Options({broker.endpoint()}), 3, 3);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty.value().empty());
  EXPECT_EQ(Replay(Options({broker.endpoint()}), 4, 2).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(Replay(Options({}), 0, 0).error().code, ErrorCode::kInvalidArgument);
}

// A broker answering Fetch(from) with records at other offsets (here: from
// 2 below what was asked, with other payloads) serves a broken stream:
// nothing of that answer is returned, and the next broker serves the range.
TEST(ReplayTest, AnAnswerAtAnotherOffsetIsABrokenStreamAndTheNextBrokerServes) {
  FakeBroker broken([](const Request& request, FakeBroker& broker) {
    if (request.body != wire::Body::Fetch) return;
    const uint64_t from = request.from_offset >= 2 ? request.from_offset - 2 : 0;
    broker.Send(request, testing::DeliverFrame(request.request_id,
                                               {{from, 7, 99, "", "wrong"}, {from + 1, 7, 98, "", "wrong"}},
                                               8));
  });
  FakeBroker serving(FetchServer(8, 3));
  for (int order = 0; order < 2; ++order) {
    std::vector<std::string> brokers = {broken.endpoint(), serving.endpoint()};
    if (order == 1) std::swap(brokers[0], brokers[1]);
    ClientOptions options = Options(brokers);
    Result<std::vector<Record>> records = Replay(options, 3, 8);
    ASSERT_TRUE(records.ok()) << records.error().message;
    ExpectTestStream(records.value(), 3, 8);
  }
  // Alone, it is never believed.
  ClientOptions only = Options({broken.endpoint()});
  only.call_timeout = milliseconds{500};
  std::vector<Record> seen;
  Result<uint64_t> streamed = Replay(only, 3, 8, [&](const Record& r, uint64_t) { seen.push_back(r); });
  EXPECT_FALSE(streamed.ok());
  EXPECT_TRUE(seen.empty());
}

TEST(ReplayTest, FailsOverToTheNextBrokerOnTimeout) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  FakeBroker serving(FetchServer(6, 10));
  const Clock::time_point start = Clock::now();
  Result<std::vector<Record>> records =
      Replay(Options({silent.endpoint(), serving.endpoint()}), 0, 0);
  ASSERT_TRUE(records.ok()) << records.error().message;
  EXPECT_GE(Clock::now() - start, kRequestTimeout);
  ExpectTestStream(records.value(), 0, 6);
  EXPECT_EQ(silent.requests().size(), 1u);
}

TEST(ReplayTest, AnEndPastTheHeadOfEveryBrokerIsInvalidArgument) {
  FakeBroker broker(FetchServer(10, 100));
  Result<std::vector<Record>> records = Replay(Options({broker.endpoint()}), 0, 20);
  ASSERT_FALSE(records.ok());
  EXPECT_EQ(records.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(records.error().message.find("head"), std::string::npos) << records.error().message;
}

TEST(ReplayTest, OffsetBelowRetainedSurfacesTheEarliestOffset) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    b.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::OffsetBelowRetained,
                               "compacted", "", 30));
  });
  Result<std::vector<Record>> records = Replay(Options({broker.endpoint()}), 0, 0);
  ASSERT_FALSE(records.ok());
  EXPECT_EQ(records.error().code, ErrorCode::kOffsetBelowRetained);
  EXPECT_EQ(records.error().earliest_offset, 30u);
}

TEST(ReplayTest, DeadlineReturnsTimeout) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  ClientOptions options = Options({silent.endpoint()});
  options.call_timeout = milliseconds{300};
  const Clock::time_point start = Clock::now();
  Result<std::vector<Record>> records = Replay(options, 0, 0);
  ASSERT_FALSE(records.ok());
  EXPECT_EQ(records.error().code, ErrorCode::kTimeout);
  EXPECT_LT(Clock::now() - start, milliseconds{1500});
}

// A broker that refused, then kept silent until the call's deadline cut the
// wait: the error gives the refusal, not a "no reply" the call did not wait
// out (the CLI's exit message says why the broker would not serve).
TEST(ReplayTest, ARefusalIsNotHiddenByAWaitTheDeadlineCutShort) {
  std::atomic<int> fetches{0};
  FakeBroker broker([&](const Request& request, FakeBroker& b) {
    if (request.body != wire::Body::Fetch || fetches++ > 0) return;
    b.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::TooManyConnections,
                               "too many connections with this key"));
  });
  ClientOptions options = Options({broker.endpoint()});
  options.request_timeout = milliseconds{5000};
  options.call_timeout = milliseconds{800};
  Result<std::vector<Record>> records = Replay(options, 0, 5);
  ASSERT_FALSE(records.ok());
  EXPECT_GE(fetches.load(), 2);
  EXPECT_EQ(records.error().code, ErrorCode::kUnavailable) << records.error().message;
  EXPECT_NE(records.error().message.find("too many connections"), std::string::npos)
      << records.error().message;
  EXPECT_EQ(records.error().message.find("no reply within"), std::string::npos)
      << records.error().message;
}

TEST(GetStatusTest, ParsesEveryField) {
  StatusSpec spec;
  spec.node_id = 3;
  spec.role = "leader";
  spec.leader_id = 3;
  spec.leader_endpoint = "10.0.0.3:7003";
  spec.ballot_round = 17;
  spec.ballot_node = 3;
  spec.chosen = 1234;
  spec.last_instance = 1240;
  spec.next_offset = 99999;
  spec.earliest_offset = 512;
  spec.peers = {{1, 1230, 4, 15}, {2, 1000, 234, 900}};
  spec.storage_corruptions = 2;
  spec.frames_rejected = 41;
  FakeBroker broker([&](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::StatusRequest) {
      b.Send(request, StatusReplyFrame(request.request_id, spec));
    }
  });
  Result<BrokerStatus> result = GetStatus(broker.endpoint(), milliseconds{2000});
  ASSERT_TRUE(result.ok()) << result.error().message;
  const BrokerStatus& status = result.value();
  EXPECT_EQ(status.endpoint, broker.endpoint());
  EXPECT_EQ(status.node_id, 3u);
  EXPECT_EQ(status.role, "leader");
  EXPECT_EQ(status.leader_id, 3u);
  EXPECT_EQ(status.leader_endpoint, "10.0.0.3:7003");
  EXPECT_EQ(status.ballot_round, 17u);
  EXPECT_EQ(status.ballot_node, 3u);
  EXPECT_EQ(status.chosen, 1234u);
  EXPECT_EQ(status.last_instance, 1240u);
  EXPECT_EQ(status.next_offset, 99999u);
  EXPECT_EQ(status.earliest_offset, 512u);
  ASSERT_EQ(status.peers.size(), 2u);
  EXPECT_EQ(status.peers[0].node_id, 1u);
  EXPECT_EQ(status.peers[0].chosen, 1230u);
  EXPECT_EQ(status.peers[0].lag_instances, 4u);
  EXPECT_EQ(status.peers[0].last_heard_ms, 15u);
  EXPECT_EQ(status.peers[1].node_id, 2u);
  EXPECT_EQ(status.peers[1].chosen, 1000u);
  EXPECT_EQ(status.peers[1].lag_instances, 234u);
  EXPECT_EQ(status.peers[1].last_heard_ms, 900u);
  EXPECT_EQ(status.storage_corruptions, 2u);
  EXPECT_EQ(status.frames_rejected, 41u);
}

TEST(GetStatusTest, SilentBrokerTimesOut) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  const Clock::time_point start = Clock::now();
  Result<BrokerStatus> result = GetStatus(silent.endpoint(), milliseconds{150});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kTimeout);
  EXPECT_NE(result.error().message.find(silent.endpoint()), std::string::npos);
  EXPECT_GE(Clock::now() - start, milliseconds{150});
  EXPECT_LT(Clock::now() - start, milliseconds{1000});
}

TEST(GetStatusTest, GarbageIsIgnoredAndAnErrorReplyIsMapped) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    b.Send(request, "garbage");
    b.Send(request, testing::EnvelopeFrame(request.request_id, 9));
    b.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::Internal, "disk on fire"));
  });
  Result<BrokerStatus> result = GetStatus(broker.endpoint(), milliseconds{2000});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(result.error().message.find("disk on fire"), std::string::npos);
  EXPECT_EQ(GetStatus("", milliseconds{100}).error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace ordo
