//! PKCS#11 signing backend: secp256k1 keys that never leave an HSM (DESIGN §4.5).
//!
//! A [`Pkcs11Key`] is found by token label and by key label or id, and signs the node's 32-byte
//! [`SigningDigest`] with `CKM_ECDSA`. The token answers with a bare `r‖s`: randomised, often
//! high-s and without a recovery id. [`ecdsa::signature_from_rs`] normalises it to low-s and finds
//! `v` against the key's public key, which is read from the token once, at open (`CKA_EC_POINT`),
//! so a signature the token made with any other key is refused rather than released.
//! secp256k1 only: PKCS#11 has no pairing curves, so BN254 and BLS12-381 keys cannot live here.
//!
//! Each key keeps a small pool of logged-in sessions. A call that fails because the token, its slot
//! or the session went away drops the pool; the next call looks the token up again by label and
//! logs in again, so a token that comes back is used again without a restart, and while it is
//! gone every call fails fast with [`HsmError::Unavailable`].
//!
//! # Caveats
//!
//! - `C_Initialize` may run only once per module per process, so all keys on one module share one
//!   context (a process-wide map keyed by the module's path). Some modules, SoftHSM among them,
//!   build their slot list once in `C_Initialize` and never notice a token that appears or comes
//!   back; when a token cannot be found the module is therefore re-initialised (`C_Finalize` +
//!   `C_Initialize`; from the signing path at most once per [`REINIT_INTERVAL`]). That waits for
//!   in-flight calls on every key of the module and invalidates their sessions; those keys reopen
//!   on their next call without an error.
//! - Login state in PKCS#11 belongs to the application and token, not the session: once one
//!   session is logged in, `C_Login` elsewhere answers `CKR_USER_ALREADY_LOGGED_IN` without
//!   checking the PIN. Two keys on one token in one process cannot tell a wrong PIN on the second
//!   from a right one while the first is logged in.
//! - Signing is blocking I/O: call [`Pkcs11Key::sign`] from `spawn_blocking`.
//! - HSM signatures are randomised: the same digest signed twice gives different bytes (the ledger
//!   stores what was released).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use avsnode_signer::ecdsa;
use avsnode_signer::messages::{Address, SigningDigest};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

/// DER encoding of the secp256k1 OID 1.3.132.0.10, the only `CKA_EC_PARAMS` accepted.
pub const SECP256K1_EC_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// Logged-in sessions kept per key; concurrent signing calls beyond this wait for one.
const MAX_SESSIONS: usize = 4;

/// How often the signing path may re-initialise a module while a token is missing.
pub const REINIT_INTERVAL: Duration = Duration::from_secs(1);

/// A token's user PIN, wiped from memory on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// Wraps a PIN as given.
    pub fn new(pin: impl Into<String>) -> Self {
        Self(Zeroizing::new(pin.into()))
    }

    /// A PIN read from a file: strips one trailing `"\n"` or `"\r\n"` (editors and `echo` end files
    /// with one); any other whitespace is part of the PIN.
    pub fn from_file_contents(contents: &str) -> Self {
        Self::new(avsnode_keystore::strip_file_newline(contents))
    }

    fn auth_pin(&self) -> AuthPin {
        AuthPin::from(self.0.as_str())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Where a key is: the module, the token (by label) and the key on it (by label or by id).
#[derive(Clone, Debug)]
pub struct Pkcs11Spec {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label (`CK_TOKEN_INFO.label`, without the blank padding).
    pub token_label: String,
    /// The key's `CKA_LABEL`. Exactly one of `key_label` and `key_id` is set.
    pub key_label: Option<String>,
    /// The key's `CKA_ID`. Exactly one of `key_label` and `key_id` is set.
    pub key_id: Option<Vec<u8>>,
    /// The user PIN.
    pub pin: Pin,
}

impl Pkcs11Spec {
    /// The key this spec names; an error unless exactly one of label and id is set.
    pub fn key_ref(&self) -> Result<KeyRef, HsmError> {
        match (&self.key_label, &self.key_id) {
            (Some(label), None) => Ok(KeyRef::Label(label.clone())),
            (None, Some(id)) => Ok(KeyRef::Id(id.clone())),
            _ => Err(HsmError::InvalidSpec {
                reason: "exactly one of key_label and key_id must be set",
            }),
        }
    }
}

/// How a key is named on its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// By `CKA_LABEL`.
    Label(String),
    /// By `CKA_ID`.
    Id(Vec<u8>),
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Label(label) => write!(f, "label {label:?}"),
            KeyRef::Id(id) => write!(f, "id {}", hex::encode(id)),
        }
    }
}

/// Why a PKCS#11 operation failed. Never contains the PIN.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The key spec is inconsistent.
    #[error("invalid PKCS#11 key spec: {reason}")]
    InvalidSpec {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {}", .module.display())]
    ModuleLoad {
        /// The module's path.
        module: PathBuf,
        /// Why.
        #[source]
        source: Pkcs11Error,
    },
    /// No token with this label is present.
    #[error("no token labelled {label:?} (tokens present: {})", quoted_list(.available))]
    TokenNotFound {
        /// The label asked for.
        label: String,
        /// The labels of the tokens that are present.
        available: Vec<String>,
    },
    /// `C_Login` failed: a wrong or locked PIN, usually.
    #[error("login to token {token:?} failed")]
    LoginFailed {
        /// The token.
        token: String,
        /// The module's answer (e.g. `CKR_PIN_INCORRECT`).
        #[source]
        source: Pkcs11Error,
    },
    /// No private key with this label or id is on the token.
    #[error("no private key with {key} on token {token:?}")]
    KeyNotFound {
        /// The token.
        token: String,
        /// The key asked for.
        key: KeyRef,
    },
    /// More than one private key matches.
    #[error(
        "{count} private keys with {key} on token {token:?}; name the key by a unique label or id"
    )]
    AmbiguousKey {
        /// The token.
        token: String,
        /// The key asked for.
        key: KeyRef,
        /// How many matched.
        count: usize,
    },
    /// `keys hsm-generate` was asked for a label that is taken.
    #[error("token {token:?} already has a private key labelled {label:?}")]
    KeyExists {
        /// The token.
        token: String,
        /// The label.
        label: String,
    },
    /// The private key has no public key object (same `CKA_ID`) to read its point from.
    #[error("no public key object for the private key with {key} on token {token:?}")]
    NoPublicKey {
        /// The token.
        token: String,
        /// The key.
        key: KeyRef,
    },
    /// The key is not an EC key on secp256k1.
    #[error(
        "key with {key} on token {token:?} is {found}, not secp256k1 (OID 1.3.132.0.10): PKCS#11 signers support secp256k1 ECDSA only"
    )]
    NotSecp256k1 {
        /// The token.
        token: String,
        /// The key.
        key: KeyRef,
        /// What it is instead (key type or curve OID).
        found: String,
    },
    /// `CKA_EC_POINT` is not a secp256k1 point in the expected encoding.
    #[error("public key of the key with {key} on token {token:?} is malformed")]
    BadPublicKey {
        /// The token.
        token: String,
        /// The key.
        key: KeyRef,
        /// Why.
        #[source]
        source: avsnode_signer::Error,
    },
    /// After the token came back, the key found under the same name has another public key.
    #[error(
        "key with {key} on token {token:?} is no longer the key opened at start-up (address {expected})"
    )]
    KeyChanged {
        /// The token.
        token: String,
        /// The key.
        key: KeyRef,
        /// The address of the key opened at start-up.
        expected: Address,
    },
    /// The token is gone (removed, its slot failed, or its sessions were closed). Retryable: the
    /// next call looks for it again; the node answers UNAVAILABLE meanwhile.
    #[error("token {token:?} is unavailable")]
    Unavailable {
        /// The token.
        token: String,
        /// What was seen.
        #[source]
        cause: Unavailability,
    },
    /// `C_Sign` failed for another reason than a lost token.
    #[error("signing with the key with {key} on token {token:?} failed")]
    Signing {
        /// The token.
        token: String,
        /// The key.
        key: KeyRef,
        /// Why.
        #[source]
        source: Pkcs11Error,
    },
    /// The token's `r‖s` is malformed or is not this key's signature over the digest.
    #[error("the token {token:?} returned an invalid signature for the key with {key}")]
    BadSignature {
        /// The token.
        token: String,
        /// The key.
        key: KeyRef,
        /// Why.
        #[source]
        source: avsnode_signer::Error,
    },
    /// `C_GenerateKeyPair` failed.
    #[error("generating a secp256k1 key pair on token {token:?} failed")]
    Generate {
        /// The token.
        token: String,
        /// Why.
        #[source]
        source: Pkcs11Error,
    },
    /// Another PKCS#11 call failed.
    #[error("token {token:?}: {operation} failed")]
    Token {
        /// The token.
        token: String,
        /// What was being done.
        operation: &'static str,
        /// Why.
        #[source]
        source: Pkcs11Error,
    },
}

/// Why a token is [unavailable](HsmError::Unavailable).
#[derive(Debug, thiserror::Error)]
pub enum Unavailability {
    /// No token with the label is present (removed, or its slot failed).
    #[error("no token with this label is present")]
    Absent,
    /// The token is back but the key opened at start-up is not on it (yet): a token being
    /// restored, or a deleted key.
    #[error("the key opened at start-up is not on the token")]
    KeyMissing,
    /// The module reported the token, slot or session lost.
    #[error(transparent)]
    Module(#[from] Pkcs11Error),
}

fn quoted_list(labels: &[String]) -> String {
    if labels.is_empty() {
        return "none".to_owned();
    }
    labels
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a PKCS#11 error means the token, its slot or our session is gone (so reopening may
/// help), as opposed to a problem with the request or the key.
fn token_lost(error: &Pkcs11Error) -> bool {
    matches!(
        error,
        Pkcs11Error::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::SessionCount
                | RvError::CryptokiNotInitialized
                | RvError::UserNotLoggedIn
                // SoftHSM's answer to C_SignInit once the token's files are gone; on a present
                // token the reopen that follows names a deleted key as such.
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                // "Unrecoverable": a fresh session is the only hope, so treat it as a lost token.
                | RvError::GeneralError,
            _
        )
    )
}

/// One loaded module and its context, shared by every key on it in this process.
struct Module {
    path: PathBuf,
    /// Calls hold the read side; re-initialising takes the write side, so no call is in flight
    /// during `C_Finalize`.
    state: RwLock<ModuleState>,
    last_reinit: Mutex<Option<Instant>>,
}

struct ModuleState {
    ctx: Pkcs11,
    /// Bumped by every re-initialisation: sessions and handles of an older generation are dead.
    generation: u64,
}

static MODULES: LazyLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a panic elsewhere does not poison it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn initialize(ctx: &Pkcs11) -> Result<(), Pkcs11Error> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another library in this process initialised the module first; it is usable.
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Module {
    fn load(path: &Path) -> Result<Arc<Module>, HsmError> {
        // One context per library file, however the path is spelt.
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut modules = lock(&MODULES);
        if let Some(module) = modules.get(&canonical) {
            return Ok(Arc::clone(module));
        }
        let load_error = |source| HsmError::ModuleLoad {
            module: path.to_path_buf(),
            source,
        };
        let ctx = Pkcs11::new(&canonical).map_err(load_error)?;
        initialize(&ctx).map_err(load_error)?;
        let module = Arc::new(Module {
            path: canonical.clone(),
            state: RwLock::new(ModuleState { ctx, generation: 0 }),
            last_reinit: Mutex::new(None),
        });
        modules.insert(canonical, Arc::clone(&module));
        Ok(module)
    }

    fn read(&self) -> RwLockReadGuard<'_, ModuleState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-initialises the module so it rescans its tokens, unless it was re-initialised since
    /// generation `seen` (then that fresh state is used) or less than `min_interval` ago. Must not
    /// be called while holding [`Module::read`].
    fn reinitialise(&self, seen: u64, min_interval: Duration) {
        {
            let mut last = lock(&self.last_reinit);
            if last.is_some_and(|t| t.elapsed() < min_interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.generation != seen {
            return;
        }
        // A finalize error (already finalised, device gone) leaves nothing to undo.
        let _ = state.ctx.clone().finalize();
        if let Err(error) = initialize(&state.ctx) {
            // Calls fail with CKR_CRYPTOKI_NOT_INITIALIZED (→ unavailable) until a later attempt
            // succeeds.
            tracing::warn!(module = %self.path.display(), %error, "re-initialising the PKCS#11 module failed");
        }
        state.generation += 1;
        tracing::debug!(module = %self.path.display(), generation = state.generation, "re-initialised the PKCS#11 module to rescan its tokens");
    }
}

/// Finds the slot holding the token labelled `label`.
fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot, FindTokenError> {
    let slots = ctx.get_slots_with_token().map_err(FindTokenError::Pkcs11)?;
    let mut available = Vec::new();
    for slot in slots {
        // A slot whose token fails to describe itself is skipped: it is not the token we want
        // in any usable sense.
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        if info.label() == label {
            return Ok(slot);
        }
        available.push(info.label().to_owned());
    }
    Err(FindTokenError::NotFound { available })
}

enum FindTokenError {
    NotFound { available: Vec<String> },
    Pkcs11(Pkcs11Error),
}

impl FindTokenError {
    fn into_open_error(self, label: &str) -> HsmError {
        match self {
            FindTokenError::NotFound { available } => HsmError::TokenNotFound {
                label: label.to_owned(),
                available,
            },
            FindTokenError::Pkcs11(source) => HsmError::Unavailable {
                token: label.to_owned(),
                cause: source.into(),
            },
        }
    }
}

/// Runs `f` on the token labelled `label`; if the token is not found, re-initialises the module
/// once (it may have been created or come back since the module was initialised) and retries.
fn with_token<T>(
    module: &Module,
    label: &str,
    f: impl Fn(&ModuleState, Slot) -> Result<T, HsmError>,
) -> Result<T, HsmError> {
    let seen = {
        let state = module.read();
        match find_token(&state.ctx, label) {
            Ok(slot) => return f(&state, slot),
            Err(_) => state.generation,
        }
    };
    module.reinitialise(seen, Duration::ZERO);
    let state = module.read();
    let slot = find_token(&state.ctx, label).map_err(|e| e.into_open_error(label))?;
    f(&state, slot)
}

/// Opens a session on `slot` and logs the user in.
fn open_session(
    ctx: &Pkcs11,
    slot: Slot,
    read_write: bool,
    token: &str,
    pin: &Pin,
) -> Result<Session, HsmError> {
    let opened = if read_write {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    };
    let session = opened.map_err(|source| lost_or(token, "opening a session", source))?;
    match session.login(UserType::User, Some(&pin.auth_pin())) {
        // Login is per token, not per session: another session of ours is logged in already.
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(source) if token_lost(&source) => Err(HsmError::Unavailable {
            token: token.to_owned(),
            cause: source.into(),
        }),
        Err(source) => Err(HsmError::LoginFailed {
            token: token.to_owned(),
            source,
        }),
    }
}

/// [`HsmError::Unavailable`] if the error means the token is gone, else [`HsmError::Token`].
fn lost_or(token: &str, operation: &'static str, source: Pkcs11Error) -> HsmError {
    if token_lost(&source) {
        HsmError::Unavailable {
            token: token.to_owned(),
            cause: source.into(),
        }
    } else {
        HsmError::Token {
            token: token.to_owned(),
            operation,
            source,
        }
    }
}

/// A private key found on a token, with what was read from its public key object.
struct FoundKey {
    private: ObjectHandle,
    label: String,
    id: Vec<u8>,
    public: ecdsa::PublicKey,
}

/// Finds the one private key named `key`, checks it is secp256k1 and reads its public key.
fn find_key(session: &Session, token: &str, key: &KeyRef) -> Result<FoundKey, HsmError> {
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    template.push(match key {
        KeyRef::Label(label) => Attribute::Label(label.as_bytes().to_vec()),
        KeyRef::Id(id) => Attribute::Id(id.clone()),
    });
    let found = session
        .find_objects(&template)
        .map_err(|source| lost_or(token, "finding the key", source))?;
    match found.as_slice() {
        [] => Err(HsmError::KeyNotFound {
            token: token.to_owned(),
            key: key.clone(),
        }),
        [private] => describe_key(session, token, Some(key), *private),
        more => Err(HsmError::AmbiguousKey {
            token: token.to_owned(),
            key: key.clone(),
            count: more.len(),
        }),
    }
}

/// Checks that `private` is a secp256k1 key and finds its public key object (same `CKA_ID`, or
/// the same label when the key has no id).
fn describe_key(
    session: &Session,
    token: &str,
    key: Option<&KeyRef>,
    private: ObjectHandle,
) -> Result<FoundKey, HsmError> {
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Id,
                AttributeType::Label,
            ],
        )
        .map_err(|source| lost_or(token, "reading the key's attributes", source))?;
    let (mut key_type, mut params, mut id, mut label) = (None, None, Vec::new(), Vec::new());
    for attr in attrs {
        match attr {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            Attribute::Id(i) => id = i,
            Attribute::Label(l) => label = l,
            _ => {}
        }
    }
    // For messages: the name asked for, or (when listing) the key's own id or label.
    let key = &key.cloned().unwrap_or_else(|| {
        if id.is_empty() {
            KeyRef::Label(String::from_utf8_lossy(&label).into_owned())
        } else {
            KeyRef::Id(id.clone())
        }
    });
    let not_secp256k1 = |found: String| HsmError::NotSecp256k1 {
        token: token.to_owned(),
        key: key.clone(),
        found,
    };
    match key_type {
        Some(t) if t == KeyType::EC => {}
        Some(t) => return Err(not_secp256k1(format!("a {t} key"))),
        None => return Err(not_secp256k1("a key of unknown type".to_owned())),
    }
    match params.as_deref() {
        Some(p) if p == SECP256K1_EC_PARAMS => {}
        Some(p) => {
            return Err(not_secp256k1(format!(
                "an EC key with CKA_EC_PARAMS {}",
                describe_ec_params(p)
            )));
        }
        None => return Err(not_secp256k1("an EC key without CKA_EC_PARAMS".to_owned())),
    }

    let mut template = vec![
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
    ];
    if id.is_empty() {
        template.push(Attribute::Label(label.clone()));
    } else {
        template.push(Attribute::Id(id.clone()));
    }
    let publics = session
        .find_objects(&template)
        .map_err(|source| lost_or(token, "finding the public key", source))?;
    let no_public = || HsmError::NoPublicKey {
        token: token.to_owned(),
        key: key.clone(),
    };
    // Several public objects may share an id (a copy, say): the first secp256k1 one is taken. A
    // wrong one cannot make a bad signature pass: every signature is checked against it.
    let mut public = None;
    for handle in publics {
        let attrs = session
            .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(|source| lost_or(token, "reading the public key", source))?;
        let (mut params, mut point) = (None, None);
        for attr in attrs {
            match attr {
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        if params.as_deref() != Some(&SECP256K1_EC_PARAMS[..]) {
            continue;
        }
        let Some(point) = point else { continue };
        public = Some(
            decode_ec_point(&point).map_err(|source| HsmError::BadPublicKey {
                token: token.to_owned(),
                key: key.clone(),
                source,
            })?,
        );
        break;
    }
    let public = public.ok_or_else(no_public)?;
    Ok(FoundKey {
        private,
        label: String::from_utf8_lossy(&label).into_owned(),
        id,
        public,
    })
}

/// Decodes `CKA_EC_POINT`: a DER OCTET STRING wrapping the SEC1 point (PKCS#11 v2.20+), or, from
/// some older modules, the bare point.
fn decode_ec_point(raw: &[u8]) -> Result<ecdsa::PublicKey, avsnode_signer::Error> {
    let point = match raw {
        [0x04, len, rest @ ..]
            if usize::from(*len) == rest.len() && matches!(rest.len(), 33 | 65) =>
        {
            rest
        }
        _ => raw,
    };
    ecdsa::PublicKey::from_sec1(point)
}

/// `CKA_EC_PARAMS` for an error message: the dotted OID if it is one, else hex.
fn describe_ec_params(params: &[u8]) -> String {
    let oid = match params {
        [0x06, len, body @ ..] if usize::from(*len) == body.len() && !body.is_empty() => body,
        _ => return format!("0x{}", hex::encode(params)),
    };
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for &byte in oid {
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    let dotted = arcs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    match dotted.as_str() {
        "1.2.840.10045.3.1.7" => format!("{dotted} (P-256)"),
        "1.3.132.0.34" => format!("{dotted} (P-384)"),
        "1.3.132.0.35" => format!("{dotted} (P-521)"),
        _ => dotted,
    }
}

/// A secp256k1 key on a PKCS#11 token, with a pool of logged-in sessions.
pub struct Pkcs11Key {
    module: Arc<Module>,
    token_label: String,
    key: KeyRef,
    pin: Pin,
    public: ecdsa::PublicKey,
    pool: Mutex<Pool>,
    returned: Condvar,
}

struct Pool {
    /// Where the token and key were found, or `None` after they were lost: the next call reopens.
    live: Option<Live>,
    /// Bumped whenever `live` changes, so sessions lent out before are not taken back.
    epoch: u64,
    idle: Vec<Session>,
    /// Sessions lent out to signing calls.
    busy: usize,
}

#[derive(Clone, Copy)]
struct Live {
    generation: u64,
    slot: Slot,
    key: ObjectHandle,
}

struct Lease {
    session: Session,
    epoch: u64,
    key: ObjectHandle,
}

impl Pkcs11Key {
    /// Opens the module, finds the token by label, logs a session in with the PIN, finds the
    /// private key and its public key (`CKA_EC_POINT`), and checks the curve is secp256k1.
    pub fn open(spec: Pkcs11Spec) -> Result<Pkcs11Key, HsmError> {
        let key = spec.key_ref()?;
        let module = Module::load(&spec.module)?;
        let token = spec.token_label.clone();
        let (live, session, public) = with_token(&module, &token, |state, slot| {
            let session = open_session(&state.ctx, slot, false, &token, &spec.pin)?;
            let found = find_key(&session, &token, &key)?;
            let live = Live {
                generation: state.generation,
                slot,
                key: found.private,
            };
            Ok((live, session, found.public))
        })?;
        Ok(Pkcs11Key {
            module,
            token_label: token,
            key,
            pin: spec.pin,
            public,
            pool: Mutex::new(Pool {
                live: Some(live),
                epoch: 0,
                idle: vec![session],
                busy: 0,
            }),
            returned: Condvar::new(),
        })
    }

    /// The key's public key, as read from the token at open.
    pub fn public_key(&self) -> &ecdsa::PublicKey {
        &self.public
    }

    /// The key's Ethereum address.
    pub fn address(&self) -> Address {
        self.public.address()
    }

    /// Signs with `CKM_ECDSA` over the 32-byte digest and turns the token's `r‖s` into a low-s
    /// `r‖s‖v` checked against this key's public key. Blocking: call from `spawn_blocking`.
    ///
    /// A session that fails with a token, slot or session error is dropped together with the rest
    /// of the pool; the next call finds the token by label again and logs in again, so a token
    /// that comes back is used without a restart. While it is gone every call returns
    /// [`HsmError::Unavailable`] quickly.
    pub fn sign(&self, digest: &SigningDigest) -> Result<ecdsa::Signature, HsmError> {
        let (error, seen) = {
            let state = self.module.read();
            match self.checkout(&state) {
                Ok(lease) => return self.sign_with(&state, lease, digest),
                Err(error @ HsmError::Unavailable { .. }) => (error, state.generation),
                Err(error) => return Err(error),
            }
        };
        // Some modules (SoftHSM) only see a token that came back after re-initialising.
        self.module.reinitialise(seen, REINIT_INTERVAL);
        let state = self.module.read();
        if state.generation == seen {
            return Err(error);
        }
        let lease = self.checkout(&state)?;
        self.sign_with(&state, lease, digest)
    }

    fn sign_with(
        &self,
        state: &ModuleState,
        lease: Lease,
        digest: &SigningDigest,
    ) -> Result<ecdsa::Signature, HsmError> {
        match lease
            .session
            .sign(&Mechanism::Ecdsa, lease.key, digest.as_bytes())
        {
            Ok(rs) => {
                self.checkin(state, lease, true);
                let rs: [u8; 64] =
                    rs.as_slice()
                        .try_into()
                        .map_err(|_| HsmError::BadSignature {
                            token: self.token_label.clone(),
                            key: self.key.clone(),
                            source: avsnode_signer::Error::Length {
                                what: "PKCS#11 ECDSA signature",
                                expected: 64,
                                got: rs.len(),
                            },
                        })?;
                ecdsa::signature_from_rs(&rs, digest, &self.public).map_err(|source| {
                    HsmError::BadSignature {
                        token: self.token_label.clone(),
                        key: self.key.clone(),
                        source,
                    }
                })
            }
            Err(source) if token_lost(&source) => {
                self.checkin(state, lease, false);
                self.invalidate();
                tracing::warn!(token = %self.token_label, error = %source, "PKCS#11 token lost; reopening on the next call");
                Err(HsmError::Unavailable {
                    token: self.token_label.clone(),
                    cause: source.into(),
                })
            }
            Err(source) => {
                // The session may be mid-operation; a fresh one is cheaper than finding out.
                self.checkin(state, lease, false);
                Err(HsmError::Signing {
                    token: self.token_label.clone(),
                    key: self.key.clone(),
                    source,
                })
            }
        }
    }

    /// Lends out a logged-in session, reopening the token first if it was lost and opening a new
    /// session if none is idle and fewer than [`MAX_SESSIONS`] are lent out.
    fn checkout(&self, state: &ModuleState) -> Result<Lease, HsmError> {
        let mut pool = lock(&self.pool);
        loop {
            if pool.live.is_some_and(|l| l.generation != state.generation) {
                // The module was re-initialised: these handles mean nothing to it now, and
                // closing one could close another key's new session with the same number.
                for session in pool.idle.drain(..) {
                    std::mem::forget(session);
                }
                pool.live = None;
                pool.epoch += 1;
            }
            let live = match pool.live {
                Some(live) => live,
                None => {
                    // Reopened under the pool lock: one caller reopens, the others wait for it.
                    let (live, session) = self.reopen(state)?;
                    pool.live = Some(live);
                    pool.epoch += 1;
                    pool.idle.push(session);
                    live
                }
            };
            if let Some(session) = pool.idle.pop() {
                pool.busy += 1;
                return Ok(Lease {
                    session,
                    epoch: pool.epoch,
                    key: live.key,
                });
            }
            if pool.busy < MAX_SESSIONS {
                match open_session(&state.ctx, live.slot, false, &self.token_label, &self.pin) {
                    Ok(session) => {
                        pool.busy += 1;
                        return Ok(Lease {
                            session,
                            epoch: pool.epoch,
                            key: live.key,
                        });
                    }
                    Err(error) => {
                        if matches!(error, HsmError::Unavailable { .. }) {
                            Self::drop_live(&mut pool);
                        }
                        return Err(error);
                    }
                }
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Takes a session back; keeps it if `healthy` and the pool has not been reopened since.
    fn checkin(&self, state: &ModuleState, lease: Lease, healthy: bool) {
        let mut pool = lock(&self.pool);
        pool.busy -= 1;
        let current = pool.live.is_some_and(|l| l.generation == state.generation)
            && lease.epoch == pool.epoch;
        if healthy && current {
            pool.idle.push(lease.session);
        } else {
            // Same module generation (we hold its read side), so closing is safe; errors just
            // mean it is closed already.
            let _ = lease.session.close();
        }
        drop(pool);
        self.returned.notify_one();
    }

    /// Forgets the token after a session reported it lost: the next call reopens.
    fn invalidate(&self) {
        let mut pool = lock(&self.pool);
        Self::drop_live(&mut pool);
        drop(pool);
        self.returned.notify_all();
    }

    fn drop_live(pool: &mut Pool) {
        pool.live = None;
        pool.epoch += 1;
        // Closing fails harmlessly on sessions the module already dropped with the token.
        for session in pool.idle.drain(..) {
            let _ = session.close();
        }
    }

    /// Finds the token and key again, logs in, and checks it is still the same key.
    fn reopen(&self, state: &ModuleState) -> Result<(Live, Session), HsmError> {
        let slot = find_token(&state.ctx, &self.token_label).map_err(|e| match e {
            FindTokenError::NotFound { .. } => HsmError::Unavailable {
                token: self.token_label.clone(),
                cause: Unavailability::Absent,
            },
            FindTokenError::Pkcs11(source) => HsmError::Unavailable {
                token: self.token_label.clone(),
                cause: source.into(),
            },
        })?;
        let session = open_session(&state.ctx, slot, false, &self.token_label, &self.pin)?;
        let found = match find_key(&session, &self.token_label, &self.key) {
            Ok(found) => found,
            // It was there at open: the token is in flux (being restored) or the key was deleted;
            // either way nothing can be signed until it is back.
            Err(HsmError::KeyNotFound { .. } | HsmError::NoPublicKey { .. }) => {
                return Err(HsmError::Unavailable {
                    token: self.token_label.clone(),
                    cause: Unavailability::KeyMissing,
                });
            }
            Err(other) => return Err(other),
        };
        if found.public != self.public {
            return Err(HsmError::KeyChanged {
                token: self.token_label.clone(),
                key: self.key.clone(),
                expected: self.public.address(),
            });
        }
        tracing::info!(token = %self.token_label, key = %self.key, "PKCS#11 token reopened");
        Ok((
            Live {
                generation: state.generation,
                slot,
                key: found.private,
            },
            session,
        ))
    }
}

impl Drop for Pkcs11Key {
    fn drop(&mut self) {
        let state = self.module.read();
        let mut pool = lock(&self.pool);
        let current = pool.live.is_some_and(|l| l.generation == state.generation);
        for session in pool.idle.drain(..) {
            if current {
                let _ = session.close();
            } else {
                std::mem::forget(session);
            }
        }
    }
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("module", &self.module.path)
            .field("token", &self.token_label)
            .field("key", &self.key)
            .field("address", &self.public.address())
            .finish_non_exhaustive()
    }
}

/// `avsnode keys hsm-generate`: makes a secp256k1 key pair on the token (`CKM_EC_KEY_PAIR_GEN`),
/// labelled `spec.key_label`, with `spec.key_id` as `CKA_ID` or else 16 random bytes. The private
/// key is a sensitive, non-extractable token object that can only sign. Returns the public key.
pub fn generate(spec: &Pkcs11Spec) -> Result<ecdsa::PublicKey, HsmError> {
    let Some(label) = spec.key_label.clone() else {
        return Err(HsmError::InvalidSpec {
            reason: "generating a key needs key_label (the new key's label)",
        });
    };
    let id = spec
        .key_id
        .clone()
        .unwrap_or_else(|| rand::random::<[u8; 16]>().to_vec());
    let module = Module::load(&spec.module)?;
    let token = spec.token_label.as_str();
    with_token(&module, token, |state, slot| {
        let session = open_session(&state.ctx, slot, true, token, &spec.pin)?;
        let taken = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|source| lost_or(token, "checking the label is free", source))?;
        if !taken.is_empty() {
            return Err(HsmError::KeyExists {
                token: token.to_owned(),
                label: label.clone(),
            });
        }
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(SECP256K1_EC_PARAMS.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let (_public, private) = session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(|source| {
                if token_lost(&source) {
                    HsmError::Unavailable {
                        token: token.to_owned(),
                        cause: source.into(),
                    }
                } else {
                    HsmError::Generate {
                        token: token.to_owned(),
                        source,
                    }
                }
            })?;
        let found = describe_key(
            &session,
            token,
            Some(&KeyRef::Label(label.clone())),
            private,
        )?;
        Ok(found.public)
    })
}

/// A secp256k1 key on a token, as `avsnode keys hsm-list` shows it.
#[derive(Clone, Debug)]
pub struct HsmKeyInfo {
    /// `CKA_LABEL` (empty if the key has none).
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// The public key.
    pub public_key: ecdsa::PublicKey,
    /// Its Ethereum address.
    pub address: Address,
}

/// `avsnode keys hsm-list`: the secp256k1 private keys on the token that have a public key
/// object. Keys on other curves or of other types are left out.
pub fn list(module: &Path, token_label: &str, pin: &Pin) -> Result<Vec<HsmKeyInfo>, HsmError> {
    let module = Module::load(module)?;
    with_token(&module, token_label, |state, slot| {
        let session = open_session(&state.ctx, slot, false, token_label, pin)?;
        let privates = session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .map_err(|source| lost_or(token_label, "listing the keys", source))?;
        let mut keys = Vec::new();
        for private in privates {
            match describe_key(&session, token_label, None, private) {
                Ok(found) => keys.push(HsmKeyInfo {
                    label: found.label,
                    id: found.id,
                    address: found.public.address(),
                    public_key: found.public,
                }),
                Err(HsmError::NotSecp256k1 { .. } | HsmError::NoPublicKey { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        keys.sort_by(|a, b| (&a.label, &a.id).cmp(&(&b.label, &b.id)));
        Ok(keys)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_can_be_shared_across_blocking_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Pkcs11Key>();
        send_sync::<HsmError>();
    }

    #[test]
    fn ec_points_decode_wrapped_and_bare() {
        let sk = ecdsa::SecretKey::from_bytes(&[0x11; 32]).expect("valid key");
        let point = sk.public_key().to_uncompressed();
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&point);
        assert_eq!(decode_ec_point(&wrapped), Ok(sk.public_key()));
        assert_eq!(decode_ec_point(&point), Ok(sk.public_key()));
        assert!(decode_ec_point(&wrapped[..66]).is_err());
    }

    #[test]
    fn ec_params_are_described_by_oid() {
        assert_eq!(
            describe_ec_params(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
            "1.2.840.10045.3.1.7 (P-256)"
        );
        assert_eq!(describe_ec_params(&SECP256K1_EC_PARAMS), "1.3.132.0.10");
        assert_eq!(describe_ec_params(&[0x13, 0x01]), "0x1301");
    }

    #[test]
    fn spec_needs_exactly_one_key_name() {
        let mut spec = Pkcs11Spec {
            module: PathBuf::from("/nonexistent.so"),
            token_label: "t".to_owned(),
            key_label: Some("k".to_owned()),
            key_id: Some(vec![1]),
            pin: Pin::new("1234"),
        };
        assert!(matches!(spec.key_ref(), Err(HsmError::InvalidSpec { .. })));
        spec.key_id = None;
        assert_eq!(spec.key_ref().ok(), Some(KeyRef::Label("k".to_owned())));
        spec.key_label = None;
        assert!(matches!(spec.key_ref(), Err(HsmError::InvalidSpec { .. })));
    }

    #[test]
    fn pin_is_redacted_and_trimmed() {
        let pin = Pin::from_file_contents("s3cret-PIN\n");
        assert_eq!(pin.0.as_str(), "s3cret-PIN");
        assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
        let spec = Pkcs11Spec {
            module: PathBuf::from("/m.so"),
            token_label: "t".to_owned(),
            key_label: None,
            key_id: Some(vec![1]),
            pin,
        };
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_module_is_named() {
        let error = Module::load(Path::new("/nonexistent/libpkcs11.so")).err();
        assert!(
            matches!(&error, Some(HsmError::ModuleLoad { module, .. }) if module == Path::new("/nonexistent/libpkcs11.so")),
            "{error:?}"
        );
    }
}
