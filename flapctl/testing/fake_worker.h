// Test support (not part of flapctl): a stand-in for flap-worker, for `flapctl sweep best
// --export`. A shell script that appends its arguments (one per line) to a calls file and then,
// exiting 0, makes its --out folder holding "args" (its arguments on one line), copies of the
// --config and --card-extra files flapctl gave it ("config.ini", "card.json") and "paths" (the
// paths of those two files); exiting non-zero, it prints "no model.pt there" to stderr and makes
// nothing.
#pragma once

#include <sys/stat.h>

#include <string>

#include "tests/test_util.h"

namespace flap::flapctl::testing {

// Writes the script to `path` (mode 0755), recording calls in `calls`, exiting `status`; false
// when it cannot be written.
inline bool WriteFakeWorker(const std::string& path, const std::string& calls, int status) {
  const std::string code = std::to_string(status);
  const bool written = flap::testing::WriteFile(
      path, "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '" + calls +
                "'\n"
                "if [ " +
                code + " != 0 ]; then echo 'no model.pt there' >&2; exit " + code +
                "; fi\n"
                "args=\"$*\"\n"
                "while [ $# -gt 0 ]; do case \"$1\" in --out) out=$2;; --config) cfg=$2;; "
                "--card-extra) card=$2;; esac; shift; done\n"
                "mkdir \"$out\" && echo \"$args\" > \"$out/args\" && cp \"$cfg\" \"$out/config.ini\" && "
                "cp \"$card\" \"$out/card.json\" && echo \"$cfg $card\" > \"$out/paths\"\n");
  return written && ::chmod(path.c_str(), 0755) == 0;
}

}  // namespace flap::flapctl::testing
