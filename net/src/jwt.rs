//! JWT auth tokens (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`), as etcd
//! hands them out: signed claims `username`, `revision` (the auth store's revision at the
//! login) and `exp`. Any member holding the key checks one without having applied anything,
//! so a token works at once on every member and outlives restarts; one issued before a
//! change of users, roles or permissions is refused with `AuthOldRevision` (clients log in
//! again), and one past its `exp` is an invalid token, as in etcd.
//!
//! Keys are PEM files, as etcd reads them: RSA for `RS*`/`PS*`, EC for `ES256`/`ES384`,
//! Ed25519 for `EdDSA`, and for `HS*` the private key file's bytes are the secret. With a
//! public key only, a member verifies tokens but cannot sign: a login there fails with
//! etcd's `auth: token signing attempted with verify-only key`. keel needs the public key
//! of an asymmetric method even with its private key (etcd derives it), and refuses
//! `ES512`, which its JWT library does not sign.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keel_core::auth::AuthInfo;
use serde::{Deserialize, Serialize};

/// etcd's default `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);
/// etcd's answer to a login on a member that only has the public key.
pub const VERIFY_ONLY: &str = "auth: token signing attempted with verify-only key";

/// The options after `jwt,` in `--auth-token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtOptions {
    pub sign_method: String,
    pub public_key: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub ttl: Duration,
}

impl JwtOptions {
    /// Parses `pub-key=…,priv-key=…,sign-method=…,ttl=…` (etcd's keys; an unknown key is
    /// refused, where etcd only warns, so that a typo does not go unnoticed).
    pub fn parse(options: &str) -> Result<JwtOptions, String> {
        let mut parsed = JwtOptions {
            sign_method: String::new(),
            public_key: None,
            private_key: None,
            ttl: DEFAULT_TTL,
        };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("{option:?} is not key=value"))?;
            match key {
                "sign-method" => parsed.sign_method = value.to_string(),
                "pub-key" => parsed.public_key = Some(PathBuf::from(value)),
                "priv-key" => parsed.private_key = Some(PathBuf::from(value)),
                "ttl" => {
                    parsed.ttl = humantime::parse_duration(value)
                        .map_err(|e| format!("ttl {value:?}: {e}"))?;
                }
                other => return Err(format!("unknown JWT option {other:?}")),
            }
        }
        if parsed.sign_method.is_empty() {
            return Err("auth: invalid auth signature method (sign-method is required)".into());
        }
        Ok(parsed)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    exp: u64,
}

/// Signs and checks tokens with the keys of [`JwtOptions`].
pub struct JwtTokens {
    options: JwtOptions,
    algorithm: Algorithm,
    /// `None`: verify-only.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtTokens")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PartialEq for JwtTokens {
    fn eq(&self, other: &JwtTokens) -> bool {
        self.options == other.options
    }
}

impl Eq for JwtTokens {}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl JwtTokens {
    /// Loads the keys; a key that does not parse, or a private key that does not match the
    /// public one, is refused here, at start-up.
    pub fn load(options: JwtOptions) -> Result<JwtTokens, String> {
        let algorithm = algorithm(&options.sign_method)?;
        let private = options.private_key.as_ref().map(read).transpose()?;
        let public = options.public_key.as_ref().map(read).transpose()?;
        let (encoding, decoding) = keys(algorithm, private.as_deref(), public.as_deref())?;
        let mut validation = Validation::new(algorithm);
        // etcd (golang-jwt) allows no leeway past `exp`.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let tokens = JwtTokens {
            options,
            algorithm,
            encoding,
            decoding,
            validation,
        };
        if tokens.encoding.is_some() {
            let probe = tokens.sign("keel-key-check", 1, SystemTime::now())?;
            if tokens.verify(&probe).is_none() {
                return Err("auth: public and private keys don't match".into());
            }
        }
        Ok(tokens)
    }

    pub fn ttl(&self) -> Duration {
        self.options.ttl
    }

    /// A token for `user`, logged in at auth revision `revision`.
    pub fn sign(&self, user: &str, revision: u64, now: SystemTime) -> Result<String, String> {
        let encoding = self.encoding.as_ref().ok_or(VERIFY_ONLY)?;
        let expires = now + self.options.ttl;
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: expires
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding)
            .map_err(|e| format!("auth: signing a token failed: {e}"))
    }

    /// Who a token names, if its signature, method and expiry hold.
    pub fn verify(&self, token: &str) -> Option<AuthInfo> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        Some(AuthInfo {
            user: data.claims.username,
            revision: data.claims.revision,
        })
    }
}

fn algorithm(sign_method: &str) -> Result<Algorithm, String> {
    let algorithm = match sign_method {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "ES512" => return Err("sign-method ES512 is not supported by keel".into()),
        other => return Err(format!("auth: invalid auth signature method {other:?}")),
    };
    Ok(algorithm)
}

type Keys = (Option<EncodingKey>, DecodingKey);

fn keys(
    algorithm: Algorithm,
    private: Option<&[u8]>,
    public: Option<&[u8]>,
) -> Result<Keys, String> {
    let bad = |what: &str, e: jsonwebtoken::errors::Error| format!("{what} of {algorithm:?}: {e}");
    if matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        let secret = private.ok_or("auth: missing key data (HMAC needs priv-key)")?;
        return Ok((
            Some(EncodingKey::from_secret(secret)),
            DecodingKey::from_secret(secret),
        ));
    }
    let public = public.ok_or("auth: missing key data (keel needs pub-key)")?;
    let (encoding, decoding) = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => (
            private.map(EncodingKey::from_ec_pem).transpose(),
            DecodingKey::from_ec_pem(public),
        ),
        Algorithm::EdDSA => (
            private.map(EncodingKey::from_ed_pem).transpose(),
            DecodingKey::from_ed_pem(public),
        ),
        _ => (
            private.map(EncodingKey::from_rsa_pem).transpose(),
            DecodingKey::from_rsa_pem(public),
        ),
    };
    Ok((
        encoding.map_err(|e| bad("priv-key", e))?,
        decoding.map_err(|e| bad("pub-key", e))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_keys(dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let private = dir.join("jwt.key");
        let public = dir.join("jwt.pub");
        std::fs::write(&private, pair.serialize_pem()).unwrap();
        std::fs::write(&public, pair.public_key_pem()).unwrap();
        (private, public)
    }

    fn options(private: Option<&PathBuf>, public: &std::path::Path) -> JwtOptions {
        let mut text = format!("pub-key={},sign-method=ES256,ttl=10m", public.display());
        if let Some(private) = private {
            text.push_str(&format!(",priv-key={}", private.display()));
        }
        JwtOptions::parse(&text).unwrap()
    }

    #[test]
    fn a_signed_token_names_its_user_and_revision_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ec_keys(dir.path());
        let tokens = JwtTokens::load(options(Some(&private), &public)).unwrap();
        assert_eq!(tokens.ttl(), Duration::from_secs(600));
        let now = SystemTime::now();
        let token = tokens.sign("alice", 7, now).unwrap();
        assert_eq!(
            tokens.verify(&token),
            Some(AuthInfo {
                user: "alice".into(),
                revision: 7
            })
        );
        let expired = tokens
            .sign("alice", 7, now - Duration::from_secs(601))
            .unwrap();
        assert_eq!(tokens.verify(&expired), None, "past its exp");
        // One character in the middle of the signature changed.
        let mut forged: Vec<char> = token.chars().collect();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        assert_eq!(tokens.verify(&forged), None, "a changed signature");
    }

    #[test]
    fn a_member_with_the_public_key_only_verifies_but_does_not_sign() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ec_keys(dir.path());
        let signer = JwtTokens::load(options(Some(&private), &public)).unwrap();
        let verifier = JwtTokens::load(options(None, &public)).unwrap();
        let token = signer.sign("bob", 3, SystemTime::now()).unwrap();
        assert_eq!(verifier.verify(&token).map(|i| i.user), Some("bob".into()));
        assert_eq!(
            verifier.sign("bob", 3, SystemTime::now()).unwrap_err(),
            VERIFY_ONLY
        );
    }

    #[test]
    fn mismatched_keys_and_bad_options_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (private, _) = ec_keys(dir.path());
        let other = tempfile::tempdir().unwrap();
        let (_, stranger_public) = ec_keys(other.path());
        let error = JwtTokens::load(options(Some(&private), &stranger_public)).unwrap_err();
        assert!(error.contains("don't match"), "{error}");
        assert!(JwtOptions::parse("pub-key=x")
            .unwrap_err()
            .contains("sign-method"));
        assert!(JwtOptions::parse("sign-method=RS256,colour=blue")
            .unwrap_err()
            .contains("colour"));
        assert!(
            JwtTokens::load(JwtOptions::parse("sign-method=RS999").unwrap())
                .unwrap_err()
                .contains("invalid auth signature method")
        );
    }
}
