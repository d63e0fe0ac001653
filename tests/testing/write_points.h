// Test helper: a crash, a torn write or a power loss at one chosen write
// point of real files. Linking write_points.cc into a test executable
// defines write, pwrite, pwrite64, writev, pwritev, fsync, fdatasync,
// ftruncate and msync in it; every library the program loads (liblmdb
// calls libc through its PLT) then calls these, which forward to libc's
// (dlsym RTLD_NEXT). They do nothing else until ArmWritePoints, which a
// forked child calls: from then on each write to a regular file under the
// plan's directory is one write point (pipes, sockets, stdout are not),
// numbered from 1, and the fault strikes at point `at`.
//
// The power-loss model: each file's durable image is what its last fsync or
// fdatasync left, plus every write through an O_DSYNC/O_SYNC descriptor
// (LMDB's meta pages) and nothing else. At the crash the bytes written
// since are put back, and the file is cut back (or out) to its durable
// size (kPartialPowerLoss: some of it). Within a sector nothing tears, as
// the journal assumes (broker/journal.h). Creating and renaming files is
// taken as durable at once (the
// directory's own fsync is not modelled): the storage path fsyncs its
// directory after creating the journal and after renaming a snapshot file.
//
// Thread rules: one thread writes while armed (the child's workload).
#pragma once

#include <cstdint>
#include <string>

namespace ordo::testing {

enum class WriteFault : uint8_t {
  // Count the write points only (a dry run).
  kNone,
  // The process dies just before the write: every earlier write is in the
  // page cache, so the files hold all of them.
  kCrash,
  // The write lands halfway (the first half of its bytes), then the
  // process dies.
  kTornCrash,
  // The machine stops just before the write: every byte not made durable
  // (see above) is lost.
  kPowerLoss,
  // The same, but of the bytes not made durable each 512-byte sector
  // survives or is lost, and so does each file's new size, as the plan's
  // seed draws.
  kPartialPowerLoss,
};
const char* ToString(WriteFault fault);

struct WritePointPlan {
  std::string dir;  // only writes to regular files under it count
  WriteFault fault = WriteFault::kNone;
  uint64_t at = 0;     // the point (from 1) the fault strikes at; 0: none
  int exit_code = 86;  // the child's exit status when the fault strikes
  uint64_t seed = 0;   // kPartialPowerLoss: which sectors survive
};

// Arms the interposer in this process for good (call it in a forked child).
void ArmWritePoints(const WritePointPlan& plan);
// Write points counted so far.
uint64_t WritePointsSoFar();
// Calls the model does not follow (msync on any mapping): a dry run that
// sees one cannot vouch for its power-loss results.
uint64_t UnmodelledWriteCalls();
// Strikes the plan's fault now, as if at a write point past the last one:
// for a power loss the unsynced bytes are lost; then _exit(plan.exit_code).
[[noreturn]] void StrikeNow();

}  // namespace ordo::testing
