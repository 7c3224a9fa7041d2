// agent/session.hpp — opening the vault and catalog a command needs.
#pragma once

#include <memory>
#include <string>

#include "agent/config.hpp"
#include "vault/catalog.hpp"
#include "vault/repository.hpp"

namespace reduit {

/// Opens the configured vault with the keyring `gnupghome` (empty = the config's).
/// The vault config is taken from the catalog when its stored bytes are unchanged
/// (one small read, no decryption), else decrypted and cached.
std::unique_ptr<Repository> open_repository(const Config& cfg, Catalog* catalog,
                                            const std::string& gnupghome_override = "");

}  // namespace reduit
