// Implementation of coordinator/address_file.h.
#include "coordinator/address_file.h"

#include "common/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace flap::coordinator {

std::string AdvertisedAddress(const std::string& listen, int port) {
  const size_t colon = listen.rfind(':');
  const std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::" || host == "[::0]" || host == "*") {
    char name[256] = {0};
    const bool named = gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0';
    return std::string(named ? name : "localhost") + ":" + std::to_string(port);
  }
  return host + ":" + std::to_string(port);
}

Status WriteAddressFile(const std::string& path, const std::string& address) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) return Status::IOError("address file " + path + ": cannot create " + parent.string() + ": " + ec.message());
  Status s = flap::WriteFileAtomic(path, address + "\n");
  if (!s.ok()) return Status::IOError("address file " + path + ": cannot write it: " + s.message());
  return Status::OK();
}

void RemoveAddressFile(const std::string& path, const std::string& address) {
  std::ifstream in(path);
  std::string found;
  if (in >> found && found == address) {
    in.close();
    std::remove(path.c_str());
  }
}

}  // namespace flap::coordinator
