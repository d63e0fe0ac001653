// CatchUpServer: serves fetches from a real LMDB store on its own thread;
// the frames it builds from stored records must decode to exactly what the
// store holds, within the reply limits, and never carry a corrupt record.
#include "broker/catchup_server.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "broker/codec.h"
#include "tests/testing/corrupt_lmdb.h"

namespace ordo::broker {
namespace {

using paxos::Ballot;
using paxos::Entry;
using paxos::Instance;
using paxos::NodeId;

struct Served {
  uint32_t to = 0;
  paxos::Message reply;
  std::vector<std::pair<Instance, std::string>> unreadable;
};

class CatchUpServerTest : public ::testing::Test {
 protected:
  CatchUpServerTest() {
    static std::mt19937_64 rng(std::random_device{}());
    dir_ = (std::filesystem::temp_directory_path() / ("ordo-catchup-test-" + std::to_string(rng())))
               .string();
    Open();
  }
  ~CatchUpServerTest() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Open() {
    store_.reset();
    const Status s = LmdbStore::Open(dir_, 64ull << 20, &store_);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  // Instances 1..n, chosen, each a batch of i messages of i * 100 bytes.
  void Fill(uint64_t n) {
    std::vector<Entry> entries;
    for (uint64_t i = 1; i <= n; ++i) {
      std::vector<paxos::ClientMessage> msgs;
      for (uint64_t k = 0; k < i; ++k) {
        msgs.push_back({paxos::ProducerId(7), i * 100 + k, "key" + std::to_string(k),
                        std::string(i * 100, static_cast<char>('a' + i))});
      }
      entries.push_back(Entry{Instance(i), ballot_, paxos::MakeBatch(ballot_, std::move(msgs))});
    }
    ASSERT_EQ(store_->Commit(paxos::HardState{ballot_, Instance(n)}, entries, {}),
              paxos::StoreCode::kOk);
  }
  static paxos::FetchToServe Fetch(uint64_t first, uint64_t last) {
    paxos::FetchToServe f;
    f.reply.type = paxos::MessageType::kFetchReply;
    f.reply.from = NodeId(2);
    f.reply.to = NodeId(3);
    f.reply.instance = Instance(first);
    f.reply.chosen = Instance(last);
    f.reply.first_retained = Instance(1);
    f.last = Instance(last);
    return f;
  }
  // Submits `fetch` and waits for the server's answer.
  Served Serve(CatchUpServer& server, paxos::FetchToServe fetch) {
    Served out;
    EXPECT_TRUE(server.Submit(std::move(fetch)));
    zmq::pollitem_t item{server.socket().handle(), 0, ZMQ_POLLIN, 0};
    bool got = false;
    for (int i = 0; i < 100 && !got; ++i) {
      zmq::poll(&item, 1, std::chrono::milliseconds(100));
      server.Drain(
          [&](uint32_t to, zmq::message_t frame) {
            out.to = to;
            const DecodeStatus d = DecodePeerMessage(
                {static_cast<const uint8_t*>(frame.data()), frame.size()}, 64 << 20, &out.reply);
            EXPECT_TRUE(d.ok()) << d.ToString();
            got = true;
          },
          [&](Instance instance, const std::string& what) {
            out.unreadable.push_back({instance, what});
          });
    }
    EXPECT_TRUE(got) << "no reply within 10 s";
    return out;
  }
  void ExpectAsStored(const paxos::Message& reply, uint64_t first, uint64_t last) {
    ASSERT_EQ(reply.entries.size(), last - first + 1);
    for (uint64_t i = first; i <= last; ++i) {
      const Entry& got = reply.entries[i - first];
      Entry want;
      ASSERT_EQ(store_->Get(Instance(i), &want), paxos::StoreCode::kOk);
      EXPECT_EQ(got.instance, Instance(i));
      EXPECT_EQ(got.ballot, want.ballot);
      ASSERT_EQ(got.value->messages.size(), want.value->messages.size());
      for (size_t k = 0; k < want.value->messages.size(); ++k) {
        EXPECT_EQ(got.value->messages[k].payload, want.value->messages[k].payload);
        EXPECT_EQ(got.value->messages[k].key, want.value->messages[k].key);
        EXPECT_EQ(got.value->messages[k].sequence, want.value->messages[k].sequence);
      }
    }
  }

  std::string dir_;
  std::unique_ptr<LmdbStore> store_;
  zmq::context_t context_{1};
  const Ballot ballot_{1, NodeId(1)};
};

TEST_F(CatchUpServerTest, ServesTheStoredEntriesWithTheCoresHeaderWithinTheLimits) {
  Fill(6);
  CatchUpServer server(context_, *store_, {.entries_max = 3, .bytes_max = 1 << 20});
  ASSERT_TRUE(server.Start().ok());
  Served s = Serve(server, Fetch(2, 6));
  EXPECT_EQ(s.to, 3u);
  EXPECT_EQ(s.reply.type, paxos::MessageType::kFetchReply);
  EXPECT_EQ(s.reply.from, NodeId(2));
  EXPECT_EQ(s.reply.instance, Instance(2));
  EXPECT_EQ(s.reply.chosen, Instance(6));
  EXPECT_TRUE(s.unreadable.empty());
  ExpectAsStored(s.reply, 2, 4);  // 3 entries at most

  // The byte limit: at least one entry, and none after the limit is reached.
  CatchUpServer small(context_, *store_, {.entries_max = 100, .bytes_max = 1});
  ASSERT_TRUE(small.Start().ok());
  s = Serve(small, Fetch(5, 6));
  ExpectAsStored(s.reply, 5, 5);
  // Past what is stored (truncated meanwhile): the header alone.
  s = Serve(server, Fetch(7, 9));
  EXPECT_TRUE(s.reply.entries.empty());
  EXPECT_EQ(s.reply.instance, Instance(7));
}

TEST_F(CatchUpServerTest, NeverServesACorruptRecordAndReportsIt) {
  Fill(3);
  store_.reset();
  testing::FlipBitOnDisk(dir_, 2);
  Open();
  CatchUpServer server(context_, *store_, {});
  ASSERT_TRUE(server.Start().ok());
  Served s = Serve(server, Fetch(1, 3));
  ExpectAsStored(s.reply, 1, 1);  // what comes before it, nothing after
  ASSERT_EQ(s.unreadable.size(), 1u);
  EXPECT_EQ(s.unreadable[0].first, Instance(2));
  EXPECT_NE(s.unreadable[0].second.find("instance 2"), std::string::npos) << s.unreadable[0].second;
}

TEST_F(CatchUpServerTest, AFullQueueDropsTheFetch) {
  Fill(1);
  CatchUpServer server(context_, *store_, {.queued_max = 0});
  ASSERT_TRUE(server.Start().ok());
  EXPECT_FALSE(server.Submit(Fetch(1, 1)));
  EXPECT_EQ(server.dropped(), 1u);
}

}  // namespace
}  // namespace ordo::broker
