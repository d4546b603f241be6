// Test support for full-disk tests: a size-limited tmpfs mounted on a fresh folder for the life
// of the object (needs root or CAP_SYS_ADMIN; tests skip with why() where it cannot be mounted),
// and a filler that leaves a given amount of free space on it.
#pragma once

#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

namespace flap::testing {

class TmpfsMount {
 public:
  TmpfsMount(const std::string& dir, uint64_t bytes) : path_(dir) {
    std::error_code ec;
    std::filesystem::create_directories(path_, ec);
    if (ec) {
      why_ = "cannot create " + path_ + ": " + ec.message();
      return;
    }
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0755";
    if (::mount("tmpfs", path_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      why_ = "cannot mount a " + std::to_string(bytes) + "-byte tmpfs on " + path_ + " (" + std::strerror(errno) +
             "): needs root or CAP_SYS_ADMIN";
      return;
    }
    mounted_ = true;
  }
  ~TmpfsMount() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& why() const { return why_; }
  const std::string& path() const { return path_; }

  // Bytes free for files.
  uint64_t Free() const {
    struct statvfs st;
    if (::statvfs(path_.c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }

  // Writes `name` so that about `leave` bytes stay free (fewer if less is free now).
  void Fill(const std::string& name, uint64_t leave) const {
    const uint64_t free = Free();
    const uint64_t size = free > leave ? free - leave : 0;
    std::ofstream out(path_ + "/" + name, std::ios::binary | std::ios::trunc);
    const std::string chunk(1 << 16, 'f');
    for (uint64_t done = 0; done < size && out;) {
      const uint64_t n = std::min<uint64_t>(chunk.size(), size - done);
      out.write(chunk.data(), static_cast<std::streamsize>(n));
      done += n;
    }
  }

 private:
  std::string path_;
  std::string why_;
  bool mounted_ = false;
};

}  // namespace flap::testing
