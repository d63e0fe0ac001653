// AsyncPublisher against scripted fake brokers: callback and future
// resolution, batching by size and linger, backpressure in both modes, and
// exactly-once retries (timeouts, NotLeader, Busy, OutOfSequence, refusals)
// with several requests in flight.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
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

constexpr milliseconds kRequestTimeout{150};
constexpr milliseconds kLong{60000};  // a wait that never ends in a passing test
// A code no version of the protocol has (yet).
constexpr auto kUnknownCode = static_cast<wire::ErrorCode>(99);

ClientOptions Options(std::vector<std::string> brokers, milliseconds call_timeout = kLong) {
  ClientOptions options;
  options.brokers = std::move(brokers);
  options.request_timeout = kRequestTimeout;
  options.call_timeout = call_timeout;
  return options;
}

// Never sends a batch for linger alone, so every request a test sees was
// caused by a full batch, a resend or a Flush.
AsyncPublisherOptions NoLinger(size_t batch_messages_max = 10000) {
  AsyncPublisherOptions options;
  options.linger = milliseconds{3600 * 1000};
  options.batch_messages_max = batch_messages_max;
  return options;
}

// A leader that applies the broker's sequence rule: a message is stored
// when its sequence is the producer's last + 1, a retry of a stored one gets
// its first offset back, a later one is OutOfSequence. `refuse(request, n)`
// (n counts publish requests from 0) may answer an Error frame instead of
// storing anything, and `drop_reply(n)` stores but sends no answer.
class SequencingLeader {
 public:
  std::function<std::string(const Request&, int)> refuse = [](const Request&, int) {
    return std::string();
  };
  std::function<bool(int)> drop_reply = [](int) { return false; };

  FakeBroker::Handler Handler() {
    return [this](const Request& request, FakeBroker& broker) {
      if (request.body != wire::Body::Publish) return;
      const int n = requests_++;
      const std::string refusal = refuse(request, n);
      if (!refusal.empty()) {
        broker.Send(request, refusal);
        return;
      }
      std::vector<ResultSpec> results;
      {
        std::lock_guard lock(mutex_);
        for (const Request::Message& m : request.messages) {
          uint64_t& last = last_[m.producer];
          auto& offsets = offsets_[m.producer];
          if (m.sequence <= last) {
            ++duplicates_;
            results.push_back({m.sequence, offsets[m.sequence], wire::ErrorCode::None});
          } else if (m.sequence == last + 1) {
            last = m.sequence;
            offsets[m.sequence] = log_.size();
            log_.push_back(m.payload);
            results.push_back({m.sequence, offsets[m.sequence], wire::ErrorCode::None});
          } else {
            results.push_back({m.sequence, 0, wire::ErrorCode::OutOfSequence});
          }
        }
      }
      if (!drop_reply(n)) broker.Send(request, PublishReplyFrame(request.request_id, results));
    };
  }
  std::vector<std::string> log() const {
    std::lock_guard lock(mutex_);
    return log_;
  }
  int duplicates() const {
    std::lock_guard lock(mutex_);
    return duplicates_;
  }

 private:
  std::atomic<int> requests_{0};
  mutable std::mutex mutex_;
  std::map<uint64_t, uint64_t> last_;
  std::map<uint64_t, std::map<uint64_t, uint64_t>> offsets_;
  std::vector<std::string> log_;  // payloads by offset
  int duplicates_ = 0;
};

// For SequencingLeader::refuse: TooLarge for every request holding a
// message with `payload`.
std::function<std::string(const Request&, int)> RefuseRequestsHolding(std::string payload) {
  return [payload](const Request& request, int) {
    for (const Request::Message& m : request.messages) {
      if (m.payload == payload) {
        return ErrorFrame(request.request_id, wire::ErrorCode::TooLarge, "message too large");
      }
    }
    return std::string();
  };
}

// Publishes "m0".."m<n-1>" with futures and returns them.
std::vector<std::future<Result<uint64_t>>> PublishMany(AsyncPublisher& publisher, int n) {
  std::vector<std::future<Result<uint64_t>>> futures;
  for (int i = 0; i < n; ++i) futures.push_back(publisher.Publish("m" + std::to_string(i)));
  return futures;
}

// Expects future i to resolve with offset first_offset + i.
void ExpectOffsets(std::vector<std::future<Result<uint64_t>>>& futures, uint64_t first_offset) {
  for (size_t i = 0; i < futures.size(); ++i) {
    Result<uint64_t> r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), first_offset + i);
  }
}

std::vector<std::string> Payloads(int n) {
  std::vector<std::string> payloads;
  for (int i = 0; i < n; ++i) payloads.push_back("m" + std::to_string(i));
  return payloads;
}

TEST(AsyncPublisherTest, CallbacksRunInPublishOrderWithTheirOffsets) {
  SequencingLeader leader;
  FakeBroker broker(leader.Handler());
  AsyncPublisher publisher(Options({broker.endpoint()}), NoLinger(7), 0x42);
  EXPECT_EQ(publisher.producer_id(), 0x42u);
  std::mutex mutex;
  std::vector<uint64_t> offsets;
  for (int i = 0; i < 100; ++i) {
    const std::optional<Error> refused =
        publisher.Publish("m" + std::to_string(i), i % 2 ? "k" : "", [&](const Result<uint64_t>& r) {
          std::lock_guard lock(mutex);
          offsets.push_back(r.ok() ? r.value() : ~uint64_t{0});
        });
    ASSERT_FALSE(refused) << refused->message;
  }
  ASSERT_FALSE(publisher.Flush(kLong));
  std::vector<uint64_t> expected;
  for (uint64_t i = 0; i < 100; ++i) expected.push_back(i);
  EXPECT_EQ(offsets, expected);  // in order, each once
  EXPECT_EQ(leader.log(), Payloads(100));
  EXPECT_EQ(leader.duplicates(), 0);

  // Sequences 1..100, contiguous across requests of at most 7 messages.
  uint64_t next = 1;
  for (const Request& request : broker.requests(wire::Body::Publish)) {
    EXPECT_LE(request.messages.size(), 7u);
    for (const Request::Message& m : request.messages) {
      EXPECT_EQ(m.producer, 0x42u);
      EXPECT_EQ(m.sequence, next++);
      EXPECT_EQ(m.has_key, m.sequence % 2 == 0);  // message i has sequence i + 1
    }
  }
  EXPECT_EQ(next, 101u);
}

TEST(AsyncPublisherTest, FuturesResolveWithOffsets) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    b.Send(request, AckAll(request, 500 + request.messages.front().sequence - 1));
  });
  AsyncPublisher publisher(Options({broker.endpoint()}), NoLinger());
  auto futures = PublishMany(publisher, 5);
  ASSERT_FALSE(publisher.Flush(kLong));
  ExpectOffsets(futures, 500);
}

TEST(AsyncPublisherTest, FullBatchesGoAtOnceAndTheRestWaitsForLingerOrFlush) {
  SequencingLeader leader;
  FakeBroker broker(leader.Handler());
  AsyncPublisher publisher(Options({broker.endpoint()}), NoLinger(4));
  auto futures = PublishMany(publisher, 10);
  // Two full batches are sent without waiting; both resolve.
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(futures[i].get().ok());
  // The last two wait for a linger of an hour: nothing else was sent.
  EXPECT_EQ(broker.requests(wire::Body::Publish).size(), 2u);
  EXPECT_EQ(futures[8].wait_for(milliseconds{0}), std::future_status::timeout);
  ASSERT_FALSE(publisher.Flush(kLong));
  EXPECT_EQ(futures[9].get().value(), 9u);
  const auto requests = broker.requests(wire::Body::Publish);
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[2].Sequences(), (std::vector<uint64_t>{9, 10}));
}

TEST(AsyncPublisherTest, LingerSendsAPartialBatchWithoutFlush) {
  SequencingLeader leader;
  FakeBroker broker(leader.Handler());
  AsyncPublisherOptions async;
  async.linger = milliseconds{20};
  AsyncPublisher publisher(Options({broker.endpoint()}), async);
  auto futures = PublishMany(publisher, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(futures[i].get().value(), static_cast<uint64_t>(i));
}

TEST(AsyncPublisherTest, FullWindowFailsAtOnceInFailMode) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  AsyncPublisherOptions async = NoLinger();
  async.window_messages_max = 3;
  async.when_full = AsyncPublisherOptions::WhenFull::kFail;
  AsyncPublisher publisher(Options({silent.endpoint()}), async);
  auto futures = PublishMany(publisher, 3);
  std::future<Result<uint64_t>> fourth = publisher.Publish("m3");
  ASSERT_EQ(fourth.wait_for(milliseconds{0}), std::future_status::ready);
  Result<uint64_t> r = fourth.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kBackpressure);
  EXPECT_NE(r.error().message.find("window"), std::string::npos) << r.error().message;
  // The callback form refuses the same way and never calls the callback.
  bool called = false;
  std::optional<Error> refused = publisher.Publish("m3", "", [&](const Result<uint64_t>&) {
    called = true;
  });
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code, ErrorCode::kBackpressure);
  // A bytes window counts too.
  AsyncPublisherOptions bytes = NoLinger();
  bytes.window_bytes_max = 10;
  bytes.when_full = AsyncPublisherOptions::WhenFull::kFail;
  AsyncPublisher by_bytes(Options({silent.endpoint()}), bytes);
  auto first = by_bytes.Publish("123456");
  EXPECT_EQ(by_bytes.Publish("123456").get().error().code, ErrorCode::kBackpressure);
  ASSERT_TRUE(publisher.Close(milliseconds{0}));
  ASSERT_TRUE(by_bytes.Close(milliseconds{0}));
  EXPECT_FALSE(called);
}

TEST(AsyncPublisherTest, FullWindowBlocksUntilRoomInBlockMode) {
  SequencingLeader leader;
  FakeBroker broker(leader.Handler());
  AsyncPublisherOptions async;
  async.linger = milliseconds{0};
  async.window_messages_max = 2;
  AsyncPublisher publisher(Options({broker.endpoint()}), async);
  std::atomic<int> acked{0};
  for (int i = 0; i < 200; ++i) {
    const std::optional<Error> refused =
        publisher.Publish("m" + std::to_string(i), "", [&](const Result<uint64_t>& r) {
          if (r.ok()) ++acked;
        });
    ASSERT_FALSE(refused) << refused->message;
  }
  ASSERT_FALSE(publisher.Flush(kLong));
  EXPECT_EQ(acked, 200);
  EXPECT_EQ(leader.log(), Payloads(200));
  for (const Request& request : broker.requests(wire::Body::Publish)) {
    EXPECT_LE(request.messages.size(), 2u);  // the window bounds what is in flight
  }
}

TEST(AsyncPublisherTest, BlockModeGivesUpAfterCallTimeout) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  AsyncPublisherOptions async = NoLinger();
  async.window_messages_max = 1;
  AsyncPublisher publisher(Options({silent.endpoint()}, milliseconds{200}), async);
  auto first = publisher.Publish("a");
  Result<uint64_t> second = publisher.Publish("b").get();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kBackpressure);
  EXPECT_NE(second.error().message.find("call_timeout"), std::string::npos);
}

TEST(AsyncPublisherTest, LostRepliesAreRetriedWithTheSameSequencesAndNeverDuplicated) {
  SequencingLeader leader;
  // The first two requests are stored but their replies are lost: the
  // client times out and resends from a fresh socket.
  leader.drop_reply = [](int n) { return n < 2; };
  FakeBroker broker(leader.Handler());
  // Listed twice: a timeout moves to the "next" broker, the same one.
  AsyncPublisher publisher(Options({broker.endpoint(), broker.endpoint()}), NoLinger(10));
  auto futures = PublishMany(publisher, 50);
  ASSERT_FALSE(publisher.Flush(kLong));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(futures[i].get().value(), static_cast<uint64_t>(i));
  EXPECT_EQ(leader.log(), Payloads(50));  // stored once each, in order
  EXPECT_GT(leader.duplicates(), 0);     // the retries did happen
}

TEST(AsyncPublisherTest, NotLeaderMovesEverythingToTheLeaderOnce) {
  SequencingLeader leader;
  FakeBroker leader_broker(leader.Handler());
  FakeBroker follower([&](const Request& request, FakeBroker& broker) {
    broker.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::NotLeader,
                                    "not the leader", leader_broker.endpoint()));
  });
  AsyncPublisher publisher(Options({follower.endpoint()}), NoLinger(5));
  auto futures = PublishMany(publisher, 40);
  ASSERT_FALSE(publisher.Flush(kLong));
  for (int i = 0; i < 40; ++i) EXPECT_EQ(futures[i].get().value(), static_cast<uint64_t>(i));
  EXPECT_EQ(leader.log(), Payloads(40));
  EXPECT_EQ(leader.duplicates(), 0);
  EXPECT_GE(follower.requests().size(), 1u);
}

TEST(AsyncPublisherTest, BusyAndOutOfSequenceInThePipelineAreResentInOrder) {
  SequencingLeader leader;
  // The second request is refused Busy: the ones pipelined behind it are
  // then out of sequence, and everything from it is resent.
  leader.refuse = [](const Request& request, int n) {
    return n == 1 ? ErrorFrame(request.request_id, wire::ErrorCode::Busy, "queue full")
                  : std::string();
  };
  FakeBroker broker(leader.Handler());
  AsyncPublisher publisher(Options({broker.endpoint()}), NoLinger(3));
  auto futures = PublishMany(publisher, 30);
  ASSERT_FALSE(publisher.Flush(kLong));
  for (int i = 0; i < 30; ++i) EXPECT_EQ(futures[i].get().value(), static_cast<uint64_t>(i));
  EXPECT_EQ(leader.log(), Payloads(30));
}

TEST(AsyncPublisherTest, ARefusedRequestFailsItsMessagesAndTheRestAreRenumbered) {
  SequencingLeader leader;
  leader.refuse = RefuseRequestsHolding("m1");
  FakeBroker broker(leader.Handler());
  AsyncPublisher publisher(Options({broker.endpoint()}), NoLinger(1));
  auto futures = PublishMany(publisher, 4);
  ASSERT_FALSE(publisher.Flush(kLong));
  EXPECT_EQ(futures[0].get().value(), 0u);
  Result<uint64_t> refused = futures[1].get();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kRejected);
  EXPECT_NE(refused.error().message.find("message too large"), std::string::npos);
  EXPECT_EQ(futures[2].get().value(), 1u);
  EXPECT_EQ(futures[3].get().value(), 2u);
  EXPECT_EQ(leader.log(), (std::vector<std::string>{"m0", "m2", "m3"}));
  // The refused message's sequence was given to the next one: still contiguous.
  const auto requests = broker.requests(wire::Body::Publish);
  EXPECT_EQ(requests.back().Sequences(), (std::vector<uint64_t>{3}));
}

// protocol.md: a per-message code this client does not know means "outcome
// unknown": the message is resent with the same sequence, never failed. The
// Publisher has the same test.
TEST(AsyncPublisherTest, AnUnknownPerMessageCodeIsResentWithTheSameSequence) {
  std::atomic<int> publishes{0};
  FakeBroker broker([&](const Request& request, FakeBroker& b) {
    if (request.body != wire::Body::Publish) return;
    if (publishes++ == 0) {
      std::vector<ResultSpec> results;
      for (const Request::Message& m : request.messages) {
        results.push_back({m.sequence, 0, kUnknownCode});
      }
      b.Send(request, PublishReplyFrame(request.request_id, results));
    } else {
      b.Send(request, AckAll(request, 20 + request.messages.front().sequence - 1));
    }
  });
  AsyncPublisher publisher(Options({broker.endpoint()}), NoLinger());
  auto futures = PublishMany(publisher, 2);
  ASSERT_FALSE(publisher.Flush(kLong));
  ExpectOffsets(futures, 20);
  const auto requests = broker.requests(wire::Body::Publish);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].Sequences(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(requests[1].Sequences(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(requests[1].messages[1].payload, "m1");
}

// A refused request whose messages went unanswered before (so may be
// stored): those are resent alone, the others fail kRejected once the
// older ones are resolved, in publish order.
TEST(AsyncPublisherTest, ARefusalKeepsMessagesThatMayBeStored) {
  SequencingLeader leader;
  leader.drop_reply = [](int n) { return n == 0; };  // m0 is stored, its answer lost
  leader.refuse = RefuseRequestsHolding("m1");
  FakeBroker broker(leader.Handler());
  AsyncPublisher publisher(Options({broker.endpoint()}, milliseconds{10000}), NoLinger());
  std::mutex mutex;
  std::vector<std::string> order;
  auto record = [&](std::string name) {
    return [&, name](const Result<uint64_t>& r) {
      std::lock_guard lock(mutex);
      order.push_back(name + (r.ok() ? "=" + std::to_string(r.value())
                              : r.error().code == ErrorCode::kRejected ? " rejected"
                                                                       : " failed"));
    };
  };
  ASSERT_FALSE(publisher.Publish("m0", "", record("m0")));
  ASSERT_TRUE(publisher.Flush(kRequestTimeout / 2));  // m0 sent, its answer lost
  ASSERT_FALSE(publisher.Publish("m1", "", record("m1")));
  ASSERT_FALSE(publisher.Publish("m2", "", record("m2")));
  // Before, this resent [m0, m1, m2] forever: m0 might be stored, so no
  // sequence could be given back.
  ASSERT_FALSE(publisher.Flush(milliseconds{10000}));
  // The broker refuses a request as a whole: m2 shared m1's.
  EXPECT_EQ(order, (std::vector<std::string>{"m0=0", "m1 rejected", "m2 rejected"}));
  EXPECT_EQ(leader.log(), (std::vector<std::string>{"m0"}));
  // The next message takes m1's sequence.
  auto m3 = publisher.Publish("m3");
  ASSERT_FALSE(publisher.Flush(milliseconds{10000}));
  EXPECT_EQ(m3.get().value(), 1u);
  EXPECT_EQ(broker.requests(wire::Body::Publish).back().Sequences(), (std::vector<uint64_t>{2}));
}

TEST(AsyncPublisherTest, CloseResolvesWhatIsUnacknowledgedWithClosed) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  AsyncPublisher publisher(Options({silent.endpoint()}), NoLinger());
  auto futures = PublishMany(publisher, 3);
  const std::optional<Error> closed = publisher.Close(milliseconds{50});
  ASSERT_TRUE(closed);
  EXPECT_EQ(closed->code, ErrorCode::kTimeout);
  for (auto& f : futures) {
    Result<uint64_t> r = f.get();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kClosed);
    EXPECT_NE(r.error().message.find("may or may not be stored"), std::string::npos);
  }
  EXPECT_EQ(publisher.Publish("late").get().error().code, ErrorCode::kClosed);
  EXPECT_FALSE(publisher.Close(milliseconds{0}));  // idempotent
}

TEST(AsyncPublisherTest, DestructorResolvesPendingFuturesWithinCallTimeout) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  std::vector<std::future<Result<uint64_t>>> futures;
  {
    AsyncPublisher publisher(Options({silent.endpoint()}, milliseconds{100}), NoLinger());
    futures = PublishMany(publisher, 2);
  }
  for (auto& f : futures) EXPECT_EQ(f.get().error().code, ErrorCode::kClosed);
}

TEST(AsyncPublisherTest, FlushTimesOutAndKeepsTheMessages) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  AsyncPublisher publisher(Options({silent.endpoint()}), NoLinger());
  auto futures = PublishMany(publisher, 1);
  const std::optional<Error> flushed = publisher.Flush(milliseconds{50});
  ASSERT_TRUE(flushed);
  EXPECT_EQ(flushed->code, ErrorCode::kTimeout);
  EXPECT_EQ(futures[0].wait_for(milliseconds{0}), std::future_status::timeout);
  // Close (or the destructor) would otherwise wait call_timeout for it.
  ASSERT_TRUE(publisher.Close(milliseconds{0}));
  EXPECT_EQ(futures[0].get().error().code, ErrorCode::kClosed);
}

TEST(AsyncPublisherTest, BadInputIsRefusedAndChangesNothing) {
  AsyncPublisher no_brokers(Options({}));
  EXPECT_EQ(no_brokers.Publish("x").get().error().code, ErrorCode::kInvalidArgument);
  AsyncPublisherOptions zero;
  zero.window_messages_max = 0;
  AsyncPublisher bad(Options({"127.0.0.1:1"}), zero);
  EXPECT_EQ(bad.Publish("x").get().error().code, ErrorCode::kInvalidArgument);

  SequencingLeader leader;
  FakeBroker broker(leader.Handler());
  AsyncPublisherOptions small = NoLinger();
  small.message_bytes_max = 4;
  AsyncPublisher publisher(Options({broker.endpoint()}), small);
  Result<uint64_t> big = publisher.Publish("12345").get();
  EXPECT_EQ(big.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(big.error().message.find("message_bytes_max"), std::string::npos);
  auto fits = publisher.Publish("1234");
  ASSERT_FALSE(publisher.Flush(kLong));
  EXPECT_EQ(fits.get().value(), 0u);  // the refused message took no sequence
  EXPECT_EQ(broker.requests(wire::Body::Publish).at(0).Sequences(), (std::vector<uint64_t>{1}));
}

}  // namespace
}  // namespace ordo
