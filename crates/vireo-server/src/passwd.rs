//! The password file: one `user:hash` line per user, the hash an argon2id PHC string
//! (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), the layout `mosquitto_passwd` writes (with its
//! own hash). Read at start; written by `vireo passwd`.
//!
//! Hashing and checking are the `argon2` crate's (RustCrypto): the memory-hard KDF the
//! password-hashing competition chose, with the PHC string format that carries its parameters,
//! so a file keeps working when the defaults change.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Why a password file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// Reading or writing the file failed.
    #[error("password file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A line is not `user:argon2id-PHC-string`.
    #[error("password file {path}, line {line}: {why}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the hash itself).
        why: String,
    },
    /// A user name `vireo passwd` cannot store.
    #[error("user name {0:?} must be non-empty and contain no ':' or line break")]
    BadUser(String),
    /// Hashing failed (out of memory, bad parameters).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Users and their password hashes, in file order.
#[derive(Debug, Clone)]
pub struct PasswordFile {
    entries: Vec<(String, String)>,
    by_user: HashMap<String, usize>,
    /// Checked for unknown users, so that a wrong user name costs what a wrong password does
    /// and the timing does not tell which users exist.
    decoy: String,
}

impl PasswordFile {
    /// An empty file (what `vireo passwd` starts from when the file does not exist).
    pub fn empty() -> Result<Self, PasswdError> {
        Ok(Self {
            entries: Vec::new(),
            by_user: HashMap::new(),
            decoy: hash_password(b"vireo-decoy")?,
        })
    }

    /// Reads and checks a password file: every line must be `user:PHC` with an argon2 PHC
    /// string; blank lines and lines starting with `#` are skipped.
    pub fn load(path: &Path) -> Result<Self, PasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswdError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a password file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PasswdError> {
        let mut file = Self::empty()?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |why: &str| PasswdError::Syntax {
                path: path.to_owned(),
                line: i + 1,
                why: why.to_owned(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| syntax("expected user:hash"))?;
            if user.is_empty() {
                return Err(syntax("empty user name"));
            }
            let parsed =
                PasswordHash::new(hash).map_err(|_| syntax("the hash is not a PHC string"))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(syntax(
                    "the hash is not argon2 (make it with `vireo passwd`)",
                ));
            }
            if file.by_user.contains_key(user) {
                return Err(syntax("user listed twice"));
            }
            file.insert(user.to_owned(), hash.to_owned());
        }
        Ok(file)
    }

    fn insert(&mut self, user: String, hash: String) {
        match self.by_user.get(&user) {
            Some(&i) => self.entries[i].1 = hash,
            None => {
                self.by_user.insert(user.clone(), self.entries.len());
                self.entries.push((user, hash));
            }
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `user` is listed.
    pub fn contains(&self, user: &str) -> bool {
        self.by_user.contains_key(user)
    }

    /// Whether `password` is `user`'s. Costs one argon2 hash (milliseconds) whether or not
    /// the user exists: call it off the event loop.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.by_user.get(user) {
            Some(&i) => (self.entries[i].1.as_str(), true),
            None => (self.decoy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false; // checked at load; unreachable for a loaded file
        };
        // The verifier takes the algorithm and parameters from the PHC string.
        let ok = Argon2::default().verify_password(password, &parsed).is_ok();
        ok && known
    }

    /// Adds `user` or changes their password (hashed with the default parameters).
    pub fn set(&mut self, user: &str, password: &[u8]) -> Result<(), PasswdError> {
        if user.is_empty() || user.contains([':', '\n', '\r']) {
            return Err(PasswdError::BadUser(user.to_owned()));
        }
        let hash = hash_password(password)?;
        self.insert(user.to_owned(), hash);
        Ok(())
    }

    /// Removes `user`; whether they were listed.
    pub fn remove(&mut self, user: &str) -> bool {
        let Some(i) = self.by_user.remove(user) else {
            return false;
        };
        self.entries.remove(i);
        for (j, (u, _)) in self.entries.iter().enumerate().skip(i) {
            self.by_user.insert(u.clone(), j);
        }
        true
    }

    /// The file's text: one `user:hash` line per user.
    pub fn to_text(&self) -> String {
        self.entries
            .iter()
            .map(|(u, h)| format!("{u}:{h}\n"))
            .collect()
    }

    /// Writes the file atomically (a temporary file beside it, then a rename), readable by
    /// its owner only.
    pub fn save(&self, path: &Path) -> Result<(), PasswdError> {
        let io_err = |source| PasswdError::Io {
            path: path.to_owned(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(io_err)?;
        f.write_all(self.to_text().as_bytes()).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    }
}

/// An argon2id PHC string for `password` with the crate's default parameters (19 MiB, 2
/// passes, 1 lane: OWASP's minimum for argon2id) and a random salt.
pub fn hash_password(password: &[u8]) -> Result<String, PasswdError> {
    hash_with(password, Argon2::default())
}

/// An argon2id PHC string with explicit parameters (memory in KiB, passes, lanes): for tests
/// that need a hash slower or faster than the default.
pub fn hash_password_with(
    password: &[u8],
    memory_kib: u32,
    passes: u32,
    lanes: u32,
) -> Result<String, PasswdError> {
    let params = Params::new(memory_kib, passes, lanes, None)
        .map_err(|e| PasswdError::Hash(e.to_string()))?;
    hash_with(
        password,
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
    )
}

fn hash_with(password: &[u8], argon: Argon2<'_>) -> Result<String, PasswdError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswdError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cheap(password: &[u8]) -> String {
        hash_password_with(password, 64, 1, 1).unwrap()
    }

    #[test]
    fn verifies_the_right_password_only() {
        let text = format!("# users\n\nalice:{}\nbob:{}\n", cheap(b"a1"), cheap(b"b2"));
        let f = PasswordFile::parse(&text, Path::new("p")).unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.verify("alice", b"a1"));
        assert!(!f.verify("alice", b"b2"));
        assert!(f.verify("bob", b"b2"));
        assert!(
            !f.verify("carol", b"vireo-decoy"),
            "the decoy is no one's password"
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, line) in [
            ("alice\n", 1),
            (":$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA\n", 1),
            ("# c\nalice:plaintext\n", 2),
            ("alice:$6$salt$sha512crypt\n", 1),
        ] {
            match PasswordFile::parse(text, Path::new("p")) {
                Err(PasswdError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let twice = format!("a:{}\na:{}\n", cheap(b"x"), cheap(b"y"));
        assert!(PasswordFile::parse(&twice, Path::new("p")).is_err());
    }

    #[test]
    fn set_change_remove_round_trip() {
        let mut f = PasswordFile::empty().unwrap();
        f.set("alice", b"one").unwrap();
        f.set("bob", b"two").unwrap();
        f.set("alice", b"three").unwrap();
        assert!(f.remove("alice"));
        assert!(!f.remove("alice"));
        f.set("carol", b"four").unwrap();
        let g = PasswordFile::parse(&f.to_text(), Path::new("p")).unwrap();
        assert!(!g.contains("alice"));
        assert!(g.verify("bob", b"two"));
        assert!(g.verify("carol", b"four"));
        assert!(matches!(f.set("a:b", b"x"), Err(PasswdError::BadUser(_))));
    }
}
