// The coordinator's address file (flap-coordinator --address-file): once the server listens,
// it writes "host:port" there, so jobs started elsewhere (worker groups on other nodes, a
// batch script submitting the sweep) find it without knowing in advance where the coordinator
// runs or which port it was given (--listen HOST:0 picks a free one).
//
// The host written is one other machines can reach: for a wildcard listen host (0.0.0.0, [::],
// ::, or none) it is this machine's host name (gethostname), else the listen host as given.
// The file is replaced atomically (a temporary file beside it, then rename), so a reader sees
// either nothing, the previous address, or the whole new one.
//
// Thread-safety: free functions without shared state.
#pragma once

#include <string>

#include "common/status.h"

namespace flap::coordinator {

// "host:port" for a server listening on `listen` ("host:port", "[v6]:port" or ":port") that
// was given `port`; see the header comment for the host.
std::string AdvertisedAddress(const std::string& listen, int port);

// Writes "<address>\n" to `path` atomically, creating missing parent folders. IOError naming
// the path and the reason on failure (the temporary file is removed).
Status WriteAddressFile(const std::string& path, const std::string& address);

// Removes `path` if it still holds `address` (a newer coordinator may have replaced it); what
// it finds otherwise is left alone.
void RemoveAddressFile(const std::string& path, const std::string& address);

}  // namespace flap::coordinator
