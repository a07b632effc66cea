//! `avsnode keys`: generate, import, inspect and list operator keys (keystore files and PKCS#11).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use avsnode_keystore::{Kdf, Keystore};
use avsnode_signer::Scheme;
use avsnode_signing::{LocalKey, scheme_of};
use clap::{Subcommand, ValueEnum};

use super::{PasswordArgs, open_keystore};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Generate a new key and write it encrypted (mode 0600; never overwrites).
    Generate {
        /// ecdsa (Web3 v3 file), bn254 or bls12-381 (EIP-2335 files).
        #[arg(long, value_parser = parse_scheme)]
        scheme: Scheme,
        /// The keystore file to create.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Key derivation: scrypt (default, ~1 s and 256 MiB to unlock) or pbkdf2.
        #[arg(long, value_enum, default_value = "scrypt")]
        kdf: KdfChoice,
    },
    /// Import a key: a raw 32-byte secret (hex in a file) or another keystore file.
    Import {
        /// The scheme of the key being imported.
        #[arg(long, value_parser = parse_scheme)]
        scheme: Scheme,
        /// A file holding the secret as hex (64 digits, optional 0x).
        #[arg(
            long,
            conflicts_with = "from_keystore",
            required_unless_present = "from_keystore"
        )]
        secret_file: Option<PathBuf>,
        /// An existing keystore (any supported format) to re-encrypt.
        #[arg(long)]
        from_keystore: Option<PathBuf>,
        /// Password file of --from-keystore (prompted for otherwise).
        #[arg(long)]
        from_password_file: Option<PathBuf>,
        /// The keystore file to create.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Key derivation for the new file.
        #[arg(long, value_enum, default_value = "scrypt")]
        kdf: KdfChoice,
    },
    /// List the keystores in a folder (no password needed).
    List {
        /// The folder.
        dir: PathBuf,
    },
    /// Generate a secp256k1 key pair on a PKCS#11 token (non-extractable; it can only sign) and
    /// print its address and the `[[signer]]` lines that use it.
    HsmGenerate {
        #[command(flatten)]
        token: HsmTokenArgs,
        /// The new key's label (must be free on the token).
        #[arg(long)]
        label: String,
        /// The new key's CKA_ID in hex (default: 16 random bytes).
        #[arg(long)]
        id: Option<String>,
    },
    /// List the secp256k1 keys on a PKCS#11 token: label, id and address.
    HsmList {
        #[command(flatten)]
        token: HsmTokenArgs,
    },
    /// Show a key's public facts: scheme, address or G1/G2 keys in wire hex, BN254 operator id.
    Inspect {
        /// The keystore file.
        file: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where a PKCS#11 token is and how to log in to it.
#[derive(Debug, clap::Args)]
pub(crate) struct HsmTokenArgs {
    /// The PKCS#11 module (shared library).
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    module: PathBuf,
    /// The token's label.
    #[arg(long)]
    token_label: String,
    /// A file holding the user PIN (mode 0600; one trailing newline is ignored).
    #[arg(long)]
    pin_file: PathBuf,
    /// Accept a PIN file readable by group or other.
    #[arg(long)]
    allow_insecure_permissions: bool,
}

impl HsmTokenArgs {
    fn pin(&self) -> anyhow::Result<avsnode_signing::pkcs11::Pin> {
        avsnode_signing::check_permissions(
            "PIN file",
            &self.pin_file,
            self.allow_insecure_permissions,
        )?;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&self.pin_file)
                .with_context(|| format!("reading {}", self.pin_file.display()))?,
        );
        Ok(avsnode_signing::pkcs11::Pin::from_file_contents(&text))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum KdfChoice {
    Scrypt,
    Pbkdf2,
    /// Cheap parameters: tests and demos only, protects nothing.
    #[value(hide = true)]
    InsecureLight,
}

impl KdfChoice {
    fn kdf(self) -> Kdf {
        match self {
            KdfChoice::Scrypt => Kdf::scrypt_default(),
            KdfChoice::Pbkdf2 => Kdf::pbkdf2_default(),
            KdfChoice::InsecureLight => Kdf::light(),
        }
    }
}

#[allow(clippy::print_stdout)]
pub(crate) fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate {
            scheme,
            out,
            password,
            kdf,
        } => {
            let pw = password.read("New keystore password: ", true)?;
            write_keystore(&LocalKey::generate(scheme), &pw, &kdf.kdf(), &out)?;
        }
        KeysCommand::Import {
            scheme,
            secret_file,
            from_keystore,
            from_password_file,
            out,
            password,
            kdf,
        } => {
            let key = match (secret_file, from_keystore) {
                (Some(path), _) => {
                    avsnode_signing::check_permissions(
                        "secret file",
                        &path,
                        password.allow_insecure_permissions,
                    )?;
                    let text = zeroize::Zeroizing::new(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    );
                    let secret = zeroize::Zeroizing::new(
                        hex::decode(text.trim().trim_start_matches("0x"))
                            .with_context(|| format!("{}: not hex", path.display()))?,
                    );
                    LocalKey::from_secret(scheme, &secret).with_context(|| {
                        format!("{}: not a valid {scheme} secret", path.display())
                    })?
                }
                (None, Some(path)) => {
                    let key = open_keystore(
                        &path,
                        from_password_file.as_deref(),
                        "Password of the keystore to import: ",
                        password.allow_insecure_permissions,
                    )?;
                    if key.scheme() != scheme {
                        bail!(
                            "{} holds a {} key, not {scheme}",
                            path.display(),
                            key.scheme()
                        );
                    }
                    key
                }
                (None, None) => bail!("give --secret-file or --from-keystore"),
            };
            let pw = password.read("New keystore password: ", true)?;
            write_keystore(&key, &pw, &kdf.kdf(), &out)?;
        }
        KeysCommand::HsmGenerate { token, label, id } => {
            let key_id = id
                .map(|id| {
                    hex::decode(id.trim_start_matches("0x"))
                        .ok()
                        .filter(|id| !id.is_empty())
                        .with_context(|| format!("--id {id:?} is not a non-empty hex string"))
                })
                .transpose()?;
            let spec = avsnode_signing::pkcs11::Pkcs11Spec {
                module: token.module.clone(),
                token_label: token.token_label.clone(),
                key_label: Some(label.clone()),
                key_id,
                pin: token.pin()?,
            };
            let public = avsnode_signing::pkcs11::generate(&spec)?;
            println!(
                "generated a secp256k1 key on token {:?}: label {label:?}, address {}\n\n\
                 [[signer]]\nname = \"{label}\"\nscheme = \"ecdsa\"\n\
                 pkcs11 = {{ module = {:?}, token_label = {:?}, key_label = {label:?}, pin_file = {:?} }}",
                token.token_label,
                public.address(),
                token.module.display().to_string(),
                token.token_label,
                token.pin_file.display().to_string(),
            );
        }
        KeysCommand::HsmList { token } => {
            let keys =
                avsnode_signing::pkcs11::list(&token.module, &token.token_label, &token.pin()?)?;
            if keys.is_empty() {
                println!("no secp256k1 keys on token {:?}", token.token_label);
            }
            for key in keys {
                println!(
                    "label {:?}  id {}  address {}",
                    key.label,
                    hex::encode(&key.id),
                    key.address
                );
            }
        }
        KeysCommand::List { dir } => {
            for line in list(&dir)? {
                println!("{line}");
            }
        }
        KeysCommand::Inspect {
            file,
            password,
            json,
        } => {
            let key = open_keystore(
                &file,
                password.password_file.as_deref(),
                "Keystore password: ",
                password.allow_insecure_permissions,
            )?;
            let facts = describe(&key);
            if json {
                println!("{}", serde_json::to_string_pretty(&facts)?);
            } else {
                for (k, v) in facts {
                    println!("{k}: {}", v.as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}

/// The public facts about `key` as a JSON object (keys in order).
fn describe(key: &LocalKey) -> serde_json::Map<String, serde_json::Value> {
    key.public_facts()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect()
}

/// Encrypts `key` into a new owner-only file at `out` and says what it wrote.
#[allow(clippy::print_stdout)]
fn write_keystore(
    key: &LocalKey,
    password: &avsnode_keystore::Password,
    kdf: &Kdf,
    out: &Path,
) -> anyhow::Result<()> {
    key.encrypt(password, kdf)?
        .write_new(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    println!(
        "wrote {}\n{}",
        out.display(),
        serde_json::to_string_pretty(&describe(key))?
    );
    Ok(())
}

/// One line per keystore in `dir`, from the files alone (no password needed).
fn list(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    entries.sort();
    Ok(entries
        .iter()
        .map(|path| match Keystore::read(path) {
            Ok(Keystore::Web3(w)) => format!(
                "{}\tecdsa\t{}",
                path.display(),
                w.address()
                    .map_or("(no address recorded)".into(), |a| format!(
                        "0x{}",
                        a.trim_start_matches("0x")
                    ))
            ),
            Ok(Keystore::Eip2335(e)) => {
                format!(
                    "{}\t{}\t0x{}",
                    path.display(),
                    scheme_of(e.curve()),
                    e.pubkey_hex()
                )
            }
            Err(e) => format!("{}\tnot a keystore: {e}", path.display()),
        })
        .collect())
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse().map_err(|e: avsnode_signer::Error| e.to_string())
}
