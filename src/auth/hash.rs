//! RabbitMQ's password hash `rabbit_password_hashing_sha256`: base64 of a 4-byte salt
//! followed by SHA-256(salt ++ password). Definitions exports carry it, and RabbitMQ
//! keeps a user's password only through it (an import with an empty hash would leave
//! the user without one). SHA-256 is RustCrypto's `sha2`.

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// SHA-512 of `data` (`rabbit_password_hashing_sha512`).
pub fn sha512(data: &[u8]) -> [u8; 64] {
    use sha2::Digest;
    sha2::Sha512::digest(data).into()
}

/// The salted hash as RabbitMQ stores and exports it (base64, 48 characters).
pub fn rabbit_sha256(salt: [u8; 4], password: &[u8]) -> String {
    let mut salted = salt.to_vec();
    salted.extend_from_slice(password);
    let mut out = salt.to_vec();
    out.extend_from_slice(&sha256(&salted));
    crate::mgmt::base64_encode(&out)
}

/// A fresh salt: std's per-process random hasher keys, mixed with the time (a salt
/// must differ between users and exports, not be secret).
pub fn salt() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() as u32).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn rabbit_hash_has_its_salt_in_front() {
        let h = rabbit_sha256([1, 2, 3, 4], b"guest");
        let raw = crate::mgmt::base64_decode(&h).unwrap();
        assert_eq!(raw.len(), 36);
        assert_eq!(&raw[..4], &[1, 2, 3, 4]);
        assert_eq!(&raw[4..], &sha256(b"\x01\x02\x03\x04guest"));
    }
}
