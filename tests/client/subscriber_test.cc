// Subscriber against a scripted fake broker: docs/protocol.md, "Subscribing".

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ordo/client.h"
#include "tests/client/fake_broker.h"

namespace ordo {
namespace {

using std::chrono::milliseconds;
using testing::DeliverFrame;
using testing::DeliverRange;
using testing::ErrorFrame;
using testing::FakeBroker;
using testing::Request;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kRequestTimeout{150};
// Long enough for any record that is coming; Next returns as soon as one is.
constexpr milliseconds kWait{3000};
// For "nothing more arrives".
constexpr milliseconds kQuiet{100};

ClientOptions Options(std::vector<std::string> brokers) {
  ClientOptions options;
  options.brokers = std::move(brokers);
  options.request_timeout = kRequestTimeout;
  options.call_timeout = milliseconds{3000};
  return options;
}

// The subscriber's ping is a Fetch of no messages; the answer, an empty
// Deliver, carries the head.
void AnswerPing(const Request& request, FakeBroker& broker, uint64_t head) {
  broker.Send(request, DeliverFrame(request.request_id, {}, head));
}

// A well-behaved broker holding records [0, head) of the test stream: pushes
// what the subscription's credit allows, `per_frame` records a frame.
class StreamServer {
 public:
  StreamServer(uint64_t head, uint64_t per_frame) : head_(head), per_frame_(per_frame) {}

  FakeBroker::Handler Handler() {
    return [this](const Request& request, FakeBroker& broker) { Serve(request, broker); };
  }
  // Read after the broker is destroyed (its thread joined).
  int credits_for_other_ids() const { return credits_for_other_ids_; }

 private:
  void Serve(const Request& request, FakeBroker& broker) {
    switch (request.body) {
      case wire::Body::Subscribe:
        subscription_id_ = request.request_id;
        cursor_ = request.from_latest ? head_ : request.from_offset;
        credit_left_ = request.credit;
        break;
      case wire::Body::Credit:
        if (request.request_id != subscription_id_) {
          ++credits_for_other_ids_;
          return;
        }
        credit_left_ += request.credit;
        break;
      case wire::Body::Fetch:
        AnswerPing(request, broker, head_);
        return;
      default:
        return;
    }
    while (credit_left_ > 0 && cursor_ < head_) {
      const uint64_t n = std::min({per_frame_, uint64_t{credit_left_}, head_ - cursor_});
      broker.Send(request, DeliverRange(subscription_id_, cursor_, cursor_ + n, head_));
      cursor_ += n;
      credit_left_ -= static_cast<uint32_t>(n);
    }
  }

  const uint64_t head_;
  const uint64_t per_frame_;
  uint64_t subscription_id_ = 0;
  uint64_t cursor_ = 0;
  uint32_t credit_left_ = 0;
  int credits_for_other_ids_ = 0;
};

// Reads `count` records and checks they are the test stream from `first`.
void ExpectRecords(Subscriber& subscriber, uint64_t first, uint64_t count) {
  for (uint64_t offset = first; offset < first + count; ++offset) {
    EXPECT_EQ(subscriber.next_offset(), offset);
    Result<std::optional<Record>> next = subscriber.Next(kWait);
    ASSERT_TRUE(next.ok()) << next.error().message;
    ASSERT_TRUE(next.value().has_value()) << "no record at offset " << offset;
    const Record& record = *next.value();
    EXPECT_EQ(record.offset, offset);
    EXPECT_EQ(record.producer, 7u);
    EXPECT_EQ(record.sequence, offset + 1);
    EXPECT_EQ(record.key, "k" + std::to_string(offset));
    EXPECT_EQ(record.payload, "m" + std::to_string(offset));
  }
}

void ExpectNothingMore(Subscriber& subscriber) {
  Result<std::optional<Record>> next = subscriber.Next(kQuiet);
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_FALSE(next.value().has_value()) << "unexpected record " << next.value()->offset;
}

TEST(SubscriberTest, ReadsInOrderFromTheStartOffset) {
  StreamServer stream(10, 3);
  FakeBroker broker(stream.Handler());
  Subscriber subscriber(Options({broker.endpoint()}), StartAt::Offset(3), 100);
  ExpectRecords(subscriber, 3, 7);
  ExpectNothingMore(subscriber);
  const std::vector<Request> subscribes = broker.requests(wire::Body::Subscribe);
  ASSERT_EQ(subscribes.size(), 1u);
  EXPECT_EQ(subscribes[0].from_offset, 3u);
  EXPECT_FALSE(subscribes[0].from_latest);
  EXPECT_EQ(subscribes[0].credit, 100u);
}

TEST(SubscriberTest, AGapResubscribesFromTheExpectedOffset) {
  std::atomic<int> subscribes{0};
  uint64_t first_subscription = 0;  // touched by the broker thread only
  FakeBroker broker([&](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::Fetch) return AnswerPing(request, b, 5);
    if (request.body != wire::Body::Subscribe) return;
    if (subscribes++ == 0) {
      first_subscription = request.request_id;
      b.Send(request, DeliverRange(request.request_id, 0, 2, 5));
      b.Send(request, DeliverRange(request.request_id, 3, 5, 5));  // offset 2 was lost
    } else {
      // A late frame of the replaced subscription: ignored, though its
      // offsets would fit.
      b.Send(request, DeliverRange(first_subscription, 5, 7, 7));
      b.Send(request, DeliverRange(request.request_id, 2, 5, 5));
    }
  });
  Subscriber subscriber(Options({broker.endpoint()}), StartAt::Earliest(), 100);
  ExpectRecords(subscriber, 0, 5);
  ExpectNothingMore(subscriber);
  const std::vector<Request> requests = broker.requests(wire::Body::Subscribe);
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].from_offset, 0u);
  EXPECT_EQ(requests[1].from_offset, 2u);
}

// A damaged broker serving offsets below the ones asked for (a flipped bit in
// its index, say) is a broken stream: given up, never read as duplicates.
// Another broker serves from where the good records ended.
TEST(SubscriberTest, AnOffsetBelowTheExpectedOneIsABrokenStreamAndAnotherBrokerServes) {
  FakeBroker broken([](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::Fetch) return AnswerPing(request, b, 6);
    if (request.body != wire::Body::Subscribe) return;
    // 0..2 are right; then records that claim offsets 1.. again, with other
    // payloads: never returned.
    b.Send(request, DeliverRange(request.request_id, request.from_offset, 3, 6));
    b.Send(request, DeliverFrame(request.request_id, {{1, 7, 99, "", "wrong"}}, 6));
  });
  StreamServer stream(6, 6);
  FakeBroker healthy(stream.Handler());
  // Only the broken broker first (the list order is shuffled).
  Subscriber subscriber(Options({broken.endpoint()}), StartAt::Earliest(), 100);
  ExpectRecords(subscriber, 0, 3);
  Result<std::optional<Record>> next = subscriber.Next(kWait);
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.error().code, ErrorCode::kProtocol);
  EXPECT_NE(next.error().message.find("broken stream"), std::string::npos) << next.error().message;
  EXPECT_EQ(subscriber.next_offset(), 3u);

  Subscriber both(Options({broken.endpoint(), healthy.endpoint()}), StartAt::Earliest(), 100);
  for (uint64_t offset = 0; offset < 6;) {
    Result<std::optional<Record>> r = both.Next(kWait);
    ASSERT_TRUE(r.ok()) << r.error().message;  // one broken broker of two: it fails over
    ASSERT_TRUE(r.value().has_value());
    EXPECT_EQ(r.value()->offset, offset);
    EXPECT_EQ(r.value()->payload, "m" + std::to_string(offset));
    ++offset;
  }
}

TEST(SubscriberTest, CreditIsReplenishedAsRecordsAreConsumed) {
  constexpr uint32_t kCredit = 4;
  constexpr uint64_t kRecords = 25;
  StreamServer stream(kRecords, 1);
  int credits_for_other_ids = 0;
  std::vector<Request> credits;
  std::vector<Request> subscribes;
  {
    FakeBroker broker(stream.Handler());
    Subscriber subscriber(Options({broker.endpoint()}), StartAt::Earliest(), kCredit);
    // Without Credit the stream would stop after 4 records.
    ExpectRecords(subscriber, 0, kRecords);
    ExpectNothingMore(subscriber);
    credits = broker.requests(wire::Body::Credit);
    subscribes = broker.requests(wire::Body::Subscribe);
  }
  credits_for_other_ids = stream.credits_for_other_ids();
  ASSERT_EQ(subscribes.size(), 1u);
  EXPECT_EQ(subscribes[0].credit, kCredit);
  EXPECT_EQ(credits_for_other_ids, 0);
  ASSERT_FALSE(credits.empty());
  uint64_t granted = subscribes[0].credit;
  for (const Request& credit : credits) {
    // Granted in steps of at least half the window, never beyond it.
    EXPECT_GE(credit.credit, kCredit / 2);
    EXPECT_LE(credit.credit, kCredit);
    EXPECT_EQ(credit.request_id, subscribes[0].request_id);
    granted += credit.credit;
  }
  // Everything was consumed: what the broker may still push is at most the
  // window.
  EXPECT_GE(granted, kRecords);
  EXPECT_LE(granted, kRecords + kCredit);
}

TEST(SubscriberTest, OffsetBelowRetainedSurfacesTheEarliestOffset) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::Fetch) return AnswerPing(request, b, 50);
    if (request.body == wire::Body::Subscribe) {
      b.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::OffsetBelowRetained,
                                 "compacted", "", 10));
    }
  });
  Subscriber subscriber(Options({broker.endpoint()}), StartAt::Offset(3));
  Result<std::optional<Record>> next = subscriber.Next(kWait);
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.error().code, ErrorCode::kOffsetBelowRetained);
  EXPECT_EQ(next.error().earliest_offset, 10u);
  EXPECT_NE(next.error().message.find("10"), std::string::npos);
  EXPECT_EQ(subscriber.next_offset(), 3u);
}

TEST(SubscriberTest, LatestStartsAtTheFirstDeliveredRecord) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::Fetch) return AnswerPing(request, b, 44);
    if (request.body == wire::Body::Subscribe && request.from_latest) {
      b.Send(request, DeliverRange(request.request_id, 42, 44, 44));
    }
  });
  Subscriber subscriber(Options({broker.endpoint()}), StartAt::Latest());
  EXPECT_EQ(subscriber.next_offset(), 0u);  // not known yet
  Result<std::optional<Record>> next = subscriber.Next(kWait);
  ASSERT_TRUE(next.ok()) << next.error().message;
  ASSERT_TRUE(next.value().has_value());
  EXPECT_EQ(next.value()->offset, 42u);
  EXPECT_EQ(subscriber.next_offset(), 43u);
  ExpectRecords(subscriber, 43, 1);
  EXPECT_EQ(subscriber.next_offset(), 44u);
}

TEST(SubscriberTest, FailsOverWhenItsBrokerStopsAnswering) {
  // Whichever broker gets the first Subscribe serves records 0 and 1, then
  // goes silent; the other serves the whole stream.
  std::atomic<int> first{-1};
  auto handler = [&](int index) {
    return [&, index](const Request& request, FakeBroker& b) {
      int expected = -1;
      if (request.body == wire::Body::Subscribe) first.compare_exchange_strong(expected, index);
      if (first == index) {
        if (request.body == wire::Body::Subscribe && request.from_offset == 0 &&
            b.requests(wire::Body::Subscribe).size() == 1) {
          b.Send(request, DeliverRange(request.request_id, 0, 2, 4));
        }
        return;
      }
      if (request.body == wire::Body::Fetch) return AnswerPing(request, b, 4);
      if (request.body == wire::Body::Subscribe) {
        b.Send(request, DeliverRange(request.request_id, request.from_offset, 4, 4));
      }
    };
  };
  FakeBroker broker_a(handler(0));
  FakeBroker broker_b(handler(1));
  Subscriber subscriber(Options({broker_a.endpoint(), broker_b.endpoint()}), StartAt::Earliest());
  ExpectRecords(subscriber, 0, 4);
  FakeBroker& failed = first == 0 ? broker_a : broker_b;
  FakeBroker& healthy = first == 0 ? broker_b : broker_a;
  // The failed broker was pinged before being given up.
  EXPECT_FALSE(failed.requests(wire::Body::Fetch).empty());
  const std::vector<Request> resubscribes = healthy.requests(wire::Body::Subscribe);
  ASSERT_FALSE(resubscribes.empty());
  EXPECT_EQ(resubscribes[0].from_offset, 2u);
}

TEST(SubscriberTest, SilentBrokersAreReportedAndRetried) {
  FakeBroker broker([](const Request&, FakeBroker&) {});
  Subscriber subscriber(Options({broker.endpoint()}), StartAt::Offset(8));
  const Clock::time_point start = Clock::now();
  Result<std::optional<Record>> next = subscriber.Next(kWait);
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.error().code, ErrorCode::kTimeout);
  EXPECT_NE(next.error().message.find(broker.endpoint()), std::string::npos);
  EXPECT_LT(Clock::now() - start, kWait);
  // Still usable, still at its place.
  EXPECT_EQ(subscriber.next_offset(), 8u);
  Result<std::optional<Record>> again = subscriber.Next(milliseconds{50});
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_GE(broker.requests(wire::Body::Subscribe).size(), 2u);
}

TEST(SubscriberTest, AnAnswerQueuedWhileTheCallerWasAwayKeepsTheBroker) {
  // Records [0, 2), each pushed right after the answer to a ping: frames of
  // one connection arrive in order, so a returned record proves the answer
  // before it was read. The caller stays away longer than request_timeout
  // twice: the first time, the next call pings; the second time, that
  // ping's answer waits in the queue and must keep the broker. The second
  // answer is held back until the call that pinged has returned, so that
  // call cannot read it itself.
  std::atomic<int> pings_answered{0};
  std::atomic<bool> release_second{false};
  uint64_t subscription = 0;
  FakeBroker broker([&](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::Subscribe) subscription = request.request_id;
    if (request.body != wire::Body::Fetch) return;
    const int n = pings_answered.load();
    const auto deadline = Clock::now() + kWait;
    while (n == 1 && !release_second.load() && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds{1});
    }
    // The head as of the records pushed so far: an idle probe answered with
    // a head past ours would (rightly) resubscribe.
    AnswerPing(request, b, static_cast<uint64_t>(n));
    if (subscription != 0 && n < 2) {
      b.Send(request, DeliverRange(subscription, static_cast<uint64_t>(n), n + 1u, 2));
    }
    pings_answered.store(n + 1);
  });
  // Long enough that no descheduling of this thread looks like an absence.
  ClientOptions options = Options({broker.endpoint()});
  options.request_timeout = milliseconds{1000};
  const milliseconds away = options.request_timeout + milliseconds{100};
  Subscriber subscriber(options, StartAt::Earliest());
  ExpectRecords(subscriber, 0, 1);  // the Subscribe's ping was answered and read
  std::this_thread::sleep_for(away);
  // Idle for request_timeout: this call sends a ping and returns at once.
  Result<std::optional<Record>> idle = subscriber.Next(milliseconds{0});
  ASSERT_TRUE(idle.ok()) << idle.error().message;
  ASSERT_FALSE(idle.value().has_value());
  release_second = true;
  const auto deadline = Clock::now() + kWait;
  while (pings_answered.load() < 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds{1});
  }
  ASSERT_EQ(pings_answered.load(), 2);
  std::this_thread::sleep_for(away);
  // The ping's timeout has passed, but its answer is queued: no failover,
  // and the record behind the answer comes from the same subscription.
  Result<std::optional<Record>> next = subscriber.Next(milliseconds{0});
  ASSERT_TRUE(next.ok()) << next.error().message;
  ASSERT_TRUE(next.value().has_value());
  EXPECT_EQ(next.value()->offset, 1u);
  EXPECT_EQ(broker.requests(wire::Body::Subscribe).size(), 1u);
  EXPECT_EQ(broker.requests(wire::Body::Fetch).size(), 2u);
}

TEST(SubscriberTest, ResubscribesWhenAnIdleBrokerHasNewerRecords) {
  // The broker forgot the first subscription (as after a restart), but its
  // status shows records past ours.
  std::atomic<int> subscribes{0};
  FakeBroker broker([&](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::Fetch) return AnswerPing(request, b, 3);
    if (request.body == wire::Body::Subscribe && subscribes++ > 0) {
      b.Send(request, DeliverRange(request.request_id, request.from_offset, 3, 3));
    }
  });
  Subscriber subscriber(Options({broker.endpoint()}), StartAt::Earliest());
  ExpectRecords(subscriber, 0, 3);
  EXPECT_EQ(broker.requests(wire::Body::Subscribe).size(), 2u);
}

TEST(SubscriberTest, GarbageAndMutatedFramesAreIgnored) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    if (request.body == wire::Body::Fetch) return AnswerPing(request, b, 5);
    if (request.body != wire::Body::Subscribe) return;
    b.Send(request, "");
    b.Send(request, "not a flatbuffer at all");
    b.SendMultipart(request, {DeliverRange(request.request_id, 0, 5, 5), "x"});
    // Single-byte mutations of a valid Deliver addressed to another request
    // id (one byte cannot turn that id into the subscription's): whatever
    // passes the verifier must still be ignored, and nothing may crash.
    const std::string valid = DeliverRange(request.request_id + 1000, 0, 5, 5);
    std::mt19937 rng(12345);
    for (int i = 0; i < 2000; ++i) {
      std::string mutated = valid;
      mutated[rng() % mutated.size()] = static_cast<char>(rng());
      if (i % 7 == 0) mutated.resize(rng() % mutated.size());
      b.Send(request, mutated);
    }
    b.Send(request, DeliverRange(request.request_id, 0, 5, 5));
  });
  Subscriber subscriber(Options({broker.endpoint()}), StartAt::Earliest());
  ExpectRecords(subscriber, 0, 5);
  ExpectNothingMore(subscriber);
}

TEST(SubscriberTest, AnUnusableEndpointInTheListIsSkipped) {
  StreamServer stream(3, 3);
  FakeBroker broker(stream.Handler());
  Subscriber subscriber(Options({"no-port-here", broker.endpoint(), "also:bad:port"}),
                        StartAt::Earliest());
  ExpectRecords(subscriber, 0, 3);

  Subscriber only_bad(Options({"no-port-here"}), StartAt::Earliest());
  Result<std::optional<Record>> next = only_bad.Next(kWait);
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.error().code, ErrorCode::kTimeout);
  EXPECT_NE(next.error().message.find("no-port-here"), std::string::npos) << next.error().message;
}

TEST(SubscriberTest, InvalidArgumentsAreReported) {
  Subscriber no_brokers(Options({}), StartAt::Earliest());
  EXPECT_EQ(no_brokers.Next(kQuiet).error().code, ErrorCode::kInvalidArgument);
  Subscriber no_credit(Options({"127.0.0.1:1"}), StartAt::Earliest(), 0);
  EXPECT_EQ(no_credit.Next(kQuiet).error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace ordo
