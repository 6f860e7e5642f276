use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key lets its holder do. A master key is accepted wherever a read
/// or write key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Master,
    Read,
    Write,
}

impl KeyKind {
    pub fn grants(self, required: KeyKind) -> bool {
        self == required || self == KeyKind::Master
    }

    pub fn parameter_name(self) -> &'static str {
        match self {
            Self::Master => "master_key",
            Self::Read => "read_key",
            Self::Write => "write_key",
        }
    }
}

/// A new key triple, shown to the client once; only hashes are stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectKeys {
    pub master_key: String,
    pub read_key: String,
    pub write_key: String,
}

impl ProjectKeys {
    /// Three independent keys of 192 random bits each.
    pub fn generate() -> Self {
        Self {
            master_key: random_key(),
            read_key: random_key(),
            write_key: random_key(),
        }
    }

    pub fn hashed(&self) -> [(String, KeyKind); 3] {
        [
            (hash_key(&self.master_key), KeyKind::Master),
            (hash_key(&self.read_key), KeyKind::Read),
            (hash_key(&self.write_key), KeyKind::Write),
        ]
    }
}

/// 192 random bits as hex: keys, and the passwords of per-project roles.
pub fn random_key() -> String {
    let mut bytes = [0_u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Keys carry 192 bits of entropy, so a fast unsalted hash is enough to make
/// a stolen catalog useless; a slow password hash would only cost latency.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_long() {
        let first = ProjectKeys::generate();
        let second = ProjectKeys::generate();
        assert_ne!(first, second);
        assert_ne!(first.master_key, first.read_key);
        assert_eq!(first.master_key.len(), 48);
        assert_ne!(hash_key(&first.read_key), first.read_key);
    }

    #[test]
    fn master_grants_everything() {
        assert!(KeyKind::Master.grants(KeyKind::Read));
        assert!(KeyKind::Master.grants(KeyKind::Write));
        assert!(!KeyKind::Read.grants(KeyKind::Write));
        assert!(!KeyKind::Write.grants(KeyKind::Read));
        assert!(!KeyKind::Read.grants(KeyKind::Master));
    }
}
