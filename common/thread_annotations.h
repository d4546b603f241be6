// Clang's thread-safety annotations (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html) as
// macros: with Clang they are attributes that `-Wthread-safety` checks at compile time
// (scripts/check_thread_safety.sh runs that over coordinator/ and worker/); with GCC they expand
// to nothing. Use them with flap::Mutex (common/mutex.h):
//
//   mutable Mutex mu_;
//   int count_ GUARDED_BY(mu_) = 0;      // read or written only with mu_ held
//   void BumpLocked() REQUIRES(mu_);     // callers hold mu_
//   void Flush() EXCLUDES(mu_);          // takes mu_ itself: callers must not hold it
//   [&]() REQUIRES(mu_) { ... }          // a lambda called with mu_ held (checked at the call)
//
// gRPC's headers bring in Abseil's unprefixed legacy macros (absl/base/internal/
// thread_annotations.h), so GUARDED_BY, PT_GUARDED_BY and NO_THREAD_SAFETY_ANALYSIS are defined
// here with exactly Abseil's replacement text, and each macro only where it is not defined yet:
// whichever header comes first, both define the same thing and neither warns.
//
// Header-only, no dependencies.
#pragma once

#ifndef THREAD_ANNOTATION_ATTRIBUTE__
#if defined(__clang__)
#define THREAD_ANNOTATION_ATTRIBUTE__(x) __attribute__((x))
#else
#define THREAD_ANNOTATION_ATTRIBUTE__(x)  // no-op
#endif
#endif

// A type that is a lock (flap::Mutex); x names the kind in messages ("mutex").
#ifndef CAPABILITY
#define CAPABILITY(x) THREAD_ANNOTATION_ATTRIBUTE__(capability(x))
#endif
// An RAII type that holds a lock for its lifetime (flap::MutexLock).
#ifndef SCOPED_CAPABILITY
#define SCOPED_CAPABILITY THREAD_ANNOTATION_ATTRIBUTE__(scoped_lockable)
#endif
// A member (or global) read or written only with lock x held.
#ifndef GUARDED_BY
#define GUARDED_BY(x) THREAD_ANNOTATION_ATTRIBUTE__(guarded_by(x))
#endif
// A pointer whose pointee is read or written only with lock x held.
#ifndef PT_GUARDED_BY
#define PT_GUARDED_BY(x) THREAD_ANNOTATION_ATTRIBUTE__(pt_guarded_by(x))
#endif
// A function (or lambda) whose callers hold the locks, exclusively.
#ifndef REQUIRES
#define REQUIRES(...) THREAD_ANNOTATION_ATTRIBUTE__(requires_capability(__VA_ARGS__))
#endif
// A function whose callers must not hold the locks (it takes them itself).
#ifndef EXCLUDES
#define EXCLUDES(...) THREAD_ANNOTATION_ATTRIBUTE__(locks_excluded(__VA_ARGS__))
#endif
// A function that takes the locks (no argument in a member of a lock type: the object itself).
#ifndef ACQUIRE
#define ACQUIRE(...) THREAD_ANNOTATION_ATTRIBUTE__(acquire_capability(__VA_ARGS__))
#endif
// A function that releases the locks.
#ifndef RELEASE
#define RELEASE(...) THREAD_ANNOTATION_ATTRIBUTE__(release_capability(__VA_ARGS__))
#endif
// A function that takes the locks when it returns `result`.
#ifndef TRY_ACQUIRE
#define TRY_ACQUIRE(...) THREAD_ANNOTATION_ATTRIBUTE__(try_acquire_capability(__VA_ARGS__))
#endif
// A function that returns (a reference to) lock x.
#ifndef RETURN_CAPABILITY
#define RETURN_CAPABILITY(x) THREAD_ANNOTATION_ATTRIBUTE__(lock_returned(x))
#endif
// Turns the analysis off in one function, for locking it cannot follow; say why beside it.
#ifndef NO_THREAD_SAFETY_ANALYSIS
#define NO_THREAD_SAFETY_ANALYSIS THREAD_ANNOTATION_ATTRIBUTE__(no_thread_safety_analysis)
#endif
