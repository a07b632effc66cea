//! `avsnode keys …`: generate, import, list and inspect key files (DESIGN §6).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use avsnode_keystore::{Curve, Eip2335Keystore, Kdf, Keystore, Password, Web3Keystore};
use avsnode_signer::Scheme;
use serde_json::json;

use avsnode_signing::{LocalKey, check_permissions};

/// Where a password comes from: a file (one trailing newline ignored) or an interactive prompt.
/// Never a command-line argument (it would show in `ps` and shell history).
pub fn read_password(
    file: Option<&Path>,
    prompt: &str,
    confirm: bool,
    allow_insecure: bool,
) -> anyhow::Result<Password> {
    if let Some(path) = file {
        check_permissions("password file", path, allow_insecure)?;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading password file {}", path.display()))?,
        );
        return Ok(Password::from_file_contents(&text));
    }
    let first = zeroize::Zeroizing::new(
        rpassword::prompt_password(prompt)
            .context("reading the password from the terminal (or pass --password-file)")?,
    );
    if confirm {
        let second = zeroize::Zeroizing::new(rpassword::prompt_password("Repeat the password: ")?);
        if *first != *second {
            bail!("the passwords do not match");
        }
    }
    Ok(Password::new(first.as_str()))
}

/// Encrypts `key` into its scheme's keystore format.
pub fn encrypt(key: &LocalKey, password: &Password, kdf: &Kdf) -> anyhow::Result<Keystore> {
    let secret = match key {
        LocalKey::Ecdsa(k) => k.to_bytes(),
        LocalKey::Bn254(k) => k.to_bytes(),
        LocalKey::Bls12381(k) => k.to_bytes(),
    };
    Ok(match key {
        LocalKey::Ecdsa(k) => {
            let address = hex::encode(k.public_key().address().0);
            Keystore::Web3(Web3Keystore::encrypt(
                secret.as_ref(),
                password,
                Some(&address),
                kdf,
            )?)
        }
        LocalKey::Bn254(_) => Keystore::Eip2335(Eip2335Keystore::encrypt(
            secret.as_ref(),
            password,
            Curve::Bn254,
            &hex::encode(key.public_bytes()),
            "",
            kdf,
        )?),
        LocalKey::Bls12381(_) => Keystore::Eip2335(Eip2335Keystore::encrypt(
            secret.as_ref(),
            password,
            Curve::Bls12381,
            &hex::encode(key.public_bytes()),
            "",
            kdf,
        )?),
    })
}

/// Writes a new file readable by its owner only; refuses to overwrite.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Decrypts a keystore file into a key (for import and inspect).
pub fn open(path: &Path, password: &Password) -> anyhow::Result<LocalKey> {
    let keystore = Keystore::read(path)?;
    let secret = keystore
        .decrypt(password)
        .with_context(|| format!("decrypting {}", path.display()))?;
    let scheme = scheme_of(keystore.curve());
    LocalKey::from_keystore_secret(scheme, secret.as_bytes())
        .with_context(|| format!("{}: not a valid {scheme} key", path.display()))
}

fn scheme_of(curve: Curve) -> Scheme {
    match curve {
        Curve::Secp256k1 => Scheme::Ecdsa,
        Curve::Bn254 => Scheme::Bn254,
        Curve::Bls12381 => Scheme::Bls12381,
    }
}

/// The public facts about a key, as `keys inspect` shows them.
pub fn describe(key: &LocalKey) -> serde_json::Value {
    match key {
        LocalKey::Ecdsa(k) => json!({
            "scheme": "ecdsa",
            "address": k.public_key().address().to_string(),
            "public_key": format!("0x{}", hex::encode(k.public_key().to_uncompressed())),
        }),
        LocalKey::Bn254(k) => json!({
            "scheme": "bn254",
            "g1_public_key": format!("0x{}", hex::encode(k.public_key_g1().to_wire())),
            "g2_public_key": format!("0x{}", hex::encode(k.public_key_g2().to_wire())),
            "operator_id": format!("0x{}", hex::encode(k.public_key_g1().operator_id())),
        }),
        LocalKey::Bls12381(k) => json!({
            "scheme": "bls12-381",
            "public_key": format!("0x{}", hex::encode(k.public_key().to_bytes())),
        }),
    }
}

/// One line per keystore in `dir`, from the files alone (no password needed).
pub fn list(dir: &Path) -> anyhow::Result<Vec<String>> {
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
