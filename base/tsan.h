// Happens-before edges ThreadSanitizer cannot see for itself.
//
// libzmq is not built with TSan, so a message handed from one of our
// threads to another through an inproc socket carries no synchronisation
// TSan knows of: the reader's first look at a buffer the writer filled
// (a zero-copy frame) would be reported as a race. The sender calls
// OrdoTsanRelease(token) before sending, the receiver OrdoTsanAcquire(token)
// after receiving, on the same token (the address of the pair's owner).
// Outside a TSan build both are nothing.
#pragma once

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
inline void OrdoTsanRelease(const void* token) { __tsan_release(const_cast<void*>(token)); }
inline void OrdoTsanAcquire(const void* token) { __tsan_acquire(const_cast<void*>(token)); }
#else
inline void OrdoTsanRelease(const void*) {}
inline void OrdoTsanAcquire(const void*) {}
#endif
