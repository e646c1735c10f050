//! NATS decentralised authentication made at test time: an operator, the accounts it signs,
//! the users those accounts sign, and each user's `.creds` file (its JWT and nkey seed). A
//! [`TestNats`] started with [`TestNats::start_operator`] trusts the operator and knows the
//! accounts given to it (a memory resolver, preloaded), so a user of any other account is
//! refused.
//!
//! The tokens follow the NATS JWT v2 format: a header `{"typ":"JWT","alg":"ed25519-nkey"}`,
//! the claims (`jti`, `iat`, `iss`, `sub`, `name`, and a `nats` object with the kind and
//! version 2), each base64url without padding, and an ed25519 signature of the issuer's nkey
//! over `header.claims`. `jti` is the base32 (no padding) SHA-512/256 of the standard claims
//! with `jti` left out, as nats-io/jwt computes it.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};

use crate::TestNats;

/// The header of every NATS v2 JWT.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Signs a v2 JWT about `subject` (a public nkey) with `issuer`; `nats` is the claim's `nats`
/// object, to which `version: 2` is added.
pub fn encode(issuer: &KeyPair, subject: &str, name: &str, mut nats: Value) -> String {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    // The standard claims alone, in the order nats-io/jwt writes them, `jti` left out.
    let standard = json!({
        "iat": iat,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
    });
    let jti = BASE32_NOPAD.encode(&Sha512_256::digest(standard.to_string().as_bytes()));
    nats["version"] = json!(2);
    let mut claims = standard;
    claims["jti"] = json!(jti);
    claims["nats"] = nats;
    let signed = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(HEADER.as_bytes()),
        BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    let sig = issuer.sign(signed.as_bytes()).expect("sign with the nkey");
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&sig))
}

/// The claims of a JWT, decoded without checking the signature (for assertions).
pub fn claims(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = BASE64URL_NOPAD
        .decode(part.as_bytes())
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The text of a `.creds` file: the user JWT and the user's nkey seed, each between the
/// markers NATS clients look for.
pub fn creds(user_jwt: &str, user_seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// An operator: the root of trust a server is configured with. Self-signed.
#[derive(Debug)]
pub struct Operator {
    key: KeyPair,
    jwt: String,
}

impl Operator {
    /// A new operator named `name` with a fresh key.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::new_operator();
        let jwt = encode(&key, &key.public_key(), name, json!({"type": "operator"}));
        Operator { key, jwt }
    }

    /// The operator's public key (`O…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The operator's JWT.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// A new account named `name`, signed by this operator, with no limits (JetStream off).
    pub fn account(&self, name: &str) -> Account {
        let key = KeyPair::new_account();
        let jwt = encode(
            &self.key,
            &key.public_key(),
            name,
            json!({
                "type": "account",
                "limits": {
                    "subs": -1, "data": -1, "payload": -1,
                    "imports": -1, "exports": -1, "wildcards": true,
                    "conn": -1, "leaf": -1,
                },
            }),
        );
        Account { key, jwt }
    }
}

/// An account: signed by an operator, signs its users.
#[derive(Debug)]
pub struct Account {
    key: KeyPair,
    jwt: String,
}

impl Account {
    /// The account's public key (`A…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The account's JWT.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// A new user named `name`, signed by this account, allowed to publish and subscribe to
    /// everything.
    pub fn user(&self, name: &str) -> User {
        let key = KeyPair::new_user();
        let jwt = encode(
            &self.key,
            &key.public_key(),
            name,
            json!({
                "type": "user",
                "pub": {}, "sub": {},
                "subs": -1, "data": -1, "payload": -1,
            }),
        );
        User { key, jwt }
    }
}

/// A user: its JWT (signed by its account) and its key.
#[derive(Debug)]
pub struct User {
    key: KeyPair,
    jwt: String,
}

impl User {
    /// The user's public key (`U…`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The user's JWT.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The user's nkey seed (`SU…`).
    pub fn seed(&self) -> String {
        self.key.seed().expect("a user seed")
    }

    /// The text of this user's `.creds` file.
    pub fn creds(&self) -> String {
        creds(&self.jwt, &self.seed())
    }

    /// Writes this user's `.creds` file as `dir/<name>.creds` and returns its path.
    pub fn write_creds(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.creds"));
        std::fs::write(&path, self.creds()).expect("write a .creds file");
        path
    }
}

impl TestNats {
    /// A server in operator mode: it trusts `operator` and knows `accounts` (a memory
    /// resolver preloaded with their JWTs); the first account is also the system account (the
    /// test server runs JetStream, which in operator mode will not start without one).
    /// Users connect with `.creds` files of those accounts' users only. The directory holds
    /// the configuration file.
    pub fn start_operator(operator: &Operator, accounts: &[&Account]) -> (Self, tempfile::TempDir) {
        let system = accounts
            .first()
            .expect("an operator-mode server needs a system account");
        let dir = tempfile::tempdir().expect("temporary directory");
        let preload: Vec<String> = accounts
            .iter()
            .map(|a| format!("    {}: \"{}\"", a.public_key(), a.jwt()))
            .collect();
        let conf = format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{}\n}}\n",
            operator.jwt(),
            system.public_key(),
            preload.join("\n")
        );
        let path = dir.path().join("operator.conf");
        std::fs::write(&path, conf).expect("write operator.conf");
        let nats = Self::start_with_args(&["-c", path.to_str().expect("utf-8 path")]);
        (nats, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwt_names_its_issuer_and_subject_and_verifies_with_the_issuer_key() {
        let op = Operator::new("op");
        let acc = op.account("acc");
        let c = claims(acc.jwt());
        assert_eq!(c["iss"], op.public_key());
        assert_eq!(c["sub"], acc.public_key());
        assert_eq!(c["name"], "acc");
        assert_eq!(c["nats"]["type"], "account");
        assert_eq!(c["nats"]["version"], 2);
        // 32 bytes of SHA-512/256 in base32 without padding
        assert_eq!(c["jti"].as_str().unwrap().len(), 52);

        let (signed, sig) = acc.jwt().rsplit_once('.').unwrap();
        let sig = BASE64URL_NOPAD.decode(sig.as_bytes()).unwrap();
        let issuer = KeyPair::from_public_key(&op.public_key()).unwrap();
        issuer.verify(signed.as_bytes(), &sig).unwrap();
        let stranger = KeyPair::from_public_key(&Operator::new("x").public_key()).unwrap();
        assert!(stranger.verify(signed.as_bytes(), &sig).is_err());
    }

    #[test]
    fn a_creds_file_holds_the_user_jwt_and_seed() {
        let user = Operator::new("op").account("acc").user("u");
        let text = user.creds();
        assert!(text.contains(&format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------",
            user.jwt()
        )));
        assert!(text.contains(&format!(
            "-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------",
            user.seed()
        )));
        assert!(user.seed().starts_with("SU"));
        assert!(user.public_key().starts_with('U'));
    }
}
